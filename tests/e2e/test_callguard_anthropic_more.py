"""The call-guard with more of the ``anthropic`` SDK: extended thinking under a clamp, the Bedrock and
Vertex clients, token counting. The real SDK against the local fake API."""

from __future__ import annotations

from collections.abc import Iterator
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
)
from guard_support import calls_holding  # noqa: E402

from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]
PRICER = GenaiPricer()


def output_cap(limit: int) -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: output-cap}}
spec:
  subject: llm_call
  enforcement: {{default: deny}}
  rules:
    - name: cap
      maxOutputTokens: {{limit: {limit}}}
"""


@pytest.fixture
def guard(ledger: CountingLedger, sink: ListSink) -> Iterator[CallGuard]:
    guard = CallGuard(compile_policies(budget_policy(5.0) + "---" + output_cap(2000)), ledger=ledger, sinks=[sink])
    yield guard
    guard.close()


def connect(server: FakeLlmServer, guard: CallGuard, **options: Any) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], **options)


def sent(server: FakeLlmServer, suffix: str = "/v1/messages") -> dict[str, Any]:
    body = server.posts(suffix)[-1].body
    assert isinstance(body, dict)
    return body


# --- extended thinking under a max_tokens clamp ------------------------------------------------


def test_a_clamp_keeps_the_thinking_budget_below_max_tokens(server: FakeLlmServer, guard: CallGuard,
                                                            sink: ListSink) -> None:
    """The API refuses ``budget_tokens >= max_tokens``: a clamp to 2000 must not send 10000 of thinking."""
    client = connect(server, guard)
    with attribution(user="u-think"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=16000, messages=HI,
                               thinking={"type": "enabled", "budget_tokens": 10000})
    body = sent(server)
    assert body["max_tokens"] == 2000
    assert 1024 <= body["thinking"]["budget_tokens"] < 2000
    assert body["thinking"]["budget_tokens"] == 10000 * 2000 // 16000  # the caller's share kept for the answer
    event = sink.events[-1]
    assert event.outcome == "ok"
    assert any("thinking.budget_tokens" in r for r in event.rewrites), event.rewrites


def test_a_clamp_below_the_thinking_minimum_turns_thinking_off(server: FakeLlmServer, ledger: CountingLedger,
                                                               sink: ListSink) -> None:
    guard = CallGuard(compile_policies(output_cap(800)), ledger=ledger, sinks=[sink])
    with attribution(user="u-think"):
        connect(server, guard).messages.create(model="claude-haiku-4-5", max_tokens=4000, messages=HI,
                                               thinking={"type": "enabled", "budget_tokens": 2000})
    body = sent(server)
    assert body["max_tokens"] == 800
    assert body["thinking"] == {"type": "disabled"}  # no budget >= 1024 fits under 800
    assert any("thinking off" in r for r in sink.events[-1].rewrites)


def test_a_valid_thinking_budget_under_the_clamp_is_sent_as_asked(server: FakeLlmServer, guard: CallGuard) -> None:
    with attribution(user="u-think"):
        connect(server, guard).messages.create(model="claude-haiku-4-5", max_tokens=16000, messages=HI,
                                               thinking={"type": "enabled", "budget_tokens": 1500})
    assert sent(server)["thinking"] == {"type": "enabled", "budget_tokens": 1500}


def test_interleaved_thinking_keeps_a_budget_above_max_tokens(server: FakeLlmServer, guard: CallGuard) -> None:
    """With interleaved thinking the budget spans the turn and may exceed ``max_tokens``: left alone."""
    with attribution(user="u-think"):
        connect(server, guard).beta.messages.create(
            model="claude-haiku-4-5", max_tokens=16000, messages=HI,
            thinking={"type": "enabled", "budget_tokens": 10000}, betas=["interleaved-thinking-2025-05-14"])
    body = sent(server)
    assert body["max_tokens"] == 2000 and body["thinking"]["budget_tokens"] == 10000


def test_a_clamped_batch_request_keeps_its_thinking_valid(server: FakeLlmServer, guard: CallGuard) -> None:
    params = {"model": "claude-haiku-4-5", "max_tokens": 16000, "messages": HI,
              "thinking": {"type": "enabled", "budget_tokens": 10000}}
    with attribution(user="u-think"):
        connect(server, guard).messages.batches.create(
            requests=[{"custom_id": "a", "params": params},
                      {"custom_id": "b", "params": {**params, "max_tokens": 900, "thinking": {"type": "disabled"}}}])
    first, second = (r["params"] for r in sent(server, "/v1/messages/batches")["requests"])
    assert first["max_tokens"] == 2000 and first["thinking"]["budget_tokens"] < 2000
    assert second["max_tokens"] == 900 and second["thinking"] == {"type": "disabled"}


def test_a_retried_clamped_call_sends_the_same_fitted_body(server: FakeLlmServer, guard: CallGuard,
                                                           ledger: CountingLedger) -> None:
    server.fail_next(529)
    with attribution(user="u-think"):
        connect(server, guard, max_retries=2).messages.create(
            model="claude-haiku-4-5", max_tokens=16000, messages=HI,
            thinking={"type": "enabled", "budget_tokens": 10000})
    first, second = (p.body for p in server.posts("/v1/messages"))
    assert first == second and first["thinking"]["budget_tokens"] < first["max_tokens"]
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1


# --- Bedrock and Vertex clients ------------------------------------------------------------------


BEDROCK_HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def test_a_bedrock_client_is_judged_and_priced_as_bedrock(server: FakeLlmServer, guard: CallGuard, sink: ListSink,
                                                          ledger: CountingLedger) -> None:
    """Bedrock's model ids have no Anthropic price: judged as ``anthropic`` every call was refused."""
    client = anthropic.AnthropicBedrock(base_url=server.url, api_key="test", aws_region="us-east-1",
                                        middleware=[guard])
    with attribution(user="u-bedrock"):
        message = client.messages.create(model=BEDROCK_HAIKU, max_tokens=100, messages=HI)
    assert message.usage.input_tokens == 42
    assert server.posts()[-1].path == f"/model/{BEDROCK_HAIKU}/invoke"
    event = sink.events[-1]
    assert (event.provider, event.outcome, event.charged) == ("bedrock", "ok", True)
    expected = PRICER.cost("bedrock", BEDROCK_HAIKU, TokenUsage(input_tokens=42, output_tokens=10))
    assert event.cost_usd == pytest.approx(expected)
    assert ledger.count("reserve") == 1 and ("settle", event.reservation_id, event.cost_usd) in ledger.calls


