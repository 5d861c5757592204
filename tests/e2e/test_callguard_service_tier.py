"""Service tiers and speed modes that change the price: OpenAI ``service_tier`` (priority costs more,
flex less) and Anthropic ``speed: fast``, priced from genai-prices' price variants, before the call
(the budget's worst case) and after it (the settled cost), under the real SDKs."""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from fake_llm_server import spent_today as spent  # noqa: E402
from genai_prices import Usage, calc_price  # noqa: E402

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai import subject_from_request, usage_from_response  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.attempt import complete_from_data  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.guarded_call import ProviderEdge  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]


def genai(provider: str, model: str, context: dict[str, str] | None, **usage: int) -> float:
    return float(calc_price(Usage(**usage), model_ref=model, provider_id=provider, price_context=context).total_price)



@pytest.fixture(autouse=True)
def _usage(server: FakeLlmServer) -> None:
    server.usage = {"input_tokens": 1_000, "output_tokens": 500}


def test_pricer_prices_openai_priority_and_flex_tiers() -> None:
    pricer = GenaiPricer()
    usage = TokenUsage(input_tokens=1_000, output_tokens=500, cache_read_tokens=2_000)
    raw = {"input_tokens": 3_000, "output_tokens": 500, "cache_read_tokens": 2_000}
    standard = pricer.cost("openai", "gpt-5", usage)
    priority = pricer.cost("openai", "gpt-5", usage, context={"service_tier": "priority"})
    flex = pricer.cost("openai", "gpt-5", usage, context={"service_tier": "flex"})
    assert priority == pytest.approx(genai("openai", "gpt-5", {"service_tier": "priority"}, **raw), rel=1e-9)
    assert flex == pytest.approx(genai("openai", "gpt-5", {"service_tier": "flex"}, **raw), rel=1e-9)
    assert priority == pytest.approx(2 * standard) and flex == pytest.approx(standard / 2)
    # a tier without a price of its own is the standard price
    assert pricer.cost("openai", "gpt-5", usage, context={"service_tier": "default"}) == standard
    assert pricer.cost("openai", "gpt-5", usage, context={"service_tier": "auto"}) == standard


@pytest.mark.parametrize("background", [False, True])
def test_openai_priority_call_is_reserved_and_settled_at_the_priority_price(
    server: FakeLlmServer, background: bool
) -> None:
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink],
                      settle_in_background=background)
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                       http_client=openai_http_client(guard, max_retries=0)) as client, attribution(user="u-prio"):
        client.chat.completions.create(model="gpt-5", max_tokens=1_000, messages=HI, service_tier="priority")
    guard.close()
    (event,) = sink.events
    prio = {"service_tier": "priority"}
    expected = genai("openai", "gpt-5", prio, input_tokens=1_000, output_tokens=500)
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert spent(ledger, "u-prio") == pytest.approx(expected, abs=1e-6)
    sent = server.posts("/v1/chat/completions")[-1].body
    worst = genai("openai", "gpt-5", prio, input_tokens=guard_input_tokens(sent), output_tokens=1_000)
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


def guard_input_tokens(body: dict[str, Any]) -> int:
    return subject_from_request(body).request.input_tokens


def test_the_response_service_tier_wins_over_the_requested_one() -> None:
    """OpenAI answers with the tier that served the call: a priority request served at the
    default tier costs the standard price, an ``auto`` one served at priority costs more."""
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=MemoryLedger(), sinks=[sink := ListSink()])
    edge = ProviderEdge("openai", subject_from_request, usage_from_response)
    usage = {"prompt_tokens": 1_000, "completion_tokens": 500, "total_tokens": 1_500}
    for asked, served in (("priority", "default"), ("auto", "priority")):
        body = {"model": "gpt-5", "max_tokens": 1_000, "messages": HI, "service_tier": asked}
        with attribution(user="u-tier"):
            call = guard.begin(edge, body, key=f"k-{asked}")
        complete_from_data(call, {"model": "gpt-5-2025-08-07", "service_tier": served, "usage": usage},
                           usage_from_response, lambda data: None)
    standard, priority = (genai("openai", "gpt-5", ctx, input_tokens=1_000, output_tokens=500)
                          for ctx in (None, {"service_tier": "priority"}))
    assert [e.cost_usd for e in sink.events] == [pytest.approx(standard), pytest.approx(priority)]


def test_anthropic_fast_mode_is_priced_at_the_fast_rate(server: FakeLlmServer) -> None:
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=ledger, sinks=[sink])
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client, \
            attribution(user="u-fast"):
        client.messages.create(model="claude-opus-4-8", max_tokens=2_000, messages=HI, speed="fast")
    (event,) = sink.events
    fast = {"speed": "fast"}
    expected = genai("anthropic", "claude-opus-4-8", fast, input_tokens=1_000, output_tokens=500)
    assert expected == pytest.approx(2 * genai("anthropic", "claude-opus-4-8", None, input_tokens=1_000,
                                               output_tokens=500))
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert spent(ledger, "u-fast") == pytest.approx(expected, abs=1e-6)
    sent = server.posts("/v1/messages")[-1].body
    worst = genai("anthropic", "claude-opus-4-8", fast, input_tokens=anthropic_input_tokens(sent), output_tokens=2_000)
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)


def anthropic_input_tokens(body: dict[str, Any]) -> int:
    from costwarden.adapters.anthropic import subject_from_request as anthropic_subject

    return anthropic_subject(body).request.input_tokens


# --- prompt caching: a cache write costs more than input, so the worst case prices the input as writes ---

