"""One logical LLM call under the guard, from its decision to its settlement and cost event.

A :class:`GuardedCall` is created by :meth:`CallGuard.begin` once per logical call (SDK retries
share it) and finished exactly once — by its usage, by a failure, or by being abandoned — which
settles or releases its reservation and emits one cost event. Finishing is thread-safe, because a
stream may be closed by the application and collected by the garbage collector at the same time.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from costwarden.engine.decision import Decision, SubjectRef
from costwarden.engine.ledger import Alert, Hold
from costwarden.engine.pricing import cost_in_context, price_context
from costwarden.engine.subjects import LlmCall, TokenUsage
from costwarden.errors import LedgerError, UnknownReservation, describe

if TYPE_CHECKING:
    from costwarden.adapters.events.event import Outcome, UsageSource
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.engine.evaluate import PolicySet

log = logging.getLogger("costwarden.callguard")

SubjectBuilder = Callable[..., LlmCall]
_UNSET = object()
SETTLE_ATTEMPTS = 2
SETTLE_RETRY_S = 0.05
"""A settle the ledger failed (a Redis timeout, a dropped connection) is tried once more after
this pause before the call is reported unsettled (its hold would lapse at the TTL, its spend lost)."""
_CONTENT_KEYS = ("system", "instructions", "tools", "messages", "input")


@dataclass(frozen=True, slots=True)
class ProviderEdge:
    """What the core needs from a provider: its name, subject builder and usage reader.

    ``batch_items`` is set for batch endpoints: it lists ``(json_pointer, request_body)`` for each
    request inside the batch body.
    """

    name: str
    subject: SubjectBuilder
    usage: Callable[[Mapping[str, Any]], TokenUsage]
    batch_items: Callable[[Mapping[str, Any]], Iterable[tuple[str, Mapping[str, Any]]]] | None = None


def merge_holds(holds: Iterable[Hold]) -> list[Hold]:
    """Holds on the same key summed into one, so an all-or-nothing reserve checks their total."""
    holds = tuple(holds)
    if len(holds) < 2:
        return list(holds)
    merged: dict[str, Hold] = {}
    for hold in holds:
        prev = merged.get(hold.key)
        if prev is not None:
            hold = dataclasses.replace(prev, amount_usd=prev.amount_usd + hold.amount_usd)
        merged[hold.key] = hold
    return list(merged.values())


class GuardedCall:
    """The state of one logical call. Edges report outcomes; the call settles and reports itself."""

    def __init__(
        self,
        guard: CallGuard,
        edge: ProviderEdge,
        key: Hashable,
        body: Mapping[str, Any],
        subject: LlmCall,
        decision: Decision,
        rewrites: tuple[str, ...],
        model_requested: str,
        started: float,
        started_at: datetime,
    ) -> None:
        self.guard = guard
        self.edge = edge
        self.key = key
        self.body = body
        self.subject = subject
        self.decision = decision
        self.rewrites = rewrites
        self.model_requested = model_requested
        self.model = subject.model
        self.started = started
        self.started_at = started_at
        self._estimate: float | None | object = _UNSET  # read when reported (estimate_usd)
        self.batch_requests = 0
        self.reservation_id: str | None = None
        self.held = False
        self.holds: tuple[Hold, ...] = ()  # what the reservation held, and for how long: to charge the
        self.ttl_s = 0.0  # cost directly when the reservation's record is gone by the time it settles
        self.pending_retry = False
        self.retry_token: object = None  # the async edges' watch for a retry that never comes
        self.lost_usd = 0.0
        self.status_code: int | None = None
        self.ended: tuple[float, datetime] | None = None
        self._done = False
        self._lock = threading.Lock()

    @classmethod
    def for_batch(
        cls,
        guard: CallGuard,
        edge: ProviderEdge,
        key: Hashable,
        body: Mapping[str, Any],
        subjects: Sequence[LlmCall],
        decisions: Sequence[Decision],
        rewrites: tuple[str, ...],
        started: float,
        started_at: datetime,
    ) -> GuardedCall:
        """A batch as one call: its estimate is the sum of its requests' at the batch rate."""
        first = subjects[0] if subjects else edge.subject({"model": "batch"}, batch=True)
        models = {s.model for s in subjects}
        results = tuple(r for d in decisions for r in d.results)
        ref = decisions[0].subject if decisions else SubjectRef(first.type, first.provider, first.kind, first.name)
        decision = Decision("runtime", ref, results)
        estimates = [guard.estimate(s) for s in subjects]
        total = sum(e for e in estimates if e is not None) if all(e is not None for e in estimates) else None
        subject = dataclasses.replace(first, model=models.pop() if len(models) == 1 else "mixed")
        call = cls(guard, edge, key, body, subject, decision, rewrites, subject.model, started, started_at)
        call.batch_requests = len(subjects)
        call._estimate = total
        return call

    @property
    def estimate_usd(self) -> float | None:
        """The worst case reserved for the call (estimated input plus clamped max output)."""
        if self._estimate is _UNSET:
            holds = self.decision.holds  # the budget rules priced the worst case already: not twice
            self._estimate = holds[0].amount_usd if holds else self.guard.estimate(self.subject)
        return self._estimate  # type: ignore[return-value]

    @property
    def done(self) -> bool:
        return self._done

    def mark_ended(self) -> None:
        """Note that the call's outcome is in (its end time and latency), when the accounting that
        follows may run later, on the guard's settler thread."""
        if self.ended is None:
            self.ended = (time.perf_counter(), self.guard.clock())

    # --- outcomes the edges report ---------------------------------------------------------------

    def input_cost(self) -> float:
        """The estimated cost of the input alone: what a sent call is charged at least."""
        return self.guard.estimate(self.subject, output=False) or 0.0

    def estimated_usage(self, output_tokens: int = 0) -> TokenUsage:
        """Usage made of the input estimate and ``output_tokens`` (a stream cut before its usage)."""
        return TokenUsage(input_tokens=self.subject.request.input_tokens, output_tokens=output_tokens)

    def error_status(self, status: int, *, final: bool, note: str | None = None) -> None:
        """The provider answered ``status`` (not billed); ``final`` when the SDK will not retry;
        ``note`` adds to the event's error (a rewrite the server rejected)."""
        self.status_code = status
        if final:
            error = f"HTTP {status}: {note}" if note else f"HTTP {status}"
            self._finish("error", None, self.lost_usd, "none", error=error)
        else:
            self.pending_retry = True

    def failed(self, exc: BaseException, *, sent: bool, final: bool) -> None:
        """The attempt raised; a request that was sent is charged its input. A batch creation that
        was sent is charged its whole worst case: the batch may exist and run every request."""
        if sent:
            creates_batch = bool(self.batch_requests) or self.edge.batch_items is not None
            self.lost_usd += (self.estimate_usd or 0.0) if creates_batch else self.input_cost()
        cancelled = not isinstance(exc, Exception)  # CancelledError, KeyboardInterrupt, GeneratorExit
        if final or cancelled:
            outcome: Outcome = "cancelled" if cancelled else "error"
            self._finish(outcome, None, self.lost_usd, "estimate" if sent else "none", error=describe(exc))
        else:
            self.pending_retry = True

    def abandon(self, reason: str) -> None:
        """The SDK stopped retrying after an error: release the hold, or charge what was sent."""
        self._finish("error", None, self.lost_usd, "estimate" if self.lost_usd else "none", error=reason)

    def complete(
        self,
        usage: TokenUsage,
        *,
        served_model: str | None = None,
        source: UsageSource = "response",
        outcome: Outcome = "ok",
        completion: Any = None,
        error: str | None = None,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        """The call used ``usage``: price it, settle, judge the post-call phase, emit the event.
        ``response`` (the response body, when there is one) tells the service tier that served it."""
        cost, price_error = self.price(usage, served_model, response)
        self._finish(outcome, usage, cost + self.lost_usd, source, served_model, completion, error or price_error)

    def charge_estimate(self, *, error: str | None = None) -> None:
        """Settle to the reserved worst case (a response without usage; a batch whose hold could not be kept)."""
        self._finish("ok", None, (self.estimate_usd or 0.0) + self.lost_usd, "estimate", error=error)

    def defer(self) -> None:
        """Finish without settling: the cost is settled later, elsewhere (a Message Batch from its
        results, :mod:`.batch_settle`, which moved the hold); the event has no cost."""
        self.held = False
        self._finish("ok", None, 0.0, "none")

    def defer_beside(self, reservation_id: str | None) -> None:
        """Report deferred work this call made besides its own (a duplicate batch that an SDK retry
        created, held under ``reservation_id``), as :meth:`defer` reports the call's: the same
        decision, rewrites, attribution and worst case, no cost, nothing held or settled here. Call
        it before this call finishes (the twin starts from this call's state)."""
        twin = copy.copy(self)
        twin._lock, twin._done = threading.Lock(), False
        twin.reservation_id, twin.held, twin.holds, twin.lost_usd = reservation_id, False, (), 0.0
        twin.status_code, twin.pending_retry, twin.retry_token, twin.ended = None, False, None, None
        twin.defer()

    def price(
        self, usage: TokenUsage, served_model: str | None, response: Mapping[str, Any] | None = None
    ) -> tuple[float, str | None]:
        """USD for ``usage`` on the served model, else the requested one, at the service tier and
        speed the response reports, else those requested; the reserved worst case when neither model
        has a price. Without a worst case either (no budget judged the call, or it would have refused
        it) the cost is unknown: $0 with an error that says so, and a warning, never silently."""
        pricer, provider, batch = self.guard.pricer, self.subject.provider, self.subject.request.batch
        context = price_context(self.body, response)
        error = "no model"
        for model in dict.fromkeys(m for m in (served_model, self.model) if m):
            try:
                return cost_in_context(pricer, provider, model, usage, batch=batch, context=context), None
            except Exception as exc:
                error = describe(exc)
        estimate = self.estimate_usd
        if estimate is None:
            log.warning("%s call to %s: usage not priced (%s); its cost is unknown and recorded as $0",
                        provider, self.model, error)
            return 0.0, f"usage not priced ({error}); no estimate either: the cost is unknown and recorded as $0"
        return estimate, f"usage not priced ({error}); charged the reserved estimate"

    # --- finishing -----------------------------------------------------------------------------

    def _finish(
        self,
        outcome: Outcome,
        usage: TokenUsage | None,
        cost: float,
        source: UsageSource,
        served_model: str | None = None,
        completion: Any = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self.pending_retry = False
        self.mark_ended()
        self.guard.later(self._report, outcome, usage, cost, source, served_model, completion, error)

    def _report(
        self,
        outcome: Outcome,
        usage: TokenUsage | None,
        cost: float,
        source: UsageSource,
        served_model: str | None,
        completion: Any,
        error: str | None,
    ) -> None:
        """Settle (or release) the reservation and emit the cost event: inline, or on the settler thread."""
        guard = self.guard
        assert self.ended is not None
        finished, now = self.ended
        latency_ms = (finished - self.started) * 1000
        charged, alerts, ledger_error = self._settle(cost, now)
        if guard.sinks:  # findings, post-call ones included, are only ever reported in the event
            findings = dict.fromkeys(f"{r.policy}/{r.rule}: {r.message}" for r in self.decision.violations)
            if usage is not None and guard.post_policies is not None and not self.batch_requests:
                findings.update(dict.fromkeys(self._post_findings(guard.post_policies, usage, cost, latency_ms, now)))
            errors = "; ".join(e for e in (error, ledger_error) if e) or None
            guard.emit(self._event(outcome, usage, cost, source, served_model, completion, now, latency_ms,
                                   charged, alerts, tuple(findings), errors))
        if self.batch_requests:  # finished, never retried: the guard's last call keeps no input file's requests
            self.body, self.decision = {}, self.decision._replace(results=())

    def _settle(self, cost: float, now: datetime) -> tuple[bool, tuple[str, ...], str | None]:
        ledger = self.guard.ledger
        if not self.held or ledger is None or self.reservation_id is None:
            return False, (), None
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                alerts, note = self._settle_once(ledger, cost, now)
                break
            except LedgerError as exc:
                # settle, release and charge are idempotent in every store: a retry of one that did
                # land counts once, and one that did not is not left to lapse at the TTL
                if attempt < SETTLE_ATTEMPTS:
                    log.warning("settling reservation %s failed (%s); retrying", self.reservation_id, describe(exc))
                    time.sleep(SETTLE_RETRY_S)
                    continue
                return self._unsettled(cost, exc)
            except Exception as exc:  # the call already happened: report, never raise into the caller
                return self._unsettled(cost, exc)
        for alert in alerts:
            self.guard.alert(alert)
        return cost > 0, tuple(str(a) for a in alerts), note

    def _unsettled(self, cost: float, exc: Exception) -> tuple[bool, tuple[str, ...], str | None]:
        log.error("could not settle reservation %s ($%.6f): %s", self.reservation_id, cost, describe(exc))
        return False, (), f"ledger: {describe(exc)}"

    def _settle_once(self, ledger: Any, cost: float, now: datetime) -> tuple[list[Alert], str | None]:
        assert self.reservation_id is not None
        if cost <= 0:
            ledger.release(self.reservation_id, now=now)
            return [], None
        try:
            return list(ledger.settle(self.reservation_id, cost, now=now) or ()), None
        except UnknownReservation:
            charge = getattr(ledger, "charge", None)
            if charge is None or not self.holds:
                raise  # a ledger that cannot charge: reported, as an unreachable one is
            # The call outlived its reservation's record (ttl_s + the store's record grace): charge
            # its cost to the budgets it held, under its own id, so a retried charge counts once.
            alerts = list(charge(self.reservation_id, self.holds, cost, ttl_s=self.ttl_s, now=now) or ())
            note = (f"ledger: reservation {self.reservation_id} expired before the call ended (ttl "
                    f"{self.ttl_s:g}s); its cost was charged to its budgets directly")
            log.warning("%s", note)
            return alerts, note

    def _post_findings(
        self, policies: PolicySet, usage: TokenUsage, cost: float, latency_ms: float, now: datetime
    ) -> list[str]:
        post = dataclasses.replace(
            self.subject, phase="post", usage=usage, actual_cost_usd=cost, latency_ms=latency_ms
        )
        decision = policies.evaluate(post, "runtime", now=now, ledger=None)
        return [f"{r.policy}/{r.rule}: {r.message}" for r in decision.violations]

    def _event(
        self,
        outcome: Outcome,
        usage: TokenUsage | None,
        cost: float,
        source: UsageSource,
        served_model: str | None,
        completion: Any,
        now: datetime,
        latency_ms: float,
        charged: bool,
        alerts: tuple[str, ...],
        findings: tuple[str, ...],
        error: str | None,
    ) -> Any:
        from costwarden.adapters.events.event import CostEvent, usage_counts

        s = self.subject
        record = self.guard.record_content
        return CostEvent(
            provider=self.edge.name,
            api=s.request.api,
            model_requested=self.model_requested,
            model=self.model,
            outcome=outcome,
            verdict=self.decision.verdict,
            started_at=self.started_at,
            finished_at=now,
            model_served=served_model,
            feature=s.feature,
            user=s.user,
            team=s.team,
            tags=dict(s.tags),
            stream=s.request.stream,
            batch=s.request.batch,
            batch_requests=self.batch_requests,
            **usage_counts(usage),
            cost_usd=cost,
            estimated_cost_usd=self.estimate_usd,
            charged=charged,
            usage_source=source,
            latency_ms=latency_ms,
            status_code=self.status_code,
            rewrites=self.rewrites,
            findings=findings,
            alerts=alerts,
            reservation_id=self.reservation_id,
            error=error,
            prompt={k: self.body[k] for k in _CONTENT_KEYS if k in self.body} if record else None,
            completion=completion if record else None,
        )


__all__ = ["GuardedCall", "ProviderEdge", "SubjectBuilder", "merge_holds"]
