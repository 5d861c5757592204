"""``responses.compact`` under the call-guard: the real ``openai`` SDK (sync and async) against the
fake API's ``/v1/responses/compact``, whose usage counts the words of ``instructions`` and of the
input's texts (200 more for a ``previous_response_id``) and 12 output tokens, so every cost here is
exact (``fake_openai.compaction_input_tokens``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    budget_policy,
    compile_policies,
    spent_today,
)
from fake_openai import COMPACTION_TOKENS, PREVIOUS_RESPONSE_TOKENS  # noqa: E402
from llm_call_support import llm_call_policy  # noqa: E402
from openai_guard_support import (  # noqa: E402
    async_retried_then_refused,
    budget_guard,
    own_client,
    refused_unpriced,
    reserved_once_and_settled,
    retried_then_exhausted,
    unguarded,
    wrapped_async_call,
)

from costwarden.adapters.events import JsonlSink, SqliteSink  # noqa: E402
from costwarden.adapters.events.jsonl import read_events  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai_compaction import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers import background_responses  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_endpoints import (  # noqa: E402
    guarded_path,
    path_api,
    unguarded_spend,
    usage_on_request,
)
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import AdapterError, BudgetExceeded, PolicyViolation  # noqa: E402

MINI = "gpt-5-mini"
PRICER = GenaiPricer()
CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},  # 6 words
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris."}]},  # 1
    {"role": "user", "content": [{"type": "input_text", "text": "And of Germany?"}]},  # 3
]
INSTRUCTIONS = "Keep every fact the user gave."  # 6 words
ONLY_MINI = llm_call_policy("compactors", {"mini-only": f'allowedModels: {{default: ["{MINI}", "gpt-5", "gpt-4.1*"], '
                                                        "onViolation: deny}"})
"""An allowlist matched by provider alone (no ``kinds``): it judges compactions as any call."""


def cost(tokens: int, output: int = COMPACTION_TOKENS, model: str = MINI, **usage: int) -> float:
    return PRICER.cost("openai", model, TokenUsage(input_tokens=tokens, output_tokens=output, **usage))


def reserved(model: str = MINI, **body: Any) -> float:
    """The worst case the guard reserves for a compaction body: its estimated input and the output cap."""
    estimate = subject_from_request({"model": model, **body}).request.input_tokens
    return cost(estimate, OUTPUT_TOKENS_CAP, model)


@pytest.fixture
def guard_policies() -> str:
    """The guard's (``conftest.py``): the $5 budget and an allowlist that refuses o3."""
    return budget_policy(5.0) + "\n---\n" + ONLY_MINI


# --- the path: a compaction is neither a Responses call nor a read of one ---------------------------------


@pytest.mark.parametrize("path", ["/v1/responses/compact", "/v1/responses/compact/", "/openai/v1/responses/compact"])
def test_the_compaction_path_has_its_own_edge(path: str) -> None:
    assert guarded_path("POST", path) and path_api(path) == "compaction"
    assert unguarded_spend("POST", path) is None
    assert not usage_on_request(path, {"model": MINI, "stream": True})
    assert background_responses.read_response_id("POST", path) is None
    assert path_api("/v1/responses") == "chat" and path_api("/v1/responses/resp_1/cancel") == "chat"


# --- reserve, send, settle from usage ---------------------------------------------------------------


