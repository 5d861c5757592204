"""The call-guard as an ``anthropic`` SDK middleware: the real SDK against a local Messages API."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
import httpx2  # noqa: E402
from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    budget_policy,
    compile_policies,
    proof_total,
    run_load,
)
from fake_llm_server import (  # noqa: E402
    spent_today as user_spent,
)

from costwarden.adapters.events.jsonl import read_events  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded, PolicyViolation  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]
PRICER = GenaiPricer()
CLASSIFY_SIMPLE_ONLY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: classify-simple}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: simple-only
      allowedModels: {byFeature: {classify: ["tier:simple"]}, onViolation: deny}
"""


def cost(model: str, **usage: int) -> float:
    return PRICER.cost("anthropic", model, TokenUsage(**usage))



@pytest.fixture(params=["inline", "background"])
def guard(ledger: CountingLedger, sink: ListSink, request: pytest.FixtureRequest) -> Iterator[CallGuard]:
    """The guard, settling inline and on its settler thread (the helpers read after a flush)."""
    guard = CallGuard(compile_policies(budget_policy(5.0) + "---" + CLASSIFY_SIMPLE_ONLY), ledger=ledger,
                      sinks=[sink], settle_in_background=request.param == "background")
    yield guard
    guard.close()


def connect(server: FakeLlmServer, guard: CallGuard, **options: Any) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], **options)


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with connect(server, guard) as c:
        yield c


# --- before the call ------------------------------------------------------------------------------


def test_denied_call_raises_before_any_http_request(client: Any, server: FakeLlmServer, sink: ListSink) -> None:
    with attribution(feature="classify", user="u-1"), pytest.raises(PolicyViolation) as caught:
        client.messages.create(model="claude-opus-4-6", max_tokens=64, messages=HI)
    assert server.posts() == []
    decision = caught.value.decision
    assert not decision.allowed
    assert [(r.policy, r.rule) for r in decision.blocking] == [("classify-simple", "simple-only")]
    assert "refused before sending" in str(caught.value)
    assert [e.outcome for e in sink.events] == ["denied"]


def test_unknown_model_is_denied_with_the_pricing_error(client: Any, server: FakeLlmServer) -> None:
    with attribution(user="u-1"), pytest.raises(PolicyViolation) as caught:
        client.messages.create(model="acme-private-llm-7", max_tokens=64, messages=HI)
    assert server.posts() == []
    assert "acme-private-llm-7" in str(caught.value) and "no price" in str(caught.value)
    assert not isinstance(caught.value, BudgetExceeded)  # an error of the budget rule, not an overrun


def test_builtin_library_rewrites_reach_the_server(server: FakeLlmServer, builtin_policies: Any) -> None:
    sink = ListSink()
    guard = CallGuard(builtin_policies, ledger=MemoryLedger(), sinks=[sink])
    system = "You label support tickets. " * 800  # ~5,000 tokens: above Haiku 4.5's 4,096 minimum
    with connect(server, guard) as client, attribution(feature="classify", user="u-7", team="support"):
        message = client.messages.create(model="claude-opus-4-6", max_tokens=8192, system=system, messages=HI)
    sent = server.posts("/v1/messages")[-1].body
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] == 256
    assert sent["system"] == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    assert message.model == "claude-haiku-4-5"
    (event,) = sink.events
    assert event.model_requested == "claude-opus-4-6" and event.model == "claude-haiku-4-5"
    assert set(event.rewrites) == {
        "downgrade model to claude-haiku-4-5",
        "clamp max_tokens to 256",
        "add cache_control (5m) at /system",
    }


def test_attribution_from_context_metadata_and_defaults(server: FakeLlmServer, sink: ListSink) -> None:
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=MemoryLedger(), sinks=[sink],
                      defaults={"feature": "default-feature", "user": "default-user", "env": "test"})
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI,
                               metadata={"user_id": "meta-user"})
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)
        with attribution(feature="search", user="ctx-user", team="growth"):
            client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI,
                                   metadata={"user_id": "meta-user"})
    who = [(e.feature, e.user, e.team, dict(e.tags)) for e in sink.events]
    assert who == [
        ("default-feature", "meta-user", None, {"env": "test"}),
        ("default-feature", "default-user", None, {"env": "test"}),
        ("search", "ctx-user", "growth", {"env": "test"}),
    ]


