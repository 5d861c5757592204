"""Fixtures of the call-guard's end-to-end tests: the fake LLM API (``fake_llm_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_llm_server import FakeLlmServer


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