def test_a_compaction_is_reserved_then_settled_from_its_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-c1", feature="chat"):
        result = client.responses.compact(model=MINI, input=CONVERSATION, instructions=INSTRUCTIONS,
                                          prompt_cache_key="thread-7")
    assert isinstance(result, openai.types.responses.CompactedResponse)
    assert result.object == "response.compaction" and result.output[-1].type == "compaction"
    assert [item.type for item in result.output] == ["message", "message", "compaction"]  # the user turns, kept
    (sent,) = server.posts("/v1/responses/compact")
    assert sent.body == {"model": MINI, "input": CONVERSATION, "instructions": INSTRUCTIONS,
                         "prompt_cache_key": "thread-7"}  # as the SDK sent it: nothing added
    assert server.posts("/v1/responses") == []
    hold, event = reserved_once_and_settled(ledger, sink)
    worst = reserved(input=CONVERSATION, instructions=INSTRUCTIONS)
    assert hold.amount_usd == pytest.approx(worst)
    assert (event.provider, event.api, event.model_requested, event.model, event.model_served) == (
        "openai", "responses.compact", MINI, MINI, MINI)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (16, COMPACTION_TOKENS, 0)
    assert (event.user, event.feature, event.stream, event.rewrites) == ("u-c1", "chat", False, ())
    assert event.cost_usd == pytest.approx(cost(16)) and event.cost_usd > 0
    assert event.estimated_cost_usd == pytest.approx(worst)
    assert spent_today(ledger, "u-c1") == pytest.approx(cost(16), abs=2e-6)
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


def test_cached_input_and_reasoning_are_priced_as_a_responses_call(client: Any, sink: ListSink,
                                                                   ledger: CountingLedger) -> None:
    usage = '{"input_tokens": 30000, "cached_tokens": 20000, "output_tokens": 900, "reasoning_tokens": 800}'
    with attribution(user="u-c2"):
        client.responses.compact(model=MINI, input="Go on.", extra_headers={"x-fake-usage": usage})
    (event,) = sink.events
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (10_000, 20_000, 900)
    expected = cost(10_000, 900, cache_read_tokens=20_000)
    assert event.cost_usd == pytest.approx(expected) and expected < cost(30_000, 900)
    assert spent_today(ledger, "u-c2") == pytest.approx(expected, abs=2e-6)