def test_budget_refusal_is_budget_exceeded_and_sends_nothing(server: FakeLlmServer, sink: ListSink) -> None:
    # one call reserves ~$0.00033 (input estimate + 64 output tokens on Haiku 4.5)
    guard = CallGuard(compile_policies(budget_policy(0.0004)), ledger=MemoryLedger(), sinks=[sink])
    with connect(server, guard) as client, attribution(user="u-9"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        with pytest.raises(BudgetExceeded) as caught:
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert len(server.posts()) == 1
    assert "would exceed" in str(caught.value)
    assert [e.outcome for e in sink.events] == ["ok", "denied"]


def test_unreachable_ledger_fails_closed(server: FakeLlmServer) -> None:
    ledger = open_ledger("redis://127.0.0.1:1/0?timeout=0.5")
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger)
    try:
        with connect(server, guard) as client, attribution(user="u-1"), pytest.raises(PolicyViolation) as caught:
            client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)
    finally:
        ledger.close()
    assert server.posts() == []
    assert "127.0.0.1:1" in str(caught.value) or "ledger" in str(caught.value).lower()


# --- settling -------------------------------------------------------------------------------------


def test_settles_the_genai_prices_cost_of_the_returned_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    from genai_prices import Usage, calc_price

    usage = {"input_tokens": 120, "output_tokens": 33, "cache_read_input_tokens": 2000,
             "cache_creation_input_tokens": 500}
    with attribution(user="u-2"):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=HI,
                               extra_headers={"x-fake-usage": json.dumps(usage)})
    expected = float(calc_price(
        Usage(input_tokens=2620, output_tokens=33, cache_read_tokens=2000, cache_write_tokens=500),
        model_ref="claude-sonnet-4-6", provider_id="anthropic",
    ).total_price)
    (event,) = sink.events
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens, event.cache_write_tokens) == (
        120, 33, 2000, 500)
    assert event.charged and event.usage_source == "response"
    assert user_spent(ledger, "u-2") == pytest.approx(expected, abs=1e-6)
    assert [op for op, _, _ in ledger.calls] == ["reserve", "settle"]


def test_retries_reserve_once_and_settle_once(client: Any, server: FakeLlmServer, ledger: CountingLedger,
                                              sink: ListSink) -> None:
    server.fail_next(529, 500)
    with attribution(user="u-3"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert len(server.posts("/v1/messages")) == 3
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1 and ledger.count("release") == 0
    (event,) = sink.events
    assert event.outcome == "ok" and event.cost_usd == pytest.approx(cost("claude-haiku-4-5", input_tokens=42,
                                                                          output_tokens=10))


def test_exhausted_retries_release_the_hold(client: Any, server: FakeLlmServer, ledger: CountingLedger,
                                            sink: ListSink) -> None:
    server.fail_next(529, 529, 529)
    with attribution(user="u-4"), pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert len(server.posts()) == 3
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1
    assert user_spent(ledger, "u-4") == 0
    (event,) = sink.events
    assert (event.outcome, event.cost_usd, event.status_code) == ("error", 0.0, 529)


def test_a_sent_call_that_times_out_is_charged_its_input(server: FakeLlmServer, ledger: CountingLedger,
                                                         sink: ListSink, guard: CallGuard) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0,
                             timeout=0.3) as client, attribution(user="u-5"), pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI,
                               extra_headers={"x-fake-delay-ms": "1500"})
    (event,) = sink.events
    estimate = input_estimate(guard)
    assert event.outcome == "error" and event.usage_source == "estimate"
    assert event.cost_usd == pytest.approx(estimate) and estimate > 0
    assert user_spent(ledger, "u-5") == pytest.approx(estimate, abs=1e-6)


def test_a_call_that_never_connected_is_released(ledger: CountingLedger, sink: ListSink, guard: CallGuard) -> None:
    client = anthropic.Anthropic(base_url="http://127.0.0.1:1", api_key="test", middleware=[guard], max_retries=1)
    with client, attribution(user="u-6"), pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1
    (event,) = sink.events
    assert event.outcome == "error" and event.cost_usd == 0


HI_BODY = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HI}


def input_estimate(guard: CallGuard) -> float:
    from costwarden.adapters.anthropic import subject_from_request

    return guard.estimate(subject_from_request(HI_BODY), output=False) or 0.0


# --- streams --------------------------------------------------------------------------------------


