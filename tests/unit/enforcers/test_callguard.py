"""The call-guard core without HTTP: attribution, judging and fixes, reservations, settling, taps."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from policy_support import FakePricer, compile_text

from costwarden.adapters import anthropic as anthropic_adapter
from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.enforcers.attempt import request_was_sent, retryable_exception, should_retry_status
from costwarden.enforcers.attribution import attribution, current_attribution
from costwarden.enforcers.callguard import CallGuard
from costwarden.enforcers.guarded_call import ProviderEdge, merge_holds
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import BudgetExceeded, LedgerError, PolicyViolation

FIXED_NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
EDGE = ProviderEdge("anthropic", anthropic_adapter.subject_from_request, anthropic_adapter.usage_from_response)
BODY = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]}

BUDGET = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: user-budget}
spec:
  subject: llm_call
  enforcement: {default: deny}
  onError: deny
  rules:
    - name: cap
      budget: {per: [user], limitUsd: 1, window: day}
"""
TEAM_BUDGET = BUDGET.replace("user-budget", "team-budget").replace("[user]", "[team]")
CAP = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: cap-output}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: cap
      maxOutputTokens: {limit: 50}
"""
DENY_OPUS = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: no-opus}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: no-opus
      expr: {cel: "!subject.model.startsWith('claude-opus')", message: "opus is not allowed"}
"""

DOWNGRADE_OPUS = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: simple-only}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: simple
      allowedModels: {default: ["tier:simple"], onViolation: downgrade}