def test_an_async_bedrock_client_is_priced_as_bedrock(server: FakeLlmServer, guard: CallGuard,
                                                      sink: ListSink) -> None:
    import asyncio

    async def run() -> None:
        async with anthropic.AsyncAnthropicBedrock(base_url=server.url, api_key="test", aws_region="us-east-1",
                                                   middleware=[guard]) as client:
            with attribution(user="u-bedrock"):
                await client.messages.create(model=BEDROCK_HAIKU, max_tokens=100, messages=HI)

    asyncio.run(run())
    assert (sink.events[-1].provider, sink.events[-1].outcome) == ("bedrock", "ok")


@pytest.mark.parametrize("stream", [False, True])
def test_a_vertex_client_is_reported_as_vertex_ai(server: FakeLlmServer, guard: CallGuard, sink: ListSink,
                                                  stream: bool) -> None:
    client = anthropic.AnthropicVertex(base_url=server.url, access_token="test", region="us-east5",
                                       project_id="proj", middleware=[guard])
    with attribution(user="u-vertex"):
        if stream:
            with client.messages.stream(model="claude-haiku-4-5@20251001", max_tokens=100, messages=HI) as s:
                s.until_done()
        else:
            client.messages.create(model="claude-haiku-4-5@20251001", max_tokens=100, messages=HI)
    assert server.posts()[-1].path.endswith(":streamRawPredict" if stream else ":rawPredict")
    event = sink.events[-1]
    assert (event.provider, event.outcome, event.stream) == ("vertex_ai", "ok", stream)
    expected = PRICER.cost("vertex_ai", "claude-haiku-4-5@20251001", TokenUsage(input_tokens=42, output_tokens=10))
    assert event.cost_usd == pytest.approx(expected)


