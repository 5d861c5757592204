"""What an OpenAI stream cut before its usage is charged beside its input and shown words: the web
searches it showed (billed per call) and the reasoning text it showed (billed as output), through
the real SDK against the fake server, priced by genai-prices."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    spent_today,
)

from costwarden.adapters.llm_payload import UNCAPPED_WEB_SEARCHES  # noqa: E402
from costwarden.adapters.openai import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402
from costwarden.enforcers.openai_stream import CHARS_PER_TOKEN  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

PRICER = GenaiPricer()
SEARCH_TOOL = {"type": "web_search"}
SEARCH_USD = 0.01  # genai-prices: $10 per 1,000 web search calls on OpenAI's models


def client_for(server: FakeLlmServer, guard: CallGuard, provider: str = "openai") -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                         http_client=openai_http_client(guard, provider=provider, max_retries=0))


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with client_for(server, guard) as c:
        yield c


def input_estimate(server: FakeLlmServer) -> int:
    """The guard's estimate of the last OpenAI request's input, as the server received it."""
    sent = [r for r in server.posts() if r.path.startswith("/v1/")][-1]
    return subject_from_request(sent.body).request.input_tokens


def estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def priced(provider: str, model: str, event: Any) -> float:
    """What the event's own usage costs, its web searches included."""
    usage = TokenUsage(input_tokens=event.input_tokens, output_tokens=event.output_tokens,
                       web_search_requests=event.web_search_requests)
    return PRICER.cost(provider, model, usage)


def read_until_cut(stream: Any, kinds: list[str], texts: dict[str, str]) -> None:
    """Read a stream the server drops: each event's type into ``kinds``, each delta's text under its type."""
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            kinds.append(event.type)
            if isinstance(getattr(event, "delta", None), str):
                texts[event.type] = texts.get(event.type, "") + event.delta


# --- web searches a cut Responses stream showed ----------------------------------------------------


def searched(server: FakeLlmServer, client: Any, model: str, truncate: int, **extra: Any) -> tuple[list[str], str]:
    """A Responses stream with the web search tool whose answer starts with two searches, dropped
    by the server after ``truncate`` events: the event types and the answer text the app read."""
    kinds: list[str] = []
    texts: dict[str, str] = {}
    headers = {"x-fake-web-searches": "2", "x-fake-truncate": str(truncate)}
    with attribution(user="u-ws"), client.responses.stream(
            model=model, input="What happened today?", tools=[SEARCH_TOOL], max_output_tokens=4_000,
            extra_headers=headers, **extra) as stream:
        read_until_cut(stream, kinds, texts)
    return kinds, texts.get("response.output_text.delta", "")