"""


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class RecordingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, Any]] = []

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, **kw: Any
    ) -> Reservation:
        self.ops.append(("reserve", tuple(holds)))
        return super().reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> Any:
        self.ops.append(("settle", cost_usd))
        return super().settle(reservation_id, cost_usd, now=now)

    def release(self, reservation_id: str, *, now: datetime) -> None:
        self.ops.append(("release", None))
        super().release(reservation_id, now=now)


def make_guard(*texts: str, ledger: Any = None, **options: Any) -> tuple[CallGuard, Sink]:
    sink = Sink()
    policies = compile_text(*texts, pricer=FakePricer())
    guard = CallGuard(policies, ledger=ledger, sinks=[sink], clock=lambda: FIXED_NOW, **options)
    return guard, sink


def haiku(input_tokens: int = 0, output_tokens: int = 0) -> float:
    return (input_tokens * 1.0 + output_tokens * 5.0) / 1e6


# --- attribution ----------------------------------------------------------------------------------


def test_attribution_nests_and_merges_tags() -> None:
    with attribution(feature="search", team="growth", env="prod"):
        with attribution(user="u-1", env="staging", region="eu"):
            inner = current_attribution()
        outer = current_attribution()
    assert (inner.feature, inner.user, inner.team) == ("search", "u-1", "growth")
    assert dict(inner.tags) == {"env": "staging", "region": "eu"}
    assert (outer.user, dict(outer.tags)) == (None, {"env": "prod"})
    assert current_attribution().feature is None


def test_attribution_follows_threads_and_tasks() -> None:
    seen: dict[str, str | None] = {}

    def in_thread() -> None:
        seen["thread"] = current_attribution().user

    async def task(name: str) -> str | None:
        with attribution(user=name):
            await asyncio.sleep(0)
            return current_attribution().user

    async def main() -> list[str | None]:
        return list(await asyncio.gather(task("a"), task("b")))

    with attribution(user="main"):
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
    assert seen["thread"] is None  # a new thread starts with an empty context
    assert asyncio.run(main()) == ["a", "b"]


# --- judging --------------------------------------------------------------------------------------


def test_denial_raises_with_the_decision_and_emits_a_denied_event() -> None:
    guard, sink = make_guard(DENY_OPUS)
    with attribution(feature="f", user="u"), pytest.raises(PolicyViolation) as caught:
        guard.begin(EDGE, {**BODY, "model": "claude-opus-4-6"}, key="k")
    assert not isinstance(caught.value, BudgetExceeded)
    assert caught.value.decision.blocking[0].message == "opus is not allowed"
    (event,) = sink.events
    assert (event.outcome, event.verdict, event.feature, event.user) == ("denied", "deny", "f", "u")


def test_a_denied_call_is_reported_for_the_user_its_body_names() -> None:
    """The body's user field attributes a call that carries no user in its context (metadata.user_id
    here): the budget it exceeds is that user's, and so is the denied event, as a sent call's."""
    tight = BUDGET.replace("limitUsd: 1,", "limitUsd: 0.0001,")
    guard, sink = make_guard(tight, ledger=MemoryLedger(), defaults={"user": "default-user", "team": "t"})
    body = {**BODY, "max_tokens": 4000, "metadata": {"user_id": "u-body"}}
    with attribution(feature="f"), pytest.raises(BudgetExceeded) as caught:
        guard.begin(EDGE, body, key="k")
    assert "user=u-body" in caught.value.decision.blocking[0].path
    (event,) = sink.events
    assert (event.outcome, event.user, event.feature, event.team) == ("denied", "u-body", "f", "t")


def test_fixes_apply_to_a_copy_and_are_listed() -> None:
    guard, _ = make_guard(CAP)
    body = {**BODY, "max_tokens": 4000}
    call = guard.begin(EDGE, body, key="k")
    assert call.body["max_tokens"] == 50 and body["max_tokens"] == 4000
    assert call.rewrites == ("clamp max_tokens to 50",)
    assert call.decision.allowed


def test_fixes_off_means_deny() -> None:
    guard, _ = make_guard(CAP, apply_fixes=False)
    with pytest.raises(PolicyViolation):
        guard.begin(EDGE, {**BODY, "max_tokens": 4000}, key="k")


def test_fixes_apply_beside_a_budget_the_unfixed_call_would_exceed() -> None:
    """A budget failure has no fix of its own, but its verdict depends on max_tokens: the clamped
    call fits the budget and is sent, clamped."""
    tight = BUDGET.replace("limitUsd: 1,", "limitUsd: 0.001,")
    ledger = MemoryLedger()
    guard, _ = make_guard(CAP, tight, ledger=ledger)
    assert haiku(output_tokens=4000) > 0.001 > haiku(input_tokens=100, output_tokens=50)
    with attribution(user="u"):
        call = guard.begin(EDGE, {**BODY, "max_tokens": 4000}, key="k")
    assert call.body["max_tokens"] == 50 and call.rewrites == ("clamp max_tokens to 50",)
    key = f"budget:user-budget/cap:user=u:{FIXED_NOW:%Y-%m-%d}"
    held = ledger.spent([key], now=FIXED_NOW)[0]
    assert held == pytest.approx(call.estimate_usd) and held < 0.001  # the clamped call's worst case


def test_a_call_over_budget_even_when_fixed_is_refused_on_its_fixed_form() -> None:
    tighter = BUDGET.replace("limitUsd: 1,", "limitUsd: 0.0001,")
    guard, sink = make_guard(CAP, tighter, DOWNGRADE_OPUS, ledger=MemoryLedger())
    with attribution(user="u"), pytest.raises(BudgetExceeded) as caught:
        guard.begin(EDGE, {**BODY, "model": "claude-opus-4-6", "max_tokens": 4000}, key="k")
    (blocking,) = caught.value.decision.blocking
    assert blocking.policy == "user-budget"  # the clamp and the downgrade applied: only the budget still blocks
    assert blocking.actual == pytest.approx(haiku(input_tokens=3, output_tokens=50), abs=1e-5)
    assert caught.value.request == {**BODY, "model": "claude-haiku-4-5", "max_tokens": 50}
    assert "call to claude-opus-4-6 (rewritten to claude-haiku-4-5) refused" in str(caught.value)
    (event,) = sink.events
    assert (event.model_requested, event.model, event.outcome) == ("claude-opus-4-6", "claude-haiku-4-5", "denied")


def test_budget_overrun_is_budget_exceeded() -> None:
    ledger = MemoryLedger()
    guard, _ = make_guard(BUDGET, ledger=ledger)
    key = f"budget:user-budget/cap:user=rich:{FIXED_NOW:%Y-%m-%d}"
    ledger.reserve("old", [Hold(key, 0.99999, 1.0)], ttl_s=60, now=FIXED_NOW)
    ledger.settle("old", 0.99999, now=FIXED_NOW)
    with attribution(user="rich"), pytest.raises(BudgetExceeded) as caught:
        guard.begin(EDGE, BODY, key="k")
    assert "would exceed" in str(caught.value)


def test_unknown_model_denies_with_a_clear_message() -> None:
    guard, _ = make_guard(BUDGET, ledger=MemoryLedger())
    with attribution(user="u"), pytest.raises(PolicyViolation) as caught:
        guard.begin(EDGE, {**BODY, "model": "acme-private-llm-7"}, key="k")
    assert "acme-private-llm-7" in str(caught.value) and "refused before sending" in str(caught.value)


# --- reservations and settling --------------------------------------------------------------------


def test_one_reservation_holds_every_budget_and_settles_the_real_cost() -> None:
    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, TEAM_BUDGET, ledger=ledger)
    with attribution(user="u", team="t"):
        call = guard.begin(EDGE, BODY, key="k")
    (op, holds), = ledger.ops
    assert op == "reserve" and {h.key.split(":")[1] for h in holds} == {"user-budget/cap", "team-budget/cap"}
    assert call.held and call.estimate_usd == pytest.approx(holds[0].amount_usd)
    call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5-20251001")
    assert ledger.ops[-1] == ("settle", pytest.approx(haiku(40, 7)))
    (event,) = sink.events
    assert (event.outcome, event.charged, event.model_served) == ("ok", True, "claude-haiku-4-5-20251001")
    assert event.cost_usd == pytest.approx(haiku(40, 7))


def test_merge_holds_sums_amounts_on_one_key() -> None:
    holds = merge_holds([Hold("a", 1.0, 5.0), Hold("b", 2.0), Hold("a", 0.5, 5.0)])
    assert [(h.key, h.amount_usd, h.limit_usd) for h in holds] == [("a", 1.5, 5.0), ("b", 2.0, None)]


def test_a_retry_reuses_the_call_and_a_new_call_abandons_a_pending_one() -> None:
    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, ledger=ledger)
    with attribution(user="u"):
        first = guard.begin(EDGE, BODY, key="k1")
        first.error_status(529, final=False)
        assert guard.begin(EDGE, BODY, key="k1", attempt=1) is first
        first.error_status(500, final=False)
        second = guard.begin(EDGE, BODY, key="k2")
    assert second is not first and first.done
    assert [op for op, _ in ledger.ops] == ["reserve", "release", "reserve"]
    assert [(e.outcome, e.cost_usd) for e in sink.events] == [("error", 0.0)]


def test_a_sent_attempt_is_charged_its_input_even_if_a_retry_succeeds() -> None:
    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, ledger=ledger)
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
        call.failed(TimeoutError("read timed out"), sent=True, final=False)
        assert guard.begin(EDGE, BODY, key="k", attempt=1) is call
        call.complete(TokenUsage(input_tokens=40, output_tokens=7))
    input_cost = haiku(call.subject.request.input_tokens)
    assert sink.events[0].cost_usd == pytest.approx(haiku(40, 7) + input_cost)


def test_a_call_that_never_left_is_released() -> None:
    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, ledger=ledger)
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.failed(ConnectionRefusedError(), sent=False, final=True)
    assert ledger.ops[-1] == ("release", None)
    assert (sink.events[0].outcome, sink.events[0].cost_usd) == ("error", 0.0)


def test_cancellation_is_final_and_charges_the_input() -> None:
    guard, sink = make_guard(BUDGET, ledger=MemoryLedger())
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.failed(asyncio.CancelledError(), sent=True, final=False)
    assert call.done and sink.events[0].outcome == "cancelled"
    assert sink.events[0].cost_usd == pytest.approx(haiku(call.subject.request.input_tokens))


def test_finishing_twice_settles_once() -> None:
    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, ledger=ledger)
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.complete(TokenUsage(input_tokens=1))
    call.complete(TokenUsage(input_tokens=2))
    call.failed(RuntimeError(), sent=True, final=True)
    assert [op for op, _ in ledger.ops] == ["reserve", "settle"] and len(sink.events) == 1


def test_usage_of_an_unpriced_served_model_falls_back_to_the_requested_one() -> None:
    guard, sink = make_guard(BUDGET, ledger=MemoryLedger())
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.complete(TokenUsage(input_tokens=10), served_model="mystery-model")
    assert sink.events[0].cost_usd == pytest.approx(haiku(10)) and sink.events[0].error is None


class BrokenLedger(MemoryLedger):
    def __init__(self, *, on: str) -> None:
        super().__init__()
        self.on = on

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, **kw: Any
    ) -> Reservation:
        if self.on == "reserve":
            raise LedgerError("ledger down")
        return super().reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> Any:
        raise LedgerError("ledger down")


def test_a_ledger_that_fails_to_reserve_denies() -> None:
    guard, sink = make_guard(BUDGET, ledger=BrokenLedger(on="reserve"))
    with attribution(user="u"), pytest.raises(PolicyViolation) as caught:
        guard.begin(EDGE, BODY, key="k")
    assert "fail closed" in str(caught.value) and "ledger down" in str(caught.value)
    assert sink.events[0].outcome == "denied"


def test_a_ledger_that_fails_to_settle_is_reported_not_raised() -> None:
    guard, sink = make_guard(BUDGET, ledger=BrokenLedger(on="settle"))
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.complete(TokenUsage(input_tokens=10))
    (event,) = sink.events
    assert not event.charged and "ledger down" in (event.error or "")


class FlakyLedger(MemoryLedger):
    """Settles fail ``failures`` times (a Redis timeout, a dropped connection), then work."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.settles = 0

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> Any:
        self.settles += 1
        if self.failures:
            self.failures -= 1
            raise LedgerError("timeout reading from 127.0.0.1:6379")
        return super().settle(reservation_id, cost_usd, now=now)


