"""Streams under the call-guard, read through the SDKs' own stream helpers (``responses.stream()``,
``messages.stream()``) against the fake API: read to the end, abandoned by the application, dropped
by the server, and a reasoning call's stream cut before its usage (its hidden reasoning was billed)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

import httpx2  # noqa: E402
from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    spent_today,
)
from genai_prices import Usage, calc_price  # noqa: E402

from costwarden.adapters.openai import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_async_http_client, openai_http_client  # noqa: E402
from costwarden.enforcers.openai_stream import CHARS_PER_TOKEN  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

PRICER = GenaiPricer()
HI = [{"role": "user", "content": "Hello there"}]
SLOW = {"x-fake-event-delay-ms": "30"}  # one event per read: the guard has seen exactly what the app read


def genai(provider: str, model: str, **usage: int) -> float:
    """The price genai-prices itself gives (its ``input_tokens`` include cache reads)."""
    return float(calc_price(Usage(**usage), model_ref=model, provider_id=provider).total_price)


def priced(provider: str, model: str, event: Any) -> float:
    """What the event's own usage costs."""
    usage = TokenUsage(input_tokens=event.input_tokens, output_tokens=event.output_tokens,
                       cache_read_tokens=event.cache_read_tokens)
    return PRICER.cost(provider, model, usage)


def shown_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def input_estimate(server: FakeLlmServer) -> int:
    """The guard's estimate of the last OpenAI request's input, as the server received it."""
    (sent,) = [r for r in server.posts() if r.path.startswith("/v1/")][-1:]
    return subject_from_request(sent.body).request.input_tokens


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                       http_client=openai_http_client(guard, max_retries=0)) as c:
        yield c


def async_openai(server: FakeLlmServer, guard: CallGuard) -> Any:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                              http_client=openai_async_http_client(guard, max_retries=0))


def settled_once(ledger: CountingLedger, cost: float) -> None:
    """One hold, settled at ``cost`` (never released, never left to lapse at its TTL)."""
    assert [op for op, _, _ in ledger.calls] == ["reserve", "settle"]
    assert ledger.calls[1][2] == pytest.approx(cost)


# --- the fake's dropped connection -----------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_a_stream_the_server_drops_uncompressed_raises_and_is_charged_as_partial(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, client: Any, api: str
) -> None:
    """``x-fake-truncate`` ends the connection inside the chunked body, with no Content-Encoding:
    the SDK raises, as it does when a real server dies mid-stream, and the guard charges a partial call."""
    cut = {"x-fake-truncate": "4"}
    with attribution(user="u-drop"):
        if api == "messages":
            with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as ac, \
                    pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
                list(ac.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True,
                                        extra_headers=cut))
        elif api == "chat":
            with pytest.raises(openai.APIConnectionError):
                list(client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True,
                                                    extra_headers=cut))
        else:
            with pytest.raises(openai.APIConnectionError):
                list(client.responses.create(model="gpt-4.1-mini", input="Hello there", max_output_tokens=64,
                                             stream=True, extra_headers=cut))
    (event,) = sink.events
    assert event.outcome == "partial" and event.cost_usd > 0


# --- responses.stream(): read to the end -----------------------------------------------------------


REAL_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
              "response.content_part.added", *["response.output_text.delta"] * 10, "response.output_text.done",
              "response.content_part.done", "response.output_item.done", "response.completed"]


def test_responses_stream_helper_settles_the_genai_prices_cost(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 300, "cached_tokens": 1_024}
    with attribution(user="u-rs"), client.responses.stream(model="gpt-4.1-mini", input="Hello there",
                                                           max_output_tokens=64) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == REAL_ORDER
    assert final.output_text == " ".join(["word"] * 10)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (1_324, 10)
    expected = genai("openai", "gpt-4.1-mini", input_tokens=1_324, cache_read_tokens=1_024, output_tokens=10)
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.api, event.user) == ("ok", "stream", "responses", "u-rs")
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (300, 1_024, 10)
    assert event.cost_usd == pytest.approx(expected, rel=1e-9) and event.charged
    settled_once(ledger, expected)
    assert spent_today(ledger, "u-rs") == pytest.approx(expected, abs=2e-6)


def test_async_responses_stream_helper_settles_the_genai_prices_cost(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 500}

    async def main() -> tuple[list[str], Any]:
        async with async_openai(server, guard) as client:
            with attribution(user="u-ars"):
                async with client.responses.stream(model="gpt-4.1-mini", input="Hello there",
                                                   max_output_tokens=64) as stream:
                    kinds = [event.type async for event in stream]
                    return kinds, await stream.get_final_response()

    kinds, final = asyncio.run(main())
    assert kinds == REAL_ORDER and final.output_text.startswith("word")
    expected = genai("openai", "gpt-4.1-mini", input_tokens=500, output_tokens=10)
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.output_tokens) == ("ok", "stream", 10)
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    settled_once(ledger, expected)
    assert spent_today(ledger, "u-ars") == pytest.approx(expected, abs=2e-6)