LONG_SYSTEM = "You answer questions about the shipping policy. " * 300


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_a_cache_write_never_costs_more_than_the_reserved_worst_case(server: FakeLlmServer, ttl: str) -> None:
    """A request with a cache breakpoint may be billed its whole prompt as cache writes (1.25x
    input for 5m, 2x for 1h): its reservation must cover that, or concurrent calls overspend."""
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1, "system": system, "messages": HI}
    written = anthropic_input_tokens(body)
    server.usage = {"input_tokens": 0, "cache_creation_input_tokens": written, "output_tokens": 1}
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client, \
            attribution(user="u-cache"):
        client.messages.create(**body)
    (event,) = sink.events
    assert event.cache_write_tokens == written
    write_key = "cache_write_5m_tokens" if ttl == "5m" else "cache_write_1h_tokens"
    worst = genai("anthropic", "claude-sonnet-4-6", None, input_tokens=written, output_tokens=1,
                  cache_write_tokens=written, **{write_key: written})
    assert event.estimated_cost_usd == pytest.approx(worst, rel=1e-9)
    # the fake server reports writes without the TTL split (billed as 5m): at most the worst case
    assert event.cost_usd <= event.estimated_cost_usd


# --- streams and background responses: priced at the tier / speed that served them ---


def openai_client(server: FakeLlmServer, guard: CallGuard) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0,
                         http_client=openai_http_client(guard, max_retries=0))


def test_an_anthropic_stream_is_priced_at_the_speed_its_usage_reports(server: FakeLlmServer) -> None:
    """Anthropic reports the speed that served a call in ``usage`` (``message_start`` when
    streamed): a fast-mode request served at the standard speed costs the standard price."""
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=ledger, sinks=[sink])
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client, \
            attribution(user="u-fast-stream"):
        with client.messages.stream(model="claude-opus-4-8", max_tokens=2_000, messages=HI, speed="fast",
                                    extra_headers={"x-fake-speed": "standard"}) as stream:
            stream.until_done()
        with client.messages.stream(model="claude-opus-4-8", max_tokens=2_000, messages=HI, speed="fast",
                                    extra_headers={"x-fake-speed": "fast"}) as stream:
            stream.until_done()
    standard, fast = (genai("anthropic", "claude-opus-4-8", ctx, input_tokens=1_000, output_tokens=500)
                      for ctx in (None, {"speed": "fast"}))
    assert fast == pytest.approx(2 * standard)
    assert [(e.stream, e.usage_source) for e in sink.events] == [(True, "stream")] * 2
    assert [e.cost_usd for e in sink.events] == [pytest.approx(standard, rel=1e-9), pytest.approx(fast, rel=1e-9)]
    assert spent(ledger, "u-fast-stream") == pytest.approx(standard + fast, abs=1e-6)


def test_an_openai_chat_stream_is_priced_at_the_tier_its_chunks_report(server: FakeLlmServer) -> None:
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=ledger, sinks=[sink])
    with openai_client(server, guard) as client, attribution(user="u-chat-stream"):
        for asked, served in (("auto", "priority"), ("priority", "default")):
            chunks = client.chat.completions.create(
                model="gpt-5", max_tokens=1_000, messages=HI, service_tier=asked, stream=True,
                stream_options={"include_usage": True}, extra_headers={"x-fake-service-tier": served})
            assert [c.service_tier for c in chunks][-1] == served
    standard, priority = (genai("openai", "gpt-5", ctx, input_tokens=1_000, output_tokens=500)
                          for ctx in (None, {"service_tier": "priority"}))
    assert [(e.stream, e.usage_source) for e in sink.events] == [(True, "stream")] * 2
    assert [e.cost_usd for e in sink.events] == [pytest.approx(priority, rel=1e-9), pytest.approx(standard, rel=1e-9)]
    assert spent(ledger, "u-chat-stream") == pytest.approx(priority + standard, abs=1e-6)


def test_an_openai_responses_stream_is_priced_at_the_tier_its_response_reports(server: FakeLlmServer) -> None:
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=ledger, sinks=[sink])
    with openai_client(server, guard) as client, attribution(user="u-resp-stream"):
        events = client.responses.create(model="gpt-5", input="hi", max_output_tokens=1_000, service_tier="auto",
                                         stream=True, extra_headers={"x-fake-service-tier": "flex"})
        assert [e.response.service_tier for e in events if e.type == "response.completed"] == ["flex"]
    flex = genai("openai", "gpt-5", {"service_tier": "flex"}, input_tokens=1_000, output_tokens=500)
    (event,) = sink.events
    assert (event.stream, event.usage_source) == (True, "stream")
    assert event.cost_usd == pytest.approx(flex, rel=1e-9)
    assert spent(ledger, "u-resp-stream") == pytest.approx(flex, abs=1e-6)


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_a_background_response_is_settled_at_the_tier_that_served_it(server: FakeLlmServer, tier: str) -> None:
    """A background response's settlement prices the response object's ``service_tier``."""
    ledger, sink = MemoryLedger(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=ledger, sinks=[sink])
    with openai_client(server, guard) as client, attribution(user=f"u-bg-{tier}"):
        created = client.responses.create(model="gpt-5", input="hi", max_output_tokens=1_000, background=True,
                                          service_tier=tier, extra_headers={"x-fake-service-tier": tier})
        done = client.responses.retrieve(created.id)
    assert (done.status, done.service_tier) == ("completed", tier)
    guard.close()
    expected = genai("openai", "gpt-5", {"service_tier": tier}, input_tokens=1_000, output_tokens=500)
    queued, settled = sink.events
    assert (queued.cost_usd, settled.usage_source, settled.charged) == (0.0, "response", True)
    assert settled.cost_usd == pytest.approx(expected, rel=1e-9)
    assert spent(ledger, f"u-bg-{tier}") == pytest.approx(expected, abs=1e-6)