def test_stream_usage_is_tapped(client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger) -> None:
    server.usage = {"input_tokens": 300, "cache_read_input_tokens": 1000}
    with attribution(user="u-7"):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HI) as stream:
            text = "".join(stream.text_stream)
        events = list(client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True))
    assert text and events
    expected = cost("claude-haiku-4-5", input_tokens=300, output_tokens=10, cache_read_tokens=1000)
    assert [(e.outcome, e.usage_source, e.output_tokens) for e in sink.events] == [("ok", "stream", 10)] * 2
    assert [e.cost_usd for e in sink.events] == [pytest.approx(expected)] * 2
    assert user_spent(ledger, "u-7") == pytest.approx(2 * expected, abs=2e-6)


def test_responses_a_transport_answers_from_memory_are_billed(server: FakeLlmServer, guard: CallGuard,
                                                             sink: ListSink, ledger: CountingLedger) -> None:
    """An application's own transport that hands the SDK whole bodies (as test doubles do): a
    stream arrives already read, and is billed from its events, not charged the worst case."""
    import httpx2

    def replay(request: Any) -> Any:  # what the API says, answered from memory
        live = httpx2.post(server.url + request.url.path, content=request.content,
                           headers={"content-type": "application/json", "x-api-key": "test"})
        return httpx2.Response(live.status_code, headers={"content-type": live.headers["content-type"]},
                               content=live.content)

    server.usage = {"input_tokens": 300, "cache_read_input_tokens": 1000}
    own = httpx2.Client(transport=httpx2.MockTransport(replay))
    with anthropic.Anthropic(base_url="https://llm.internal.example", api_key="test", middleware=[guard],
                             http_client=own) as client, attribution(user="u-mem"):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HI) as stream:
            text = "".join(stream.text_stream)
        reply = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert text and reply.content
    expected = cost("claude-haiku-4-5", input_tokens=300, output_tokens=10, cache_read_tokens=1000)
    assert [(e.outcome, e.usage_source) for e in sink.events] == [("ok", "stream"), ("ok", "response")]
    assert [e.cost_usd for e in sink.events] == [pytest.approx(expected)] * 2
    assert user_spent(ledger, "u-mem") == pytest.approx(2 * expected, abs=2e-6)


def test_stream_closed_early_is_charged_what_it_used(client: Any, sink: ListSink) -> None:
    with attribution(user="u-8"), client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HI,
                                extra_headers={"x-fake-event-delay-ms": "30"}) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    (event,) = sink.events
    assert event.outcome == "partial" and event.usage_source == "stream"
    assert event.input_tokens == 42 and 1 <= event.output_tokens < 10
    assert event.cost_usd >= cost("claude-haiku-4-5", input_tokens=42)


def test_stream_dropped_by_the_server_is_charged_what_it_used(client: Any, sink: ListSink) -> None:
    with attribution(user="u-9"), pytest.raises(httpx2.RemoteProtocolError):
        for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True,
                                        extra_headers={"x-fake-truncate": "5"}):
            pass
    (event,) = sink.events
    assert event.outcome == "partial" and event.input_tokens == 42
    assert event.cost_usd >= cost("claude-haiku-4-5", input_tokens=42)


@pytest.mark.parametrize("encoding", ["UTF-8", "none", "gzip, identity", "br"])
def test_a_stream_is_read_as_the_client_reads_its_content_encoding(
    client: Any, server: FakeLlmServer, sink: ListSink, encoding: str
) -> None:
    """httpx reads a Content-Encoding it does not know (a charset sent by mistake, ``none``) and an
    ``identity`` in a list as no coding at all, so the application reads the stream; so must the guard.
    With the ``brotli`` package installed (a dev dependency) the client asks for and decodes ``br``."""
    server.usage = {"input_tokens": 300}
    with attribution(user="u-enc"), client.messages.stream(model="claude-haiku-4-5", max_tokens=4_000, messages=HI,
                                extra_headers={"x-fake-content-encoding": encoding}) as stream:
        text = "".join(stream.text_stream)
    assert text.startswith("word")
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.input_tokens, event.output_tokens) == ("ok", "stream", 300, 10)
    assert event.cost_usd == pytest.approx(cost("claude-haiku-4-5", input_tokens=300, output_tokens=10))


