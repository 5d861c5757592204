"""``completions.create`` (the legacy Completions API) under the call-guard: the real ``openai`` SDK
(sync and async) against the fake API's ``/v1/completions``, whose ``prompt_tokens`` count each
prompt's words and each token array's length and whose completions are ``min(max_tokens, 10)``
words each, so every cost here is exact; ``provider="vllm"`` priced by a ``ModelCatalog``."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, spent_today  # noqa: E402
from openai_guard_support import (  # noqa: E402
    budget_guard,
    connect,
    connect_async,
    model_catalog,
    own_client,
    refused_unpriced,
    reserved_once_and_settled,
    retried_then_exhausted,
    unguarded,
    wrapped_async_call,
)

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai_completions import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import INCLUDE_USAGE, guard_openai  # noqa: E402
from costwarden.enforcers.openai_stream import CHARS_PER_TOKEN  # noqa: E402
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP, worst_case_usage  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded  # noqa: E402

INSTRUCT = "gpt-3.5-turbo-instruct"
LLAMA = "meta-llama/Llama-3.1-8B"
PRICER = GenaiPricer()
CATALOG = model_catalog("in-house", '{model: "meta-llama/*", provider: vllm, inputPerMTok: 0.2, outputPerMTok: 0.6}')


def cost(input_tokens: int, output_tokens: int, model: str = INSTRUCT) -> float:
    return PRICER.cost("openai", model, TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens))


def llama_cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * 0.2 + output_tokens * 0.6) / 1e6


def reserved(provider: str = "openai", **body: Any) -> TokenUsage:
    """The worst case the guard reserves for a Completions body."""
    return worst_case_usage(subject_from_request({"model": INSTRUCT, **body}, provider=provider))


# --- reserve, send, settle from usage ---------------------------------------------------------------


def test_a_call_is_reserved_for_every_completion_then_settled_from_its_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = ["the quick brown fox", "jumps"]  # 4 + 1 words billed; estimated 5 + 2
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-c1", feature="ac"):
        result = client.completions.create(model=INSTRUCT, prompt=prompts, max_tokens=5, n=2)
    assert result.object == "text_completion"
    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (i, "word word word word word", "length") for i in range(4)]
    (sent,) = server.posts("/v1/completions")
    assert sent.body == {"model": INSTRUCT, "prompt": prompts, "max_tokens": 5, "n": 2}  # sent as asked
    assert reserved(prompt=prompts, max_tokens=5, n=2) == TokenUsage(input_tokens=7, output_tokens=5 * 2 * 2)
    hold, event = reserved_once_and_settled(ledger, sink)
    assert hold.amount_usd == pytest.approx(cost(7, 20))
    assert (event.provider, event.api, event.model_requested, event.model, event.model_served) == (
        "openai", "completions", INSTRUCT, INSTRUCT, INSTRUCT)
    assert (event.input_tokens, event.output_tokens, event.user, event.feature) == (5, 20, "u-c1", "ac")
    assert event.cost_usd == pytest.approx(cost(5, 20)) and event.cost_usd > 0
    assert event.estimated_cost_usd == pytest.approx(cost(7, 20))
    assert spent_today(ledger, "u-c1") == pytest.approx(cost(5, 20), abs=2e-6)
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


def test_best_of_candidates_are_reserved_and_billed_though_one_comes_back(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-c2"):
        result = client.completions.create(model=INSTRUCT, prompt=[[1, 2, 3, 4]], max_tokens=8, best_of=3)
    assert len(result.choices) == 1 and result.usage.completion_tokens == 8 * 3
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4, 24))  # token ids exact, 3 candidates of 8
    (event,) = sink.events
    assert (event.input_tokens, event.output_tokens) == (4, 24)
    assert event.cost_usd == pytest.approx(event.estimated_cost_usd) == pytest.approx(cost(4, 24))


def test_without_max_tokens_openai_is_reserved_for_its_default_of_16(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-c3"):
        result = client.completions.create(model=INSTRUCT, prompt="one two three", n=2)
    assert "max_tokens" not in server.posts("/v1/completions")[-1].body  # OpenAI's own default applies
    assert result.usage.completion_tokens == 20  # 10 words each, under the default 16
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4, 32))  # "one two three" is 13 chars: 4 tokens
    assert sink.events[0].cost_usd == pytest.approx(cost(3, 20))


def test_the_settlement_follows_the_usage_not_the_estimate(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    with attribution(user="u-c4"):
        client.completions.create(model=INSTRUCT, prompt="hi", max_tokens=4, suffix="the rest of the document",
                                  extra_headers={"x-fake-usage": '{"input_tokens": 3000}'})
    (event,) = sink.events
    assert (event.input_tokens, event.output_tokens) == (3000, 4)
    assert event.estimated_cost_usd == pytest.approx(cost(1 + 6, 4))  # the suffix is input: 24 chars, 6 tokens
    assert event.cost_usd == pytest.approx(cost(3000, 4)) and event.cost_usd > event.estimated_cost_usd
    assert spent_today(ledger, "u-c4") == pytest.approx(cost(3000, 4), abs=2e-6)


def test_scoring_with_echo_and_no_output_holds_the_input_alone(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    texts = ["the cat sat", "on the mat today"]  # 3 + 4 words billed; estimated 3 + 4
    with attribution(user="u-cs"):
        result = client.completions.create(model="davinci-002", prompt=texts, max_tokens=0, echo=True, logprobs=0)
    assert [c.text for c in result.choices] == texts  # the prompts back, nothing generated
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(7, 0, "davinci-002"))  # not 2 × 32,768 output tokens
    (event,) = sink.events
    assert (event.input_tokens, event.output_tokens) == (7, 0)
    assert event.cost_usd == pytest.approx(cost(7, 0, "davinci-002")) and event.cost_usd > 0


# --- refused before sending ------------------------------------------------------------------------


def test_a_budget_that_cannot_hold_the_worst_case_refuses_before_sending(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    with own_client(server, budget_guard(0.0005, ledger=ledger, sink=sink)) as client, attribution(user="u-c5"):
        client.completions.create(model=INSTRUCT, prompt="hi", max_tokens=16)  # $0.000034 fits
        with pytest.raises(BudgetExceeded) as caught:  # 4 × 100 output tokens: $0.0008 does not
            client.completions.create(model=INSTRUCT, prompt=["a", "b"], max_tokens=100, best_of=2)
    assert len(server.posts("/v1/completions")) == 1  # the refused call never reached the API
    assert caught.value.decision.blocking[0].policy == "user-budget"
    assert [(e.api, e.outcome) for e in sink.events] == [("completions", "ok"), ("completions", "denied")]
    assert ledger.count("reserve") == 1
    assert spent_today(ledger, "u-c5") == pytest.approx(cost(1, 10), abs=2e-6)


# --- streams ------------------------------------------------------------------------------------------


def test_streams_get_include_usage_and_the_usage_chunk_is_hidden(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    with attribution(user="u-c6"):
        chunks = list(client.completions.create(model=INSTRUCT, prompt="Say it", max_tokens=6, n=2, stream=True))
        own = list(client.completions.create(model=INSTRUCT, prompt="Say it", max_tokens=6, stream=True,
                                             stream_options={"include_usage": True}))
    first, second = server.posts("/v1/completions")
    assert first.body["stream_options"] == {"include_usage": True}
    assert first.headers["accept-encoding"] == "identity"
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk did not reach the caller
    assert "".join(c.choices[0].text for c in chunks if c.choices[0].index == 1) == "word word word word word word"
    assert own[-1].choices == [] and own[-1].usage.completion_tokens == 6  # the caller asked for it: kept
    assert second.body["stream_options"] == {"include_usage": True}
    assert [(e.usage_source, e.stream, e.output_tokens) for e in sink.events] == [("stream", True, 12),
                                                                                  ("stream", True, 6)]
    assert [e.cost_usd for e in sink.events] == [pytest.approx(cost(2, 12)), pytest.approx(cost(2, 6))]
    assert INCLUDE_USAGE in sink.events[0].rewrites and INCLUDE_USAGE not in sink.events[1].rewrites
    assert spent_today(ledger, "u-c6") == pytest.approx(cost(2, 12) + cost(2, 6), abs=2e-6)


@pytest.mark.parametrize("echo", [False, True])
def test_a_stream_cut_before_its_usage_is_charged_its_input_and_the_text_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger, echo: bool
) -> None:
    """The text a legacy stream showed (``choices[].text``, no ``delta``) is what it is charged as
    output; with ``echo`` the prompt it sent back first is input, billed once, not output."""
    prompt = "Tell me a long story about a lighthouse keeper"
    shown = ""
    with connect(server, guard, max_retries=0) as client, attribution(user="u-c7"), \
            pytest.raises(openai.APIConnectionError):
        for chunk in client.completions.create(model=INSTRUCT, prompt=prompt, max_tokens=200, stream=True,
                                               echo=echo, extra_headers={"x-fake-truncate": "6"}):
            shown += chunk.choices[0].text
    words = shown.removeprefix(prompt) if echo else shown
    assert words == (" word" if echo else "word") + " word" * (4 if echo else 5)
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.api) == ("partial", "estimate", "completions")
    estimated_input = subject_from_request({"model": INSTRUCT, "prompt": prompt}).request.input_tokens
    assert (event.input_tokens, event.output_tokens) == (estimated_input, math.ceil(len(words) / CHARS_PER_TOKEN))
    assert event.cost_usd == pytest.approx(cost(event.input_tokens, event.output_tokens))
    assert 0 < event.cost_usd < (event.estimated_cost_usd or 0)
    assert spent_today(ledger, "u-c7") == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_cut_stream_of_a_reasoning_model_is_charged_what_it_showed_not_its_worst_case(
    server: FakeLlmServer, sink: ListSink
) -> None:
    """A Chat stream of gpt-oss cut before its usage is charged its worst case (its reasoning is
    billed and hidden); a Completions one shows all it generated as text, so only that is charged."""
    ledger = CountingLedger(MemoryLedger())
    catalog = CATALOG.replace('"meta-llama/*"', '"openai/gpt-oss-*"')
    guard = budget_guard(5.0, catalog, ledger=ledger, sink=sink)
    shown = ""
    with own_client(server, guard, provider="vllm", max_retries=0) as client, attribution(user="u-oss"), \
            pytest.raises(openai.APIConnectionError):
        for chunk in client.completions.create(model="openai/gpt-oss-20b", prompt="Think step by step:",
                                               max_tokens=4000, stream=True, extra_headers={"x-fake-truncate": "4"}):
            shown += chunk.choices[0].text
    (event,) = sink.events
    assert shown == "word word word word"
    assert (event.outcome, event.input_tokens, event.output_tokens) == ("partial", 5, 5)  # 19 chars shown: 5
    assert event.cost_usd == pytest.approx(llama_cost(5, 5))
    assert event.estimated_cost_usd == pytest.approx(llama_cost(5, 4000))


def test_a_stream_closed_by_the_application_is_charged_what_it_showed(
    client: Any, sink: ListSink, ledger: CountingLedger
) -> None:
    with attribution(user="u-c8"):
        stream = client.completions.create(model=INSTRUCT, prompt="Go on", max_tokens=64, stream=True)
        shown = "".join(next(stream).choices[0].text for _ in range(3))
        stream.close()
    (event,) = sink.events
    assert event.outcome == "partial" and event.error and "closed by the caller" in event.error
    assert (event.input_tokens, event.output_tokens) == (2, math.ceil(len(shown) / CHARS_PER_TOKEN))
    assert spent_today(ledger, "u-c8") == pytest.approx(cost(2, event.output_tokens), abs=2e-6)


# --- failures ---------------------------------------------------------------------------------------


def test_retries_reserve_once_and_exhausted_retries_release(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    retried_then_exhausted(server, ledger, sink, "/v1/completions",
                           lambda text: client.completions.create(model=INSTRUCT, prompt=text, max_tokens=3),
                           cost(2, 3), user="u-c9")


# --- async --------------------------------------------------------------------------------------------


def test_the_async_client_is_guarded_alike(server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger,
                                           sink: ListSink) -> None:
    async def main() -> tuple[Any, list[Any]]:
        async with connect_async(server, guard) as client:
            with attribution(user="u-c10"):
                server.fail_next(500)
                first = await client.completions.create(model=INSTRUCT, prompt=["a b c", "d"], max_tokens=4)
                chunks = [c async for c in await client.completions.create(model=INSTRUCT, prompt="e f",
                                                                           max_tokens=2, stream=True)]
                with pytest.raises(BudgetExceeded):  # 40 prompts × 20 × 4,096 tokens: $6.55 over the $5 budget
                    await client.completions.create(model=INSTRUCT, prompt=["g"] * 40, max_tokens=4096, best_of=20)
                return first, chunks

    first, chunks = asyncio.run(main())
    assert [c.text for c in first.choices] == ["word word word word"] * 2
    assert all(c.choices for c in chunks) and server.posts("/v1/completions")[-1].body["stream_options"] == {
        "include_usage": True}
    assert len(server.posts("/v1/completions")) == 3  # the failed attempt, its retry, the stream; the refused none
    assert ledger.count("reserve") == 2
    spent = spent_today(ledger, "u-c10")  # after the background settlements, whose events may come last
    assert sorted((e.api, e.outcome, e.usage_source, e.input_tokens, e.output_tokens) for e in sink.events) == [
        ("completions", "denied", "none", 0, 0), ("completions", "ok", "response", 4, 8),
        ("completions", "ok", "stream", 2, 2)]
    assert spent == pytest.approx(cost(4, 8) + cost(2, 2), abs=2e-6)


def test_guard_openai_wraps_an_async_client_for_completions(server: FakeLlmServer, guard: CallGuard,
                                                            sink: ListSink) -> None:
    wrapped_async_call(server, guard, lambda c: c.completions.create(model=INSTRUCT, prompt="wrapped async call",
                                                                     max_tokens=7), user="u-c11")
    (event,) = sink.events
    assert (event.api, event.input_tokens, event.output_tokens, event.charged) == ("completions", 3, 7, True)


# --- an OpenAI-compatible server: vLLM ------------------------------------------------------------


def test_vllm_is_priced_by_a_model_catalog_price(server: FakeLlmServer, sink: ListSink) -> None:
    ledger = CountingLedger(MemoryLedger())
    guard = budget_guard(5.0, CATALOG, ledger=ledger, sink=sink)
    with guard_openai(unguarded(server), guard, provider="vllm") as client, attribution(user="u-c12"):
        client.completions.create(model=LLAMA, prompt=["one two", "three"], max_tokens=6, n=2)
        client.completions.create(model=LLAMA, prompt="no cap given")  # vLLM's default is no 16: the clamp
    guard.close()
    capped, uncapped = sink.events
    assert (capped.provider, capped.api, capped.input_tokens, capped.output_tokens) == ("vllm", "completions", 3, 24)
    assert capped.cost_usd == pytest.approx(llama_cost(3, 24))
    assert capped.estimated_cost_usd == pytest.approx(llama_cost(2 + 2, 24))
    assert reserved("vllm", prompt="no cap given").output_tokens == OUTPUT_TOKENS_CAP
    assert ledger.calls[2][0] == "reserve"
    assert ledger.calls[2][2][0].amount_usd == pytest.approx(llama_cost(3, OUTPUT_TOKENS_CAP))
    assert uncapped.cost_usd == pytest.approx(llama_cost(3, 10))
    assert spent_today(ledger, "u-c12") == pytest.approx(llama_cost(3, 24) + llama_cost(3, 10), abs=2e-6)


def test_vllm_without_a_price_is_refused_before_sending(server: FakeLlmServer, sink: ListSink) -> None:
    message = refused_unpriced(server, sink, lambda c: c.completions.create(model="my-own-llm", prompt="hello",
                                                                            max_tokens=5),
                               user="u-c13", provider="vllm")
    assert "no price for model 'my-own-llm'" in message
    assert [(e.provider, e.api, e.outcome) for e in sink.events] == [("vllm", "completions", "denied")]


# --- the built-in library ---------------------------------------------------------------------------


def test_the_builtin_library_allows_a_normal_completions_call(server: FakeLlmServer, builtin_policies: Any) -> None:
    """The library's tiers are of chat models, so they leave legacy Completions alone (a downgrade to
    gpt-4.1-mini would be a 400 there); its budgets hold and charge the call; OpenAI's implied
    ``max_tokens`` of 16 is reserved and not written into the request."""
    sink, ledger = ListSink(), CountingLedger(MemoryLedger())
    with own_client(server, CallGuard(builtin_policies, ledger=ledger, sinks=[sink])) as client:
        with attribution(feature="autocomplete", user="u-c14"):
            client.completions.create(model=INSTRUCT, prompt="def fibonacci(n):", max_tokens=64)
        with attribution(feature="classify", user="u-c15"):
            client.completions.create(model=INSTRUCT, prompt="Label: refund please ->")
    first, second = server.posts("/v1/completions")[-2:]
    assert (first.body["model"], first.body["max_tokens"]) == (INSTRUCT, 64)
    assert second.body == {"model": INSTRUCT, "prompt": "Label: refund please ->"}
    assert [(e.outcome, e.api, e.rewrites) for e in sink.events] == [("ok", "completions", ())] * 2
    reserves = [holds for op, _, holds in ledger.calls if op == "reserve"]
    assert [h.amount_usd for h in reserves[1]] == pytest.approx([cost(6, 16)] * 2)  # user and feature budgets
    assert sink.events[1].cost_usd == pytest.approx(cost(4, 10))
