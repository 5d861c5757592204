"""Fixtures of the call-guard's end-to-end tests: the fake LLM API (``fake_llm_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, budget_policy, compile_policies

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.enforcers.callguard import CallGuard


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeLlmServer]:
    """The fake Messages / Chat Completions / Responses API on loopback, one per test module."""
    with FakeLlmServer() as srv:
        yield srv


@pytest.fixture
def server(llm_server: FakeLlmServer) -> FakeLlmServer:
    """The module's fake API as each test starts: nothing recorded, 42 input tokens billed a call."""
    llm_server.reset()
    llm_server.usage = {"input_tokens": 42}
    return llm_server


@pytest.fixture
def sink() -> ListSink:
    """A sink that keeps the cost events a test's guard emits."""
    return ListSink()


@pytest.fixture
def ledger() -> CountingLedger:
    """An in-memory ledger that counts the operations made on it."""
    return CountingLedger(MemoryLedger())


@pytest.fixture(params=["inline", "background"])
def guard(ledger: CountingLedger, sink: ListSink, request: pytest.FixtureRequest) -> Iterator[CallGuard]:
    """A guard with one $5 per-user daily budget, settling inline and on its settler thread; a
    module that needs other policies defines its own ``guard``."""
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink],
                      settle_in_background=request.param == "background")
    yield guard
    guard.close()