def test_a_stream_that_fails_before_message_start_is_released_like_a_529(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    """Anthropic may answer an overloaded stream 200 with only an ``error`` event: the request was
    refused as it started, as with a 529 status (which is released, not billed), so it costs nothing."""
    with attribution(user="u-ovl"), pytest.raises(anthropic.APIStatusError, match="overloaded_error"), \
            client.messages.stream(model="claude-haiku-4-5", max_tokens=4_000, messages=HI,
                                   extra_headers={"x-fake-stream-error": "overloaded_error"}) as stream:
        for _ in stream:
            pass
    (event,) = sink.events
    assert (event.outcome, event.cost_usd, event.charged) == ("error", 0.0, False)
    assert "overloaded_error" in (event.error or "")
    assert user_spent(ledger, "u-ovl") == 0
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1 and ledger.count("settle") == 0


def test_stream_dropped_before_message_start_is_charged_the_input_estimate(
    client: Any, sink: ListSink, guard: CallGuard
) -> None:
    with attribution(user="u-10"), pytest.raises(httpx2.RemoteProtocolError):
        for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True,
                                        extra_headers={"x-fake-truncate": "0"}):
            pass
    (event,) = sink.events
    assert event.outcome == "partial" and event.usage_source == "estimate"
    assert event.cost_usd == pytest.approx(input_estimate(guard))


def test_post_call_rule_flags_a_prompt_that_missed_the_cache(server: FakeLlmServer, sink: ListSink,
                                                              builtin_policies: Any) -> None:
    guard = CallGuard(builtin_policies, sinks=[sink])
    system = [{"type": "text", "text": "You answer questions. " * 600, "cache_control": {"type": "ephemeral"}}]
    server.usage = {"input_tokens": 3000}
    with connect(server, guard) as client, attribution(feature="qa", user="u-11"):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, system=system, messages=HI)
    (event,) = sink.events
    assert any("neither written to nor read from the cache" in f for f in event.findings)


# --- async, batches -------------------------------------------------------------------------------


def test_async_client(server: FakeLlmServer, sink: ListSink, ledger: CountingLedger, guard: CallGuard) -> None:
    async def main() -> str:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            with attribution(user="u-12"):
                server.fail_next(500)
                await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
                async with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HI) as s:
                    return "".join([t async for t in s.text_stream])

    assert asyncio.run(main())
    assert [(e.outcome, e.usage_source) for e in sink.events] == [("ok", "response"), ("ok", "stream")]
    assert ledger.count("reserve") == 2 and ledger.count("settle") == 2
    assert user_spent(ledger, "u-12") == pytest.approx(sum(e.cost_usd for e in sink.events), abs=2e-6)


def test_async_gather_keeps_calls_apart(server: FakeLlmServer, sink: ListSink, guard: CallGuard) -> None:
    async def one(client: Any, user: str) -> None:
        with attribution(user=user):
            await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            await asyncio.gather(*(one(client, f"g-{i}") for i in range(10)))

    asyncio.run(main())
    assert sorted(e.user for e in sink.events) == sorted(f"g-{i}" for i in range(10))


def test_message_batch_is_judged_per_request_at_the_batch_rate(
    client: Any, server: FakeLlmServer, sink: ListSink, ledger: CountingLedger
) -> None:
    requests = [
        {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": HI}},
        {"custom_id": "b", "params": {"model": "claude-sonnet-4-6", "max_tokens": 200, "messages": HI}},
    ]
    with attribution(user="u-13"):
        batch = client.messages.batches.create(requests=requests)
    assert batch.id.startswith("msgbatch_")
    (event,) = sink.events
    assert event.api == "batch" and event.batch and event.batch_requests == 2
    guard_estimates = [
        PRICER.cost("anthropic", r["params"]["model"], TokenUsage(
            input_tokens=event_input(r["params"]), output_tokens=r["params"]["max_tokens"]), batch=True)
        for r in requests
    ]
    # held at the batch rate until the results are read (tests/e2e/test_anthropic_batches_settle.py)
    assert event.estimated_cost_usd == pytest.approx(sum(guard_estimates))
    assert event.cost_usd == 0.0 and not event.charged
    assert user_spent(ledger, "u-13") == pytest.approx(sum(guard_estimates), abs=2e-6)


def test_a_denied_request_refuses_the_whole_batch(client: Any, server: FakeLlmServer) -> None:
    requests = [
        {"custom_id": "ok", "params": {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HI}},
        {"custom_id": "no", "params": {"model": "claude-opus-4-6", "max_tokens": 10, "messages": HI}},
    ]
    with attribution(feature="classify", user="u-14"), pytest.raises(PolicyViolation):
        client.messages.batches.create(requests=requests)
    assert server.posts() == []


def event_input(params: dict[str, Any]) -> int:
    from costwarden.adapters.anthropic import estimate_input_tokens

    return estimate_input_tokens(params)


# --- the concurrency proof ------------------------------------------------------------------------


def test_cost_events_sum_to_the_ledger_total(client: Any, server: FakeLlmServer, ledger: CountingLedger,
                                             sink: ListSink) -> None:
    server.fail_next(500)
    with attribution(user="u-sum"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        list(client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True))
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HI) as stream:
            next(iter(stream))
    charged = [e.cost_usd for e in sink.events if e.charged]
    assert len(charged) == 3
    assert user_spent(ledger, "u-sum") == pytest.approx(sum(charged), abs=3e-6)