def test_a_settle_the_ledger_fails_once_is_retried_so_the_spend_is_not_lost() -> None:
    ledger = FlakyLedger(failures=1)
    guard, sink = make_guard(BUDGET, ledger=ledger)
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")
    call.complete(TokenUsage(input_tokens=10))
    (event,) = sink.events
    assert event.charged and event.error is None and ledger.settles == 2
    [budget] = ledger.status(now=FIXED_NOW)
    assert (budget.spent_usd, budget.held_usd) == (pytest.approx(haiku(10)), 0)


def test_a_failing_sink_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def emit(self, event: Any) -> None:
            raise ValueError("disk full")

        def close(self) -> None:
            pass

    sink = Sink()
    guard = CallGuard(compile_text(CAP, pricer=FakePricer()), sinks=[Broken(), sink], clock=lambda: FIXED_NOW)
    guard.begin(EDGE, BODY, key="k").complete(TokenUsage(input_tokens=1))
    assert len(sink.events) == 1 and "disk full" in caplog.text


def test_content_is_recorded_only_when_enabled() -> None:
    for record in (False, True):
        guard, sink = make_guard(CAP, record_content=record)
        guard.begin(EDGE, BODY, key="k").complete(TokenUsage(input_tokens=1), completion=[{"text": "secret"}])
        event = sink.events[0]
        assert (event.prompt is not None, event.completion is not None) == (record, record)
        assert ("secret" in json.dumps(event.to_dict())) == record