# --- abandoned by the application: the input and the output it showed, settled at once -------------


def read_some_text(events: Any, deltas: int, kind: str) -> str:
    """The text of the first ``deltas`` text deltas; the caller breaks out after them."""
    shown = ""
    for event in events:
        if event.type == kind:
            shown += event.delta if kind == "response.output_text.delta" else event.delta.text
            deltas -= 1
            if not deltas:
                break
    return shown


def assert_charged_what_it_showed(event: Any, ledger: CountingLedger, user: str, provider: str, model: str,
                                  input_tokens: int, shown: str) -> None:
    assert event.outcome == "partial" and event.error and "closed by the caller" in event.error
    assert (event.input_tokens, event.output_tokens) == (input_tokens, shown_tokens(shown))
    assert event.cost_usd == pytest.approx(priced(provider, model, event), rel=1e-9)
    assert 0 < event.cost_usd < (event.estimated_cost_usd or 0)
    settled_once(ledger, event.cost_usd)  # at once, at its cost: not its worst case held until the TTL
    assert spent_today(ledger, user) == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_responses_stream_abandoned_early_is_charged_what_it_showed_and_its_hold_settled(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    with attribution(user="u-rab"):
        with client.responses.stream(model="gpt-4.1-mini", input="Hello there", max_output_tokens=2_000,
                                     extra_headers={**SLOW, "x-fake-usage": json.dumps({"output_tokens": 40})}) as s:
            shown = read_some_text(s, 3, "response.output_text.delta")
        (event,) = sink.events
    assert shown == "word word word"
    assert_charged_what_it_showed(event, ledger, "u-rab", "openai", "gpt-4.1-mini", input_estimate(server), shown)
    assert event.usage_source == "estimate"


def test_an_async_responses_stream_abandoned_early_is_charged_what_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    async def main() -> str:
        async with async_openai(server, guard) as client:
            with attribution(user="u-arab"):
                async with client.responses.stream(model="gpt-4.1-mini", input="Hello there",
                                                   max_output_tokens=2_000, extra_headers=SLOW) as stream:
                    shown = ""
                    async for event in stream:
                        if event.type == "response.output_text.delta":
                            shown += event.delta
                            if len(shown) > 8:
                                break
                    return shown

    shown = asyncio.run(main())
    (event,) = sink.events
    assert_charged_what_it_showed(event, ledger, "u-arab", "openai", "gpt-4.1-mini", input_estimate(server), shown)


def test_a_messages_stream_abandoned_early_is_charged_what_it_showed_and_its_hold_settled(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 300, "output_tokens": 40}
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="u-mab"), client.messages.stream(model="claude-haiku-4-5", max_tokens=2_000,
                                                              messages=HI, extra_headers=SLOW) as stream:
        shown = read_some_text(stream, 5, "content_block_delta")
    (event,) = sink.events
    assert shown == "word word word word word"
    assert_charged_what_it_showed(event, ledger, "u-mab", "anthropic", "claude-haiku-4-5", 300, shown)
    assert event.usage_source == "stream"  # message_start gave the real input


def test_an_async_messages_stream_abandoned_early_is_charged_what_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 300, "output_tokens": 40}

    async def main() -> str:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            with attribution(user="u-amab"):
                async with client.messages.stream(model="claude-haiku-4-5", max_tokens=2_000, messages=HI,
                                                  extra_headers=SLOW) as stream:
                    shown = ""
                    async for event in stream:
                        if event.type == "content_block_delta":
                            shown += event.delta.text
                            if len(shown) > 12:
                                break
                    return shown

    shown = asyncio.run(main())
    (event,) = sink.events
    assert_charged_what_it_showed(event, ledger, "u-amab", "anthropic", "claude-haiku-4-5", 300, shown)


# --- a reasoning call cut before its usage: its hidden reasoning was billed --------------------------


