"""Usage billed beside plain tokens: Anthropic web searches and OpenAI audio tokens, settled through
the real SDKs against the fake server into a real SQLite ledger, at genai-prices' own figures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from fake_llm_server import spent_today as spent  # noqa: E402
from genai_prices import Usage, calc_price  # noqa: E402

from costwarden.adapters.anthropic import estimate_input_tokens  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.llm_payload import UNCAPPED_WEB_SEARCHES  # noqa: E402
from costwarden.adapters.openai import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded  # noqa: E402

HI = [{"role": "user", "content": "What happened in the news today?"}]
HAIKU = "claude-haiku-4-5-20251001"
PRICER = GenaiPricer()


def reference(model: str, provider: str, **usage: int) -> float:
    return float(calc_price(Usage(**usage), model_ref=model, provider_id=provider).total_price)



@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    ledger = open_ledger(f"sqlite:///{tmp_path}/spend.db")
    yield ledger
    ledger.close()


@pytest.fixture
def claude(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
        yield client


@pytest.fixture
def gpt(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test",
                       http_client=openai_http_client(guard)) as client:
        yield client


# --- Anthropic web searches -----------------------------------------------------------------------

SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
SEARCH_USAGE = {"input_tokens": 1_000, "output_tokens": 200, "server_tool_use": {"web_search_requests": 5}}


def test_web_searches_of_a_response_are_settled(claude: Any, ledger: Any, sink: ListSink) -> None:
    with attribution(user="ws-1"):
        message = claude.messages.create(model=HAIKU, max_tokens=256, messages=HI, tools=[SEARCH_TOOL],
                                         extra_headers={"x-fake-usage": json.dumps(SEARCH_USAGE)})
    assert message.usage.server_tool_use.web_search_requests == 5
    expected = reference(HAIKU, "anthropic", input_tokens=1_000, output_tokens=200, web_searches=5)
    tokens_only = reference(HAIKU, "anthropic", input_tokens=1_000, output_tokens=200)
    assert expected > 10 * tokens_only
    assert spent(ledger, "ws-1") == pytest.approx(expected, abs=1e-6)
    (event,) = sink.events
    assert event.charged and event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert event.web_search_requests == 5


def test_web_searches_of_a_stream_are_running_totals(claude: Any, ledger: Any, sink: ListSink) -> None:
    # the fake server reports the count in message_start and again in message_delta: counted once
    with attribution(user="ws-2"), claude.messages.stream(
        model=HAIKU, max_tokens=256, messages=HI, tools=[SEARCH_TOOL],
        extra_headers={"x-fake-usage": json.dumps(SEARCH_USAGE)},
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.server_tool_use.web_search_requests == 5
    expected = reference(HAIKU, "anthropic", input_tokens=1_000, output_tokens=200, web_searches=5)
    assert spent(ledger, "ws-2") == pytest.approx(expected, abs=1e-6)
    (event,) = sink.events
    assert event.usage_source == "stream" and event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert event.web_search_requests == 5


def test_the_worst_case_reserves_the_searches_max_uses_allows(claude: Any, sink: ListSink) -> None:
    body = {"model": HAIKU, "max_tokens": 256, "messages": HI, "tools": [SEARCH_TOOL]}
    with attribution(user="ws-3"):
        claude.messages.create(**body)
    worst = PRICER.cost("anthropic", HAIKU, TokenUsage(
        input_tokens=estimate_input_tokens(body), output_tokens=256, web_search_requests=5))
    (event,) = sink.events
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


def test_a_search_tool_without_max_uses_reserves_the_assumed_searches(claude: Any, sink: ListSink) -> None:
    """Without ``max_uses`` the API allows any number of searches: the worst case assumes
    UNCAPPED_WEB_SEARCHES rather than none, so a budget is not blind to them."""
    uncapped = {"type": "web_search_20250305", "name": "web_search"}
    body = {"model": HAIKU, "max_tokens": 256, "messages": HI, "tools": [uncapped]}
    with attribution(user="ws-3u"):
        claude.messages.create(**body)
    worst = PRICER.cost("anthropic", HAIKU, TokenUsage(
        input_tokens=estimate_input_tokens(body), output_tokens=256, web_search_requests=UNCAPPED_WEB_SEARCHES))
    (event,) = sink.events
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


def test_a_budget_too_small_for_the_searches_refuses_before_sending(
    server: FakeLlmServer, ledger: Any, sink: ListSink
) -> None:
    # $0.02 covers the tokens of this call but not five $0.01 searches
    guard = CallGuard(compile_policies(budget_policy(0.02)), ledger=ledger, sinks=[sink])
    try:
        with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
                attribution(user="ws-4"):
            client.messages.create(model=HAIKU, max_tokens=256, messages=HI)  # no searches: fits
            with pytest.raises(BudgetExceeded):
                client.messages.create(model=HAIKU, max_tokens=256, messages=HI, tools=[SEARCH_TOOL])
    finally:
        guard.close()
    assert len(server.posts()) == 1


# --- OpenAI audio tokens --------------------------------------------------------------------------

AUDIO_MODEL = "gpt-audio"  # genai-prices has input and output audio prices for it


def test_audio_tokens_of_a_chat_completion_are_settled_at_the_audio_rate(
    gpt: Any, ledger: Any, sink: ListSink
) -> None:
    usage = {"input_tokens": 1_000, "audio_tokens": 600, "output_tokens": 300, "output_audio_tokens": 250}
    with attribution(user="au-1"):
        completion = gpt.chat.completions.create(model=AUDIO_MODEL, max_tokens=512, messages=HI,
                                                 extra_headers={"x-fake-usage": json.dumps(usage)})
    assert completion.usage.prompt_tokens_details.audio_tokens == 600
    assert completion.usage.completion_tokens_details.audio_tokens == 250
    expected = reference(AUDIO_MODEL, "openai", input_tokens=1_000, output_tokens=300,
                         input_audio_tokens=600, output_audio_tokens=250)
    text_rate = reference(AUDIO_MODEL, "openai", input_tokens=1_000, output_tokens=300)
    assert expected > 3 * text_rate
    assert spent(ledger, "au-1") == pytest.approx(expected, abs=1e-6)
    (event,) = sink.events
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert (event.input_audio_tokens, event.output_audio_tokens) == (600, 250)


def test_audio_tokens_of_a_chat_stream_are_settled_at_the_audio_rate(
    gpt: Any, server: FakeLlmServer, ledger: Any, sink: ListSink
) -> None:
    usage = {"input_tokens": 800, "audio_tokens": 800, "output_tokens": 100, "output_audio_tokens": 100}
    with attribution(user="au-2"):
        chunks = list(gpt.chat.completions.create(model=AUDIO_MODEL, max_tokens=512, messages=HI, stream=True,
                                                  stream_options={"include_usage": True},
                                                  extra_headers={"x-fake-usage": json.dumps(usage)}))
    assert chunks[-1].usage.prompt_tokens_details.audio_tokens == 800
    expected = reference(AUDIO_MODEL, "openai", input_tokens=800, output_tokens=100,
                         input_audio_tokens=800, output_audio_tokens=100)
    assert spent(ledger, "au-2") == pytest.approx(expected, abs=1e-6)
    (event,) = sink.events
    assert event.usage_source == "stream" and event.cost_usd == pytest.approx(expected, rel=1e-9)


def test_the_worst_case_of_an_audio_output_request_is_priced_at_the_audio_rate(gpt: Any, sink: ListSink) -> None:
    body = {"model": AUDIO_MODEL, "max_tokens": 512, "messages": HI, "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"}}
    with attribution(user="au-3"):
        gpt.chat.completions.create(**body)
    estimate = subject_from_request(body).request.input_tokens
    worst = reference(AUDIO_MODEL, "openai", input_tokens=estimate, output_tokens=512, output_audio_tokens=512)
    assert worst > 2 * reference(AUDIO_MODEL, "openai", input_tokens=estimate, output_tokens=512)
    (event,) = sink.events
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


# --- OpenAI web search calls (Responses) ----------------------------------------------------------

OPENAI_SEARCH = "gpt-4.1"  # genai-prices: $10 per 1,000 web search calls


@pytest.mark.parametrize("stream", [False, True])
def test_web_search_calls_of_a_response_are_settled(gpt: Any, ledger: Any, sink: ListSink, stream: bool) -> None:
    """A Responses answer lists each web search the model ran as a ``web_search_call`` output item;
    its usage does not count them, and each is billed."""
    headers = {"x-fake-web-searches": "3", "x-fake-usage": json.dumps({"input_tokens": 500, "output_tokens": 50})}
    with attribution(user=f"ows-{stream}"):
        created = gpt.responses.create(model=OPENAI_SEARCH, input="news?", tools=[{"type": "web_search"}],
                                       max_output_tokens=256, stream=stream, extra_headers=headers)
        if stream:
            kinds = {item.type for event in created if event.type == "response.completed"
                     for item in event.response.output}
        else:
            kinds = {item.type for item in created.output}
    assert "web_search_call" in kinds
    expected = reference(OPENAI_SEARCH, "openai", input_tokens=500, output_tokens=50, web_searches=3)
    assert expected > reference(OPENAI_SEARCH, "openai", input_tokens=500, output_tokens=50) + 0.029
    assert spent(ledger, f"ows-{stream}") == pytest.approx(expected, abs=1e-6)
    (event,) = sink.events
    assert event.web_search_requests == 3 and event.cost_usd == pytest.approx(expected, rel=1e-9)


def test_the_worst_case_reserves_the_searches_max_tool_calls_allows(gpt: Any, sink: ListSink) -> None:
    body = {"model": OPENAI_SEARCH, "input": "news?", "tools": [{"type": "web_search"}], "max_tool_calls": 4,
            "max_output_tokens": 256}
    with attribution(user="ows-w"):
        gpt.responses.create(**body)
    subject = subject_from_request(body)
    assert subject.request.max_web_searches == 4
    worst = PRICER.cost("openai", OPENAI_SEARCH, TokenUsage(
        input_tokens=subject.request.input_tokens, output_tokens=256, web_search_requests=4))
    (event,) = sink.events
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


def test_a_search_tool_without_max_tool_calls_reserves_the_assumed_searches(gpt: Any, sink: ListSink) -> None:
    body = {"model": OPENAI_SEARCH, "input": "news?", "tools": [{"type": "web_search"}], "max_output_tokens": 256}
    with attribution(user="ows-wu"):
        gpt.responses.create(**body)
    subject = subject_from_request(body)
    assert subject.request.max_web_searches == UNCAPPED_WEB_SEARCHES
    worst = PRICER.cost("openai", OPENAI_SEARCH, TokenUsage(
        input_tokens=subject.request.input_tokens, output_tokens=256, web_search_requests=UNCAPPED_WEB_SEARCHES))
    (event,) = sink.events
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)