def test_a_batch_is_one_reservation_at_the_batch_rate() -> None:
    from costwarden.enforcers.anthropic_guard import BATCHES

    ledger = RecordingLedger()
    guard, sink = make_guard(BUDGET, CAP, ledger=ledger)
    body = {"requests": [{"custom_id": str(i), "params": {**BODY, "max_tokens": 400}} for i in range(3)]}
    with attribution(user="u"):
        call = guard.begin(BATCHES, body, key="k")
    assert [r["params"]["max_tokens"] for r in call.body["requests"]] == [50, 50, 50]
    assert body["requests"][0]["params"]["max_tokens"] == 400
    (op, holds), = ledger.ops
    assert len(holds) == 1  # three holds on one key, merged
    call.charge_estimate()
    one = haiku(call.subject.request.input_tokens, 50) * 0.5
    assert sink.events[0].cost_usd == pytest.approx(3 * one) and sink.events[0].batch_requests == 3


# --- taps -----------------------------------------------------------------------------------------


def _tap(sse: bool, encoding: str | None = None, **kw: Any) -> tuple[Any, list[tuple[bool, Any]]]:
    pytest.importorskip("httpx2")
    from costwarden.enforcers.bodytap import BodyTap

    ends: list[tuple[bool, Any]] = []
    tap = BodyTap(sse=sse, content_encoding=encoding, on_end=lambda t, c, e: ends.append((c, e)), **kw)
    return tap, ends


