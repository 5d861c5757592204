"""What the end-to-end tests of the call-guard's OpenAI endpoints share: the real ``openai`` SDK
against the fake API (``fake_llm_server.py``), guarded or not, guards of a test's own, ``ModelCatalog``
prices, and the checks each endpoint's tests make alike (a settled call, SDK retries, a call refused
for want of a price, ``guard_openai`` on an async client).

The per-test fixtures (``server``, ``ledger``, ``sink``, ``guard``, ``client``) are in ``conftest.py``;
these are plain functions a test calls where it needs a client or a guard of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, budget_policy, compile_policies

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.enforcers.callguard import CallGuard, attribution
from costwarden.enforcers.openai_guard import guard_openai, openai_async_http_client, openai_http_client
from costwarden.errors import PolicyViolation


def connect(server: FakeLlmServer, guard: CallGuard, *, provider: str = "openai", max_retries: int = 2,
            **options: Any) -> openai.OpenAI:
    """An ``OpenAI`` client whose transport is ``guard``'s, retrying as often as the guard expects."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=max_retries,
                         http_client=openai_http_client(guard, provider=provider, max_retries=max_retries), **options)


def connect_async(server: FakeLlmServer, guard: CallGuard, *, max_retries: int = 2,
                  **options: Any) -> openai.AsyncOpenAI:
    """The async twin of :func:`connect`."""
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=max_retries,
                              http_client=openai_async_http_client(guard, max_retries=max_retries), **options)


def unguarded(server: FakeLlmServer, **options: Any) -> openai.OpenAI:
    """A plain ``OpenAI`` client of the fake API, for ``guard_openai`` to wrap or to read unguarded."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", **options)


def budget_guard(limit_usd: float, *policies: str, ledger: Any = None, sink: ListSink | None = None) -> CallGuard:
    """A guard of a test's own, settling inline: a per-user daily budget of ``limit_usd``
    (``user-budget``) and ``policies`` beside it; without a ledger (no budget can refuse) or a sink
    unless given them."""
    return CallGuard(compile_policies("\n---\n".join((budget_policy(limit_usd), *policies))), ledger=ledger,
                     sinks=[] if sink is None else [sink])


@contextmanager
def own_client(server: FakeLlmServer, guard: CallGuard, **options: Any) -> Iterator[openai.OpenAI]:
    """:func:`connect` through a guard of the test's own, which is closed (its settlements run) with
    the client, before the test reads what the call left."""
    try:
        with connect(server, guard, **options) as client:
            yield client
    finally:
        guard.close()


def model_catalog(name: str, *prices: str) -> str:
    """A ``ModelCatalog`` policy document with one ``spec.prices`` entry per flow mapping in ``prices``."""
    lines = "".join(f"    - {price}\n" for price in prices)
    return f"""
apiVersion: costwarden.dev/v1
kind: ModelCatalog
metadata: {{name: {name}}}
spec:
  prices:
{lines}"""


# --- the checks each endpoint's tests make alike -------------------------------------------------------


def reserved_once_and_settled(ledger: CountingLedger, sink: ListSink) -> tuple[Any, Any]:
    """The one hold of a test's one call and its cost event, once checked that the call was reserved
    first, settled once and never released, and charged from the response's usage as allowed."""
    (hold,) = ledger.calls[0][2]
    assert ledger.calls[0][0] == "reserve"
    assert ledger.counts() == (1, 1, 0)
    (event,) = sink.events
    assert (event.outcome, event.verdict, event.usage_source, event.charged) == ("ok", "allow", "response", True)
    return hold, event


def retried_then_exhausted(server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, path: str,
                           call: Callable[[str], object], charged_usd: float, *, user: str) -> None:
    """``call`` (given a text to send) retried past a 500 and a 429 is one call reserved once and
    charged ``charged_usd``; retried past three 500s it is released and charged nothing."""
    server.fail_next(500, 429)
    with attribution(user=user):
        call("retried call")
    assert len(server.posts(path)) == 3
    server.fail_next(500, 500, 500)
    with attribution(user=user), pytest.raises(openai.InternalServerError):
        call("failed call")
    assert ledger.counts() == (2, 1, 1)
    assert [(e.outcome, e.cost_usd) for e in sink.events] == [("ok", pytest.approx(charged_usd)), ("error", 0.0)]


def refused_unpriced(server: FakeLlmServer, sink: ListSink, call: Callable[[openai.OpenAI], object], *,
                     user: str, provider: str = "openai") -> str:
    """``call`` through a guard with only a budget (and a memory ledger), on a model it has no price
    for: refused before sending, the budget's result an error (``onError: deny``), never priced at
    $0. Returns that result's message."""
    with own_client(server, budget_guard(5.0, ledger=MemoryLedger(), sink=sink), provider=provider) as client, \
            attribution(user=user), pytest.raises(PolicyViolation) as caught:
        call(client)
    return budget_error(server, caught.value)


def budget_error(server: FakeLlmServer, refusal: PolicyViolation) -> str:
    """The message of ``refusal``'s one blocking result, once checked that nothing was sent and that
    the result is ``user-budget``'s error."""
    assert server.posts() == []
    (result,) = refusal.decision.blocking
    assert (result.policy, result.result) == ("user-budget", "error")
    return str(result.message)


def async_retried_then_refused(server: FakeLlmServer, guard: CallGuard, call: Callable[[Any], Awaitable[Any]],
                               refused: Callable[[Any], Awaitable[object]], *, user: str) -> Any:
    """:func:`connect_async`'s ``call``, answered after one 500 and a retry, then ``refused``, which
    the guard refuses (``PolicyViolation``) before sending; returns what ``call`` returned."""

    async def main() -> Any:
        async with connect_async(server, guard) as client:
            with attribution(user=user):
                server.fail_next(500)
                first = await call(client)
                with pytest.raises(PolicyViolation):
                    await refused(client)
                return first

    return asyncio.run(main())


def wrapped_async_call(server: FakeLlmServer, guard: CallGuard, call: Callable[[Any], Awaitable[object]], *,
                       user: str) -> None:
    """``call`` on ``guard_openai`` of a plain ``AsyncOpenAI`` client, attributed to ``user``; both
    clients closed after."""

    async def main() -> None:
        base = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test")
        client = guard_openai(base, guard)
        try:
            with attribution(user=user):
                await call(client)
        finally:
            await client.close()
            await base.close()

    asyncio.run(main())