PROOF_LIMIT_USD = 0.012


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "sqlite", "redis", "postgres", "sqlite-background",
                                   "sqlite-leased", "redis-leased"])
def test_concurrency_proof(store: str, server: FakeLlmServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """8 processes × 20 threads (memory: 1 × 160) against one $ budget through the real SDK;
    ``-background``: every guard settles on its settler thread; ``-leased``: every process reserves
    from budget slices (``lease_calls``), settling in the background — each slice may hold a fifth
    of the limit, so slices run out and are refused while others are held, and calls near the
    limit fall back to reserving in the store."""
    store, _, mode = store.partition("-")
    background = mode in ("background", "leased")
    url, processes = _proof_store(store, tmp_path, request)
    if mode == "leased":
        url += ("&" if "?" in url else "?") + "lease_calls=4&lease_share=0.2&lease_s=0.5"
    policy = budget_policy(PROOF_LIMIT_USD, name="proof-budget")
    events_path = tmp_path / "events.jsonl"
    threads = 160 // processes
    if processes == 1:
        results = [run_load(server.url, url, str(events_path), policy, threads, 3, "anthropic", background)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            results = pool.starmap(
                run_load, [(server.url, url, str(events_path), policy, threads, 3, "anthropic", background)] * processes
            )
    admitted = sum(r.admitted for r in results)
    denied = sum(r.denied for r in results)
    assert [e for r in results for e in r.errors] == []
    assert admitted + denied == 160 * 3
    assert admitted > 0 and denied > 0
    events = read_events(events_path)
    assert sum(e["outcome"] == "ok" for e in events) == admitted == len(server.posts("/v1/messages"))
    assert sum(e["outcome"] == "denied" for e in events) == denied
    if store == "memory":
        total = results[0].ledger_total
    else:
        ledger = open_ledger(url)
        try:
            total = proof_total(ledger)
        finally:
            ledger.close()
    charged = sum(round(e["cost_usd"] * 1e6) for e in events if e["charged"]) / 1e6
    assert charged <= PROOF_LIMIT_USD
    per_call = 42 * 1e-6 + 10 * 5e-6  # what the fake server bills on Haiku 4.5
    assert charged == pytest.approx(admitted * per_call, abs=1e-6 * admitted)
    assert total == pytest.approx(charged, abs=1e-9)
    if store == "sqlite" and mode == "leased":  # slices were taken, returned, and admitted most calls
        import sqlite3

        with sqlite3.connect(url.split("?")[0].removeprefix("sqlite:///")) as db:
            states = dict(db.execute("SELECT state, count(*) FROM ledger_reservations WHERE id LIKE 'cw-lease-%' "
                                     "GROUP BY state").fetchall())
        assert set(states) == {"x"} or set(states) == {"x", "r"}  # released; 'r': refused slices
        assert 0 < states["x"] < admitted


def _proof_store(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, int]:
    unique = uuid.uuid4().hex[:8]
    if store == "memory":
        return "memory://", 1
    if store == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db", 8
    if store == "redis":
        from ledger_backends import REDIS_URL

        run = request.getfixturevalue("redis_run")
        return f"{REDIS_URL}?prefix={run}-{unique}&timeout=5", 8
    return f"{request.getfixturevalue('postgres_db')}?table_prefix=t{unique}_&timeout=10", 8