def test_anthropic_stream_usage_across_chunk_boundaries() -> None:
    from costwarden.enforcers.anthropic_guard import AnthropicStream

    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-haiku-4-5-x",'
        b'"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":5}}}\n\n'
        b'event: content_block_delta\n'
        b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"abcd"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":6}}\n\n'
    )
    observer = AnthropicStream()
    tap, ends = _tap(True, observer=observer)
    out = b"".join(tap.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    tap.end(True)
    assert out == stream and ends == [(True, None)]
    assert observer.model == "claude-haiku-4-5-x" and observer.finished
    assert observer.usage() == TokenUsage(input_tokens=11, output_tokens=6, cache_read_tokens=5)


def test_anthropic_stream_cut_before_its_delta_counts_the_text_seen() -> None:
    from costwarden.enforcers.anthropic_guard import AnthropicStream

    observer = AnthropicStream()
    observer.on_event('{"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}')
    observer.on_event('{"type":"content_block_delta","delta":{"type":"text_delta","text":"' + "x" * 40 + '"}}')
    assert not observer.finished and observer.usage() == TokenUsage(input_tokens=11, output_tokens=10)


def test_a_cut_stream_keeps_the_web_searches_its_events_reported() -> None:
    from costwarden.enforcers.anthropic_guard import AnthropicStream

    observer = AnthropicStream()
    observer.on_event('{"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1,'
                      '"server_tool_use":{"web_search_requests":2}}}}')
    observer.on_event('{"type":"content_block_delta","delta":{"type":"text_delta","text":"' + "x" * 40 + '"}}')
    assert observer.usage() == TokenUsage(input_tokens=11, output_tokens=10, web_search_requests=2)


def test_gzip_json_body_is_decoded() -> None:
    tap, _ = _tap(False, "gzip")
    payload = gzip.compress(json.dumps({"usage": {"input_tokens": 3}}).encode())
    for i in range(0, len(payload), 5):
        assert tap.feed(payload[i : i + 5]) == payload[i : i + 5]
    assert json.loads(bytes(tap.body)) == {"usage": {"input_tokens": 3}}


def test_filtering_drops_only_the_rejected_event_and_flushes_the_last_one() -> None:
    class DropB:
        def on_event(self, data: str) -> bool:
            return data != "b"

    tap, _ = _tap(True, observer=DropB(), filtering=True)
    out = tap.feed(b"data: a\n\ndata: b\n\ndat") + tap.feed(b"a: c")
    out += tap.flush()
    assert out == b"data: a\n\ndata: c\n"


def test_brotli_is_decoded_as_the_client_decodes_it() -> None:
    import brotli

    events = b"data: a\n\ndata: b\n\n"
    seen: list[str] = []

    class Keep:
        def on_event(self, data: str) -> bool:
            seen.append(data)
            return True

    tap, _ = _tap(True, "br", observer=Keep())
    payload = brotli.compress(events)
    out = b"".join(tap.feed(payload[i : i + 3]) for i in range(0, len(payload), 3))
    assert out == payload and not tap.undecodable and seen == ["a", "b"]
    broken, _ = _tap(True, "br")
    assert broken.feed(b"\x00\x01not brotli") == b"\x00\x01not brotli" and broken.undecodable


def test_a_coding_the_client_cannot_decode_is_passed_through_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    from httpx2 import _decoders

    monkeypatch.delitem(_decoders.SUPPORTED_DECODERS, "br")  # as httpx2 does without a brotli package
    tap, _ = _tap(True, "br")
    assert tap.feed(b"\x00\x01") == b"\x00\x01" and tap.undecodable
    gz, _ = _tap(True, "gzip, br")
    assert gz.undecodable


def test_openai_observer_hides_only_the_usage_chunk_it_asked_for() -> None:
    from costwarden.enforcers.openai_stream import OpenAIStream

    observer = OpenAIStream(drop_usage_chunk=True)
    assert observer.on_event('{"model":"m","choices":[{"delta":{"content":"abcdefgh"}}],"usage":null}')
    assert not observer.on_event('{"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}')
    assert observer.on_event("[DONE]")
    assert observer.usage() == TokenUsage(input_tokens=9, output_tokens=2) and observer.output_estimate() == 2


# --- attempt outcomes -----------------------------------------------------------------------------


def test_sent_and_retryable_are_read_from_the_exception_chain() -> None:
    class ConnectError(Exception): ...

    class ReadTimeout(Exception): ...

    class APIConnectionError(Exception): ...

    def wrapped(inner: Exception) -> Exception:
        try:
            raise APIConnectionError() from inner
        except APIConnectionError as exc:
            return exc

    assert not request_was_sent(wrapped(ConnectError()))
    assert request_was_sent(wrapped(ReadTimeout()))
    assert request_was_sent(asyncio.CancelledError())
    assert retryable_exception(wrapped(ReadTimeout())) and not retryable_exception(ValueError())
    assert not retryable_exception(asyncio.CancelledError())
    assert should_retry_status(529, None) and should_retry_status(429, None) and not should_retry_status(400, None)
    assert not should_retry_status(500, "false") and should_retry_status(400, "true")


def test_client_max_retries_is_found_in_the_middleware_chain() -> None:
    pytest.importorskip("httpx2")
    from costwarden.enforcers.anthropic_guard import client_max_retries

    class Client:
        _middleware = ()
        max_retries = 7

    client = Client()

    def base(request: Any) -> Any:
        return client

    def outer(request: Any) -> Any:
        return base(request)

    assert client_max_retries(base) == 7 and client_max_retries(outer) == 7
    assert client_max_retries(len) is None


def test_an_accounting_bug_after_the_response_charges_the_estimate_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from costwarden.enforcers.attempt import safely

    guard, sink = make_guard(BUDGET, ledger=MemoryLedger())
    with attribution(user="u"):
        call = guard.begin(EDGE, BODY, key="k")

    def broken() -> None:
        raise KeyError("oops")

    safely(call, broken)
    (event,) = sink.events
    assert event.usage_source == "estimate" and event.cost_usd == pytest.approx(call.estimate_usd)
    assert "accounting failed" in (event.error or "") and "accounting failed" in caplog.text


def test_reservation_ids_are_unique_in_a_process_and_across_a_fork() -> None:
    import os

    from costwarden.enforcers.reservations import reservation_id as _reservation_id

    ids = {_reservation_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(i.startswith("cw-") for i in ids)
    if not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, _reservation_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    os.close(write)
    parent = _reservation_id()
    assert child not in ids and child.split("-")[1] != parent.split("-")[1]  # a prefix of its own


def test_post_call_findings_are_judged_for_the_event_only() -> None:
    caching = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: caching}
spec:
  subject: llm_call
  enforcement: {default: warn}
  rules:
    - name: cache
      requirePromptCaching: {minTokens: 10}
"""
    system = [{"type": "text", "text": "You are terse. " * 50, "cache_control": {"type": "ephemeral"}}]
    body = {**BODY, "system": system}
    guard, sink = make_guard(caching)
    guard.begin(EDGE, body, key="k").complete(TokenUsage(input_tokens=9000, output_tokens=5))
    (event,) = sink.events
    assert any("neither written to nor read from the cache" in f for f in event.findings)
    quiet, _ = make_guard(caching)
    quiet.sinks = ()
    judged: list[Any] = []
    quiet.post_policies = type("Spy", (), {"evaluate": lambda *a, **k: judged.append(a)})()  # type: ignore[assignment]
    quiet.begin(EDGE, body, key="k").complete(TokenUsage(input_tokens=9000, output_tokens=5))
    assert judged == []  # nothing would receive the findings, so the post-call phase is not judged


WARN_BUDGET = BUDGET.replace("enforcement: {default: deny}", "enforcement: {default: deny, runtime: warn}")


def _spend(ledger: MemoryLedger, user: str, amount: float) -> str:
    key = f"budget:user-budget/cap:user={user}:{FIXED_NOW:%Y-%m-%d}"
    ledger.reserve(f"old-{user}", [Hold(key, amount)], ttl_s=60, now=FIXED_NOW)
    ledger.settle(f"old-{user}", amount, now=FIXED_NOW)
    return key


def test_a_budget_that_only_warns_at_runtime_warns_and_never_refuses() -> None:
    ledger = MemoryLedger()
    guard, _ = make_guard(WARN_BUDGET, ledger=ledger)
    key = _spend(ledger, "rich", 1.5)  # already over the $1 limit
    with attribution(user="rich"):
        call = guard.begin(EDGE, BODY, key="k")  # a deny-only budget would raise BudgetExceeded here
    (result,) = call.decision.results
    assert (result.result, result.effect) == ("warn", "warn") and "would exceed" in result.message
    call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    assert sum(ledger.spent([key], now=FIXED_NOW)) == pytest.approx(1.5 + haiku(40, 7))


class UnderReportingLedger(MemoryLedger):
    """Reports no spend while judging, as a ledger read just before another process's settle would."""

    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        return [0.0 for _ in keys]


def test_a_warn_only_budget_refused_at_reservation_holds_without_its_limit() -> None:
    ledger = UnderReportingLedger()
    guard, _ = make_guard(WARN_BUDGET, ledger=ledger)
    key = _spend(ledger, "racer", 0.999999)
    with attribution(user="racer"):
        call = guard.begin(EDGE, BODY, key="k")  # judged a pass with a hold; the store refuses it
    assert call.held and call.decision.results[0].result == "pass"
    call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    assert MemoryLedger.spent(ledger, [key], now=FIXED_NOW)[0] == pytest.approx(0.999999 + haiku(40, 7))


def test_the_same_race_on_an_enforced_budget_is_refused() -> None:
    ledger = UnderReportingLedger()
    guard, _ = make_guard(BUDGET, ledger=ledger)
    _spend(ledger, "racer", 0.999999)
    with attribution(user="racer"), pytest.raises(BudgetExceeded):
        guard.begin(EDGE, BODY, key="k")


class FailsOnRetryLedger(UnderReportingLedger):
    """Refuses the first reservation (another process took the budget), then goes down."""

    def __init__(self) -> None:
        super().__init__()
        self.reserves = 0

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, **kw: Any
    ) -> Reservation:
        self.reserves += 1
        if self.reserves > 2:  # the first is _spend's own
            raise LedgerError("ledger down")
        return super().reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)