# --- endpoints that cost nothing -------------------------------------------------------------------


def test_count_tokens_reserves_and_charges_nothing(server: FakeLlmServer, guard: CallGuard,
                                                   ledger: CountingLedger, sink: ListSink) -> None:
    client = connect(server, guard, max_retries=0)
    with attribution(user="u-count"), pytest.raises(anthropic.NotFoundError):  # the fake has no count_tokens
        client.messages.count_tokens(model="claude-haiku-4-5", messages=HI)
    assert server.posts()[-1].path.startswith("/v1/messages/count_tokens")
    assert ledger.calls == [] and sink.events == []


@pytest.mark.parametrize("cut_after", [0, 5])
def test_a_thinking_stream_cut_before_its_usage_is_charged_max_tokens(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, cut_after: int
) -> None:
    # Claude 4 streams a summary of its thinking and bills all of it: a cut stream cannot say how
    # much it thought, so it is charged the bound it was reserved for (max_tokens), never less
    with connect(server, guard, max_retries=0) as client, attribution(user="u-think"), \
            pytest.raises(httpx2.RemoteProtocolError):
        for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=1500, messages=HI, stream=True,
                                        thinking={"type": "enabled", "budget_tokens": 1024},
                                        extra_headers={"x-fake-truncate": str(cut_after)}):
            pass
    (event,) = sink.events
    assert event.outcome == "partial" and event.output_tokens == 1500
    assert "charged max_tokens (1500)" in (event.error or "")
    assert event.cost_usd >= PRICER.cost("anthropic", "claude-haiku-4-5", TokenUsage(output_tokens=1500))


def test_a_cut_stream_without_thinking_is_still_charged_what_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink
) -> None:
    with connect(server, guard, max_retries=0) as client, attribution(user="u-nothink"), \
            pytest.raises(httpx2.RemoteProtocolError):
        for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=1500, messages=HI, stream=True,
                                        extra_headers={"x-fake-truncate": "5"}):
            pass
    (event,) = sink.events
    assert event.outcome == "partial" and event.output_tokens < 1500 and "max_tokens" not in (event.error or "")


# --- what the guard keeps after a call ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_finished_call_and_its_prompt_are_not_kept_by_the_guard(server: FakeLlmServer, guard: CallGuard,
                                                                  stream: bool) -> None:
    marker = f"secret-prompt-{stream}"
    client = connect(server, guard)
    messages = [{"role": "user", "content": marker}]
    with attribution(user="u-1"):
        if stream:
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=messages) as events:
                events.until_done()
            del events  # the application's own handle on the response
        else:
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
        guard.flush()
        assert calls_holding(marker) == []  # not even for a retry in this thread: none can follow


def test_a_call_that_will_be_retried_is_kept_until_its_retry(server: FakeLlmServer, guard: CallGuard,
                                                             ledger: CountingLedger) -> None:
    server.fail_next(529)  # overloaded: the SDK retries
    client = connect(server, guard, max_retries=1)
    with attribution(user="u-1"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                               messages=[{"role": "user", "content": "retried-prompt"}])
    guard.flush()
    assert len(server.posts("/v1/messages")) == 2
    # the retry found the call: one reservation for both attempts, settled once
    assert [op for op, _, _ in ledger.calls] == ["reserve", "settle"]
    assert calls_holding("retried-prompt") == []