def test_a_previous_response_is_settled_from_the_usage_though_the_estimate_cannot_see_it(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    with attribution(user="u-c3"):
        client.responses.compact(model=MINI, input="Summarise.", previous_response_id="resp_abc")
    assert server.posts("/v1/responses/compact")[-1].body["previous_response_id"] == "resp_abc"
    (event,) = sink.events
    assert event.input_tokens == 1 + PREVIOUS_RESPONSE_TOKENS
    estimate = subject_from_request({"model": MINI, "input": "Summarise."}).request.input_tokens
    assert estimate < event.input_tokens  # the stored thread is context the body does not show
    assert event.cost_usd == pytest.approx(cost(1 + PREVIOUS_RESPONSE_TOKENS))


def test_the_service_tier_prices_the_worst_case_and_the_served_tier_the_charge(client: Any, sink: ListSink) -> None:
    with attribution(user="u-c4"):
        client.responses.compact(model="gpt-5", input="one two three", service_tier="priority",
                                 extra_headers={"x-fake-service-tier": "priority"})
    (event,) = sink.events
    prio = {"service_tier": "priority"}
    estimate = subject_from_request({"model": "gpt-5", "input": "one two three"}).request.input_tokens
    worst = PRICER.cost("openai", "gpt-5", TokenUsage(input_tokens=estimate, output_tokens=OUTPUT_TOKENS_CAP),
                        context=prio)
    assert event.estimated_cost_usd == pytest.approx(worst)
    charged = PRICER.cost("openai", "gpt-5", TokenUsage(input_tokens=3, output_tokens=COMPACTION_TOKENS), context=prio)
    assert event.cost_usd == pytest.approx(charged) and charged == pytest.approx(2 * cost(3, model="gpt-5"))


# --- refused or rewritten before sending ------------------------------------------------------------


def test_a_model_the_policy_refuses_is_refused_before_sending(client: Any, server: FakeLlmServer, sink: ListSink,
                                                              ledger: CountingLedger) -> None:
    with attribution(user="u-c5"), pytest.raises(PolicyViolation) as caught:
        client.responses.compact(model="o3", input=CONVERSATION)
    assert server.posts() == []
    assert caught.value.decision.blocking[0].policy == "compactors"
    assert [(e.api, e.outcome, e.model) for e in sink.events] == [("responses.compact", "denied", "o3")]
    assert ledger.count("reserve") == 0


def test_a_compaction_without_a_model_is_refused_before_sending(client: Any, server: FakeLlmServer,
                                                               ledger: CountingLedger) -> None:
    """``model=None`` (the previous response's model) cannot be judged or priced, and the answer
    names no model to settle at: refused, with a message that says what to do."""
    with attribution(user="u-c5b"), pytest.raises(AdapterError, match="model name string is required"):
        client.responses.compact(model=None, previous_response_id="resp_earlier")
    assert server.posts() == []
    assert ledger.count("reserve") == 0


def test_a_budget_that_cannot_hold_the_output_cap_refuses_before_sending(server: FakeLlmServer, sink: ListSink,
                                                                        ledger: CountingLedger) -> None:
    """The worst case is the clamped output cap whatever the input: a budget below 32,768 output
    tokens of gpt-5-mini refuses even a one-word compaction, a budget above it lets it through."""
    assert cost(0, OUTPUT_TOKENS_CAP) > 0.06
    with own_client(server, budget_guard(0.06, ledger=ledger, sink=sink)) as client, attribution(user="u-c6"), \
            pytest.raises(BudgetExceeded):
        client.responses.compact(model=MINI, input="hi")
    assert server.posts() == [] and [e.outcome for e in sink.events] == ["denied"]
    with own_client(server, budget_guard(0.07, ledger=ledger, sink=sink)) as client, attribution(user="u-c6"):
        client.responses.compact(model=MINI, input="hi")
    assert len(server.posts("/v1/responses/compact")) == 1


def test_the_builtin_library_downgrades_the_model_sent_and_adds_no_output_cap(
    server: FakeLlmServer, builtin_policies: Any
) -> None:
    sink = ListSink()
    guard = CallGuard(builtin_policies, ledger=MemoryLedger(), sinks=[sink])
    with own_client(server, guard) as client, attribution(feature="classify", user="u-c7"):
        result = client.responses.compact(model="gpt-4.1", input=CONVERSATION)
    (sent,) = server.posts("/v1/responses/compact")
    assert sent.body == {"model": "gpt-4.1-mini", "input": CONVERSATION}  # no max_output_tokens, no max_tokens
    assert result.model == "gpt-4.1-mini"
    (event,) = sink.events
    assert (event.api, event.model_requested, event.model, event.outcome) == (
        "responses.compact", "gpt-4.1", "gpt-4.1-mini", "ok")
    assert event.rewrites == ("downgrade model to gpt-4.1-mini",)
    assert event.cost_usd == pytest.approx(cost(10, model="gpt-4.1-mini"))


CAP_OUTPUT = llm_call_policy("cap-output", {"cap": "maxOutputTokens: {limit: 32}"})


def test_an_output_cap_adds_nothing_to_the_body(server: FakeLlmServer, sink: ListSink) -> None:
    guard = budget_guard(5.0, CAP_OUTPUT, ledger=MemoryLedger(), sink=sink)
    with own_client(server, guard) as client, attribution(user="u-c8"):
        client.responses.compact(model=MINI, input="one two", instructions="three")
    (sent,) = server.posts("/v1/responses/compact")
    assert sent.body == {"model": MINI, "input": "one two", "instructions": "three"}
    (event,) = sink.events
    assert (event.outcome, event.rewrites, event.input_tokens) == ("ok", (), 3)
    assert event.estimated_cost_usd == pytest.approx(reserved(input="one two", instructions="three"))


def test_an_unknown_model_is_refused_not_priced_at_zero(server: FakeLlmServer, sink: ListSink) -> None:
    message = refused_unpriced(server, sink, lambda c: c.responses.compact(model="gpt-9-secret", input="hi"),
                               user="u-c9")
    assert "no price for model 'gpt-9-secret'" in message


# --- failures ---------------------------------------------------------------------------------------


def test_retries_reserve_once_and_exhausted_retries_release(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    retried_then_exhausted(server, ledger, sink, "/v1/responses/compact",
                           lambda text: client.responses.compact(model=MINI, input=text), cost(2), user="u-c10")
    assert spent_today(ledger, "u-c10") == pytest.approx(cost(2), abs=2e-6)
    assert [e.api for e in sink.events] == ["responses.compact"] * 2


# --- async and guard_openai --------------------------------------------------------------------------


def test_the_async_client_is_guarded_alike(server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger,
                                           sink: ListSink) -> None:
    result = async_retried_then_refused(
        server, guard, lambda client: client.responses.compact(model=MINI, input="a b c", instructions="d"),
        lambda client: client.responses.compact(model="o3", input="e"), user="u-c11")
    assert result.output[-1].type == "compaction"
    assert len(server.posts("/v1/responses/compact")) == 2  # the failed attempt and its retry; the refused call none
    assert [(e.api, e.outcome, e.input_tokens) for e in sink.events] == [
        ("responses.compact", "ok", 4), ("responses.compact", "denied", 0)]
    assert sink.events[0].cost_usd == pytest.approx(cost(4))
    assert ledger.count("reserve") == 1
    assert spent_today(ledger, "u-c11") == pytest.approx(cost(4), abs=2e-6)


def test_guard_openai_covers_compaction(server: FakeLlmServer, guard: CallGuard, sink: ListSink,
                                        ledger: CountingLedger) -> None:
    with guard_openai(unguarded(server), guard) as client, attribution(user="u-c12"):
        client.responses.compact(model=MINI, input="wrapped sync call")
        with pytest.raises(PolicyViolation):
            client.responses.compact(model="o3", input="refused")
    wrapped_async_call(server, guard, lambda c: c.responses.compact(model=MINI, input="wrapped async call too"),
                       user="u-c12")
    assert len(server.posts("/v1/responses/compact")) == 2
    assert [(e.api, e.outcome, e.input_tokens) for e in sink.events] == [
        ("responses.compact", "ok", 3), ("responses.compact", "denied", 0), ("responses.compact", "ok", 4)]
    assert spent_today(ledger, "u-c12") == pytest.approx(cost(3) + cost(4), abs=2e-6)


# --- a durable ledger and the cost-event sinks ----------------------------------------------------------


def test_the_sqlite_ledger_and_every_sink_keep_the_compaction(server: FakeLlmServer, tmp_path: Path) -> None:
    otel = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costwarden.adapters.events import OtelSink

    exporter, provider = InMemorySpanExporter(), otel.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    jsonl, sqlite = JsonlSink(tmp_path / "events.jsonl"), SqliteSink(tmp_path / "events.db")
    with open_ledger(url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger,
                          sinks=[jsonl, sqlite, OtelSink(provider.get_tracer("test"))])
        with own_client(server, guard) as client, attribution(user="u-c13"):
            client.responses.compact(model=MINI, input=CONVERSATION)
    with open_ledger(url) as reopened:
        assert spent_today(reopened, "u-c13") == pytest.approx(cost(10), abs=2e-6)
    (line,) = read_events(tmp_path / "events.jsonl")
    assert (line["api"], line["input_tokens"], line["output_tokens"]) == ("responses.compact", 10, COMPACTION_TOKENS)
    assert line["cost_usd"] == pytest.approx(cost(10))
    with SqliteSink(tmp_path / "events.db") as reopened_sink:  # the guard closed its sinks
        assert reopened_sink.query("SELECT api, input_tokens, charged FROM cost_events") == [
            ("responses.compact", 10, 1)]
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.name == f"chat {MINI}"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.usage.output_tokens"] == COMPACTION_TOKENS