def test_a_ledger_outage_on_the_warn_only_retry_applies_the_fail_mode() -> None:
    """The retry without limits is a second reservation, and the ledger can fail on it too: that
    is an outage like any other (fail closed for an enforced budget), never a raw exception."""
    ledger = FailsOnRetryLedger()
    guard, sink = make_guard(WARN_BUDGET, ledger=ledger)
    _spend(ledger, "racer", 0.999999)
    with attribution(user="racer"):
        call = guard.begin(EDGE, BODY, key="k")  # the warn-only budget is not enforced: goes ahead
    assert not call.held and call.reservation_id is None and ledger.reserves == 3

    both = WARN_BUDGET + "---\n" + BUDGET.replace("user-budget", "enforced-budget")
    ledger = FailsOnRetryLedger()
    guard, sink = make_guard(both, ledger=ledger)
    _spend(ledger, "racer", 0.999999)
    with attribution(user="racer"), pytest.raises(PolicyViolation) as caught:
        guard.begin(EDGE, BODY, key="k")
    assert "fail closed" in str(caught.value) and "ledger down" in str(caught.value)
    assert sink.events[-1].outcome == "denied"


def test_a_budget_that_warns_when_exceeded_is_not_refused_in_a_race_either() -> None:
    ledger = UnderReportingLedger()
    warn_on_exceed = BUDGET.replace("window: day}", "window: day, onExceed: warn}")
    guard, _ = make_guard(warn_on_exceed, ledger=ledger)
    key = _spend(ledger, "racer", 0.999999)
    with attribution(user="racer"):
        call = guard.begin(EDGE, BODY, key="k")
    assert call.held and call.decision.results[0].effect == "deny"  # the policy denies; the rule only warns
    call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    assert MemoryLedger.spent(ledger, [key], now=FIXED_NOW)[0] == pytest.approx(0.999999 + haiku(40, 7))


