"""Fixtures of the call-guard's end-to-end tests: the fake LLM API (``fake_llm_server.py``), a guard
and a real ``openai`` client through it, and the ledger stores a test may run on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, budget_policy, compile_policies
from ledger_backends import REDIS_URL

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


@pytest.fixture
def guard_policies() -> str:
    """The policies of :func:`guard`: one $5 per-user daily budget (``user-budget``); a module that
    needs more beside it overrides this fixture."""
    return budget_policy(5.0)


@pytest.fixture(params=["inline", "background"])
def guard(
    ledger: CountingLedger, sink: ListSink, guard_policies: str, request: pytest.FixtureRequest
) -> Iterator[CallGuard]:
    """A guard of :func:`guard_policies`, settling inline and on its settler thread; a module that
    needs another kind of guard defines its own ``guard``."""
    guard = CallGuard(compile_policies(guard_policies), ledger=ledger, sinks=[sink],
                      settle_in_background=request.param == "background")
    yield guard
    guard.close()


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    """The real ``openai`` SDK against the fake API through the module's ``guard``
    (``openai_guard_support.connect``); a module testing another SDK defines its own ``client``."""
    from openai_guard_support import connect

    with connect(server, guard) as c:
        yield c


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite ledger's URL, in the test's own directory."""
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger's URL on each durable store: a SQLite file, this run's Redis namespace and
    PostgreSQL database (a prefix of the test's own in each)."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    if request.param == "redis":
        return f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=2"
    return f"{request.getfixturevalue('postgres_db')}?table_prefix=e{unique}_"