def test_a_responses_stream_cut_after_its_web_searches_is_charged_them(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    """Two searches ran, then the first words, then the server died: each search is billed ($10 per
    1,000), though the ``response.completed`` that would have listed them never came."""
    kinds, shown = searched(server, client, "gpt-4.1-mini", 16)
    assert kinds.count("response.web_search_call.completed") == 2 and shown == "word word"
    (event,) = sink.events
    assert (event.outcome, event.usage_source) == ("partial", "estimate")
    assert (event.input_tokens, event.output_tokens) == (input_estimate(server), estimate(shown))
    assert event.web_search_requests == 2
    tokens_only = PRICER.cost("openai", "gpt-4.1-mini", TokenUsage(input_tokens=event.input_tokens,
                                                                   output_tokens=event.output_tokens))
    assert event.cost_usd == pytest.approx(tokens_only + 2 * SEARCH_USD, rel=1e-9)
    assert event.cost_usd == pytest.approx(priced("openai", "gpt-4.1-mini", event), rel=1e-9)
    assert spent_today(ledger, "u-ws") == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_search_the_stream_showed_started_is_charged_though_it_never_completed(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    """Cut while the first search is ``searching``: the search runs on OpenAI's side and is billed."""
    kinds, shown = searched(server, client, "gpt-4.1-mini", 5)
    assert kinds[-1] == "response.web_search_call.searching" and shown == ""
    (event,) = sink.events
    assert (event.output_tokens, event.web_search_requests) == (0, 1)
    assert event.cost_usd == pytest.approx(priced("openai", "gpt-4.1-mini", event), rel=1e-9)


@pytest.mark.parametrize(("max_tool_calls", "charged"), [(None, UNCAPPED_WEB_SEARCHES), (5, 5), (1, 2)])
def test_a_reasoning_stream_cut_after_its_searches_is_charged_its_worst_case_and_every_search(
    client: Any, server: FakeLlmServer, sink: ListSink, max_tool_calls: int | None, charged: int
) -> None:
    """gpt-5 reasoned, searched twice, then was cut: charged the output its max tokens allow (hidden
    reasoning), and the searches it showed, or the searches its worst case reserved when more (its
    ``max_tool_calls``, or the number assumed for a tool without a limit)."""
    server.usage = {"input_tokens": 42, "output_tokens": 1_200, "reasoning_tokens": 1_000}
    extra = {"max_tool_calls": max_tool_calls} if max_tool_calls else {}
    kinds, _ = searched(server, client, "gpt-5", 14, **extra)
    assert kinds.count("response.web_search_call.completed") == 2
    (event,) = sink.events
    assert (event.outcome, event.output_tokens, event.web_search_requests) == ("partial", 4_000, charged)
    assert event.cost_usd == pytest.approx(priced("openai", "gpt-5", event), rel=1e-9)
    assert "reasons with output tokens no stream shows" in (event.error or "")


# --- reasoning text a cut stream showed ------------------------------------------------------------


@pytest.mark.parametrize("fields", ["reasoning_content", "reasoning", "reasoning,reasoning_content"])
def test_a_chat_stream_cut_in_its_visible_reasoning_is_charged_the_reasoning_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger, fields: str
) -> None:
    """DeepSeek streams its chain of thought in ``delta.reasoning_content``; vLLM's reasoning parsers
    and OpenRouter in ``delta.reasoning`` (vLLM's compatibility mode in both, the same text): billed
    as output, so a stream cut while it reasons is charged those words, counted once."""
    usage = json.dumps({"output_tokens": 600, "reasoning_tokens": 500})
    reasoning = ""
    with client_for(server, guard, provider="deepseek") as client, attribution(user="u-think"), \
            pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
                model="deepseek-reasoner", messages=[{"role": "user", "content": "Prove it"}], max_tokens=2_000,
                stream=True, extra_headers={"x-fake-usage": usage, "x-fake-reasoning-text": fields,
                                            "x-fake-truncate": "12"}):
            delta = chunk.choices[0].delta.model_extra or {}
            reasoning += delta.get(fields.split(",")[0]) or ""
    assert len(reasoning) > 100 and not reasoning.strip(" word")
    (event,) = sink.events
    assert (event.outcome, event.usage_source) == ("partial", "estimate")
    assert (event.input_tokens, event.output_tokens) == (input_estimate(server), estimate(reasoning))
    assert event.cost_usd == pytest.approx(priced("deepseek", "deepseek-reasoner", event), rel=1e-9)
    assert spent_today(ledger, "u-think") == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_responses_stream_cut_after_more_reasoning_text_than_its_worst_case_is_charged_what_it_showed(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    """A reasoning stream is charged its worst case, or what it showed when that is more: an open
    model's Responses stream (gpt-oss behind an OpenAI-compatible server) shows its whole chain of
    thought as ``response.reasoning_text.delta``, here past the 32,768 output tokens a request
    without ``max_output_tokens`` is reserved."""
    usage = json.dumps({"output_tokens": 30_010, "reasoning_tokens": 30_000})
    kinds: list[str] = []
    texts: dict[str, str] = {}
    with attribution(user="u-cot"), client.responses.stream(
            model="gpt-5", input="Prove it", extra_headers={
                "x-fake-usage": usage, "x-fake-reasoning-text": "reasoning_text", "x-fake-truncate": "1880"}) as s:
        read_until_cut(s, kinds, texts)
    shown = texts["response.reasoning_text.delta"]
    assert kinds[-1] == "response.reasoning_text.done" and "response.output_text.delta" not in kinds
    (event,) = sink.events
    assert event.outcome == "partial" and event.output_tokens == estimate(shown) > 32_768
    assert event.cost_usd == pytest.approx(priced("openai", "gpt-5", event), rel=1e-9)


def test_a_responses_stream_cut_in_its_raw_reasoning_text_is_charged_what_it_showed(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    """A stream that shows its raw chain of thought (``response.reasoning_text.delta``: gpt-oss behind
    an OpenAI-compatible server) hides no reasoning: cut early, it is charged the text it showed, not
    the worst case its ``max_output_tokens`` reserved."""
    usage = json.dumps({"output_tokens": 1_200, "reasoning_tokens": 1_000})
    kinds: list[str] = []
    texts: dict[str, str] = {}
    with attribution(user="u-raw"), client.responses.stream(
            model="gpt-5", input="Prove it", max_output_tokens=3_000, extra_headers={
                "x-fake-usage": usage, "x-fake-reasoning-text": "reasoning_text", "x-fake-truncate": "12"}) as s:
        read_until_cut(s, kinds, texts)
    shown = texts["response.reasoning_text.delta"]
    assert shown and "response.output_text.delta" not in kinds
    (event,) = sink.events
    assert (event.outcome, event.output_tokens) == ("partial", estimate(shown))
    assert event.output_tokens < 3_000
    assert "no stream shows" not in (event.error or "")


def test_a_responses_stream_cut_in_its_reasoning_summary_is_charged_its_worst_case(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    """OpenAI's own reasoning models show only a summary of their reasoning
    (``response.reasoning_summary_text.delta``): the reasoning item says hidden tokens were billed."""
    usage = json.dumps({"output_tokens": 1_200, "reasoning_tokens": 1_000})
    kinds: list[str] = []
    texts: dict[str, str] = {}
    with attribution(user="u-sum"), client.responses.stream(
            model="o3", input="Prove it", max_output_tokens=3_000, extra_headers={
                "x-fake-usage": usage, "x-fake-reasoning-text": "summary", "x-fake-truncate": "8"}) as s:
        read_until_cut(s, kinds, texts)
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta"]
    assert texts["response.reasoning_summary_text.delta"]
    (event,) = sink.events
    assert (event.outcome, event.output_tokens) == ("partial", 3_000)