def test_a_warn_only_budget_over_its_limit_keeps_its_limit_for_alerts_and_status() -> None:
    """Over the limit, a budget that only warns holds each call unchecked (never refused) but with
    its limit, so the settlement that passes 100 % alerts and ``status`` still shows the limit."""
    ledger = MemoryLedger()
    alerts: list[Alert] = []
    guard, _ = make_guard(WARN_BUDGET.replace("window: day}", "window: day, alertAt: [1.0]}"), ledger=ledger,
                          on_alert=alerts.append)
    key = _spend(ledger, "rich", 0.99999)
    with attribution(user="rich"):
        call = guard.begin(EDGE, BODY, key="k")
    assert call.held and call.decision.results[0].result == "warn"
    call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    total = 0.99999 + haiku(40, 7)
    assert alerts == [Alert(key, 1.0, pytest.approx(total), 1.0)]
    (row,) = ledger.status(now=FIXED_NOW)
    assert (row.key, row.spent_usd, row.limit_usd) == (key, pytest.approx(total), 1.0)


def test_alerts_are_logged_and_reported_with_thresholds_under_one_percent(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    alerts: list[Alert] = []
    guard, sink = make_guard(BUDGET.replace("window: day}", "window: day, alertAt: [0.000001, 0.5]}"),
                             ledger=ledger, on_alert=alerts.append)
    with attribution(user="a"):
        call = guard.begin(EDGE, BODY, key="k")
    with caplog.at_level("WARNING", logger="costwarden.callguard"):
        call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    key = f"budget:user-budget/cap:user=a:{FIXED_NOW:%Y-%m-%d}"
    assert [a.threshold for a in alerts] == [0.000001]
    text = f"{key} crossed 0.0001% ($0.0001 of $1.00)"
    assert str(alerts[0]) == text and sink.events[0].alerts == (text,)
    assert f"budget {text}" in caplog.text


def test_alerts_reach_sinks_that_take_them_and_a_failing_receiver_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AlertSink(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.alerts: list[Alert] = []

        def alert(self, alert: Alert) -> None:
            self.alerts.append(alert)

    def broken(alert: Alert) -> None:
        raise RuntimeError("pager down")

    taker, plain = AlertSink(), Sink()
    policies = compile_text(BUDGET.replace("window: day}", "window: day, alertAt: [0.000001]}"), pricer=FakePricer())
    guard = CallGuard(policies, ledger=MemoryLedger(), sinks=[plain, taker], clock=lambda: FIXED_NOW,
                      on_alert=broken)
    with attribution(user="b"):
        call = guard.begin(EDGE, BODY, key="k")
    with caplog.at_level("ERROR", logger="costwarden.callguard"):
        call.complete(TokenUsage(input_tokens=40, output_tokens=7), served_model="claude-haiku-4-5")
    assert [a.threshold for a in taker.alerts] == [0.000001]
    assert "pager down" in caplog.text and plain.events[0].alerts == taker.events[0].alerts == (str(taker.alerts[0]),)
