"""A server that rejects the request the call-guard rewrote: the real ``openai`` SDK against the fake
API answering 400 (``server.fail_next``), as an OpenAI-compatible server that does not take
``stream_options`` (older vLLM, TGI) answers the guard's added ``stream_options.include_usage``;
and the real ``anthropic`` SDK, whose request the guard clamped.

The application gets the server's error unchanged; the guard releases the hold, logs a warning
once per transport and rewrite naming what it changed, and notes it in the cost event's error."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, compile_policies  # noqa: E402
from llm_call_support import llm_call_policy  # noqa: E402
from openai_guard_support import budget_guard, connect_async, own_client  # noqa: E402

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import INCLUDE_USAGE  # noqa: E402

HI = [{"role": "user", "content": "Hi"}]
CAP_OUTPUT = llm_call_policy("cap-output", {"cap": "maxOutputTokens: {limit: 32}"})


@contextmanager
def watched_client(server: FakeLlmServer, sink: ListSink, caplog: pytest.LogCaptureFixture,
                   user: str) -> Iterator[openai.OpenAI]:
    """A client through a guard of a $5 budget on a memory ledger, calling as ``user``, the guard's
    warnings captured."""
    with own_client(server, budget_guard(5.0, ledger=MemoryLedger(), sink=sink)) as client, \
            attribution(user=user), caplog.at_level(logging.WARNING, logger="costwarden.callguard"):
        yield client


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "rejected a request the call-guard changed" in r.getMessage()]


def test_a_400_to_the_added_include_usage_is_warned_once_and_noted_in_the_event(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    sink, ledger = ListSink(), CountingLedger(MemoryLedger())
    guard = budget_guard(5.0, ledger=ledger, sink=sink)
    with own_client(server, guard) as client, attribution(user="u-rej"), \
            caplog.at_level(logging.WARNING, logger="costwarden.callguard"):
        for _ in range(2):
            server.fail_next(400)
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True)
            # what the application receives is the server's answer, unchanged
            assert caught.value.status_code == 400 and "try again" in str(caught.value)
    assert [r.body["stream_options"] for r in server.posts("/v1/chat/completions")] == [{"include_usage": True}] * 2
    (warning,) = rejections(caplog)  # once per transport and rewrite, not once per call
    assert "stream_options.include_usage" in warning and "400" in warning
    assert [e.outcome for e in sink.events] == ["error", "error"]
    for event in sink.events:
        assert event.status_code == 400 and event.rewrites == (INCLUDE_USAGE,)
        assert event.error is not None and event.error.startswith("HTTP 400")
        assert "stream_options.include_usage" in event.error and "rejected" in event.error
        assert event.cost_usd == 0.0 and not event.charged
    assert (ledger.count("reserve"), ledger.count("release"), ledger.count("settle")) == (2, 2, 0)
    assert [(r.spent_usd, r.held_usd) for r in ledger.status("budget:", now=guard.clock())] == [(0.0, 0.0)]


def test_a_400_to_a_request_sent_as_asked_says_nothing_more(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    with watched_client(server, sink, caplog, "u-rej2") as client:
        server.fail_next(400)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True,
                                           stream_options={"include_usage": True})
    assert rejections(caplog) == []
    (event,) = sink.events
    assert (event.outcome, event.error, event.rewrites) == ("error", "HTTP 400", ())


def test_a_429_or_a_5xx_to_a_rewritten_request_is_no_rejection(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    with watched_client(server, sink, caplog, "u-rej3") as client:
        server.fail_next(429, 503, 500)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True)
    assert rejections(caplog) == []
    (event,) = sink.events
    assert (event.outcome, event.error) == ("error", "HTTP 500")


def test_an_async_client_names_the_policy_fix_the_server_rejected(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    sink = ListSink()
    guard = CallGuard(compile_policies(CAP_OUTPUT), ledger=MemoryLedger(), sinks=[sink])

    async def run() -> None:
        async with connect_async(server, guard, max_retries=0) as client:
            server.fail_next(422)
            with pytest.raises(openai.UnprocessableEntityError):
                await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=500, messages=HI)

    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"):
        asyncio.run(run())
    guard.close()
    assert server.posts("/v1/chat/completions")[-1].body["max_tokens"] == 32
    (warning,) = rejections(caplog)
    assert "clamp max_tokens to 32" in warning and "422" in warning
    (event,) = sink.events
    assert event.error is not None and event.error.startswith("HTTP 422") and "clamp max_tokens to 32" in event.error


def test_the_anthropic_edge_names_the_fix_the_server_rejected(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The same on the Anthropic middleware: a server (a proxy, say) that answers 400 to a request
    whose ``max_tokens`` the guard clamped gets it back unchanged, and the guard says what it did."""
    anthropic = pytest.importorskip("anthropic")
    sink, ledger = ListSink(), CountingLedger(MemoryLedger())
    guard = budget_guard(5.0, CAP_OUTPUT, ledger=ledger, sink=sink)
    with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0, middleware=[guard]) as client, \
            attribution(user="u-rej-a"), caplog.at_level(logging.WARNING, logger="costwarden.callguard"):
        server.fail_next(400)
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    guard.close()
    (event,) = sink.events
    assert event.outcome == "error" and not event.charged
    assert event.error is not None and "rejected a request the call-guard changed" in event.error
    assert "clamp max_tokens to 32" in event.error
    assert any("clamp max_tokens to 32" in m for m in rejections(caplog))
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1