@pytest.mark.parametrize(("model", "effort", "hidden"), [
    ("o3", "high", True),
    ("gpt-5", None, True),  # gpt-5 reasons (medium) unless told otherwise
    ("gpt-5.1", "low", True),
    ("gpt-5.1", None, False),  # gpt-5.1 defaults to effort none: no reasoning tokens
    ("gpt-5.1", "none", False),
    ("gpt-4.1-mini", None, False),
])
def test_a_chat_stream_cut_before_its_usage_is_charged_its_hidden_reasoning_worst_case(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger, model: str, effort: str | None,
    hidden: bool,
) -> None:
    """A reasoning model bills its reasoning tokens as output but streams none of them, and a cut
    stream never gets the usage chunk that counts them: it is charged the output its max tokens
    allowed (its reservation's worst case), not the few words it showed, which would lose that spend."""
    server.usage = {"input_tokens": 42, "output_tokens": 1_200, "reasoning_tokens": 1_000}
    extra = {"reasoning_effort": effort} if effort else {}
    with attribution(user="u-reason"):
        stream = client.chat.completions.create(model=model, max_completion_tokens=3_000, messages=HI, stream=True,
                                                extra_headers=SLOW, **extra)
        shown = "".join(chunk.choices[0].delta.content or "" for _, chunk in zip(range(3), stream, strict=False))
        stream.close()
    (event,) = sink.events
    assert shown == "word word"
    assert (event.outcome, event.usage_source, event.input_tokens) == ("partial", "estimate", input_estimate(server))
    assert event.output_tokens == (3_000 if hidden else shown_tokens(shown))
    assert event.cost_usd == pytest.approx(priced("openai", model, event), rel=1e-9)
    if hidden:
        assert event.cost_usd == pytest.approx(event.estimated_cost_usd, rel=1e-9)  # the hold, settled whole
        assert "reasons with output tokens no stream shows" in (event.error or "")
    else:
        assert event.cost_usd < (event.estimated_cost_usd or 0) and "reasons" not in (event.error or "")
    settled_once(ledger, event.cost_usd)
    assert spent_today(ledger, "u-reason") == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_responses_stream_of_a_reasoning_model_dropped_by_the_server_is_charged_its_worst_case(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    """gpt-5 through ``responses.stream()``: the reasoning item, then the first words, then the server dies."""
    usage = json.dumps({"output_tokens": 1_200, "reasoning_tokens": 1_000})
    kinds: list[str] = []  # the events the application read before the connection dropped
    with attribution(user="u-rdrop"), pytest.raises(openai.APIConnectionError), \
            client.responses.stream(model="gpt-5", input="Prove it", max_output_tokens=4_000,
                                    extra_headers={"x-fake-usage": usage, "x-fake-truncate": "8"}) as stream:
        kinds.extend(event.type for event in stream)
    assert kinds[2:4] == ["response.output_item.added", "response.output_item.done"]  # the reasoning item
    (event,) = sink.events
    assert (event.outcome, event.output_tokens) == ("partial", 4_000)
    assert event.cost_usd == pytest.approx(event.estimated_cost_usd, rel=1e-9)
    assert event.cost_usd == pytest.approx(priced("openai", "gpt-5", event), rel=1e-9)
    settled_once(ledger, event.cost_usd)


def test_a_responses_stream_that_shows_a_reasoning_item_is_charged_its_worst_case_whatever_its_model(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    """An OpenAI-compatible API's reasoning model (xAI's grok-4) has a name the guard does not know
    for a reasoning one; the ``reasoning`` item its stream adds says that it reasoned."""
    usage = json.dumps({"output_tokens": 1_200, "reasoning_tokens": 1_000})
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                       http_client=openai_http_client(guard, provider="x-ai", max_retries=0)) as client, \
            attribution(user="u-xai"):
        with client.responses.stream(model="grok-4", input="Prove it", max_output_tokens=4_000,
                                     extra_headers={**SLOW, "x-fake-usage": usage}) as stream:
            shown = read_some_text(stream, 2, "response.output_text.delta")
        with client.responses.stream(model="grok-4", input="Prove it", max_output_tokens=4_000,
                                     extra_headers=SLOW) as stream:  # no reasoning item: what it showed
            plain = read_some_text(stream, 2, "response.output_text.delta")
    reasoned, quick = sink.events
    assert shown == plain == "word word"
    assert (reasoned.provider, reasoned.output_tokens) == ("x-ai", 4_000)
    assert reasoned.cost_usd == pytest.approx(priced("x-ai", "grok-4", reasoned), rel=1e-9)
    assert quick.output_tokens == shown_tokens(plain) and quick.cost_usd < reasoned.cost_usd
    assert spent_today(ledger, "u-xai") == pytest.approx(reasoned.cost_usd + quick.cost_usd, abs=2e-6)


@pytest.mark.parametrize(("model", "hidden"), [
    ("gpt-5.1-codex", True),  # codex and pro variants reason by default, whatever their version
    ("gpt-5.2-pro", True),
    ("gpt-5.1", False),
])
def test_a_responses_stream_cut_before_any_output_item_is_charged_by_its_models_default_effort(
    client: Any, server: FakeLlmServer, sink: ListSink, model: str, hidden: bool
) -> None:
    """Cut after ``response.in_progress``: nothing shown yet, so the model's default effort decides."""
    with attribution(user="u-early"), pytest.raises(openai.APIConnectionError), \
            client.responses.stream(model=model, input="Prove it", max_output_tokens=4_000,
                                    extra_headers={"x-fake-truncate": "2"}) as stream:
        for _ in stream:
            pass
    (event,) = sink.events
    assert (event.outcome, event.output_tokens) == ("partial", 4_000 if hidden else 0)
    assert event.cost_usd == pytest.approx(priced("openai", model, event), rel=1e-9)
