"""The call-guard: judge an LLM request before it leaves, reserve its budget, settle its real cost.

One provider-independent core; only the edges differ (:mod:`.anthropic_guard` is an ``anthropic``
SDK middleware, :mod:`.openai_guard` an ``httpx2`` transport for the ``openai`` SDK)::

    guard = CallGuard(costwarden.load_policies(), ledger=costwarden.open_ledger("sqlite:///spend.db"))
    client = anthropic.Anthropic(middleware=[guard])
    with attribution(feature="search", user="u-123", team="growth"):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=512, messages=[...])

Before the call (:mod:`.preparation`; sync code, the async edges only await I/O): build the ``llm_call`` subject
(attribution from :func:`attribution`, then the body's own user field, then ``defaults``), judge the
``runtime`` surface, and while blocking results carry request fixes, apply them to a copy of the
body and judge again (:func:`~costwarden.enforcers.fixes.fix_until_clean`, at most
``max_fix_rounds`` rounds, so two competing downgrades converge). Fixes apply even beside a
failure that has none, such as a budget: the budget is judged again on the fixed request. Still
blocked → :class:`PolicyViolation` (:class:`BudgetExceeded` for budget failures) carrying the
Decision on the fixed request, before any HTTP request.
Then the decision's budget holds are reserved all-or-nothing; a refusal is ``BudgetExceeded``, an
unreachable ledger denies (fail closed: ``PolicyViolation`` naming the ledger, no request sent)
unless no budget that holds for the call is enforced with ``onError: deny`` — then the call goes
ahead unreserved, with a warning logged.

After the call: price the real usage (cache reads/writes and the batch rate included), settle,
judge the post-call phase (for example a long prompt that never hit the cache) and emit a
:class:`~costwarden.adapters.events.CostEvent` to every sink — in the caller's thread, or with
``settle_in_background=True`` on the guard's settler thread (:mod:`.settler`), so the caller has
its response without waiting for the ledger.

Failures: a call that failed before its request left is released. One whose request was sent
but that got no answer (read timeout, dropped connection, cancellation) is charged its estimated
input; a stream that ends early is charged what its events show was used, and at least its input.
An HTTP error status is not billed by providers, so it releases the hold.

Retries (one reservation per logical call): SDKs retry inside their own loop, in the same thread or
task, and the edges see each attempt. The guard keeps the logical call in a context variable and
recognises an attempt as a retry when the SDK says it is one (``retries_taken`` / the
``x-stainless-retry-count`` header) and its key matches — the SDK's per-call idempotency key for
Anthropic, a hash of method, URL and body for OpenAI. A retry reuses the call's decision, rewritten
body and reservation. An error that may still be retried keeps the hold; it is released when the
SDK retries no more: once the client's ``max_retries`` attempts failed (read from the Anthropic
middleware chain; given to the OpenAI transport), at the next call in the same context, when an
async retry has not come by the end of the SDK's back-off (:meth:`CallGuard.expect_retry`), or at
the reservation's TTL.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib.util
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from costwarden.enforcers import anthropic_guard
from costwarden.enforcers.attempt import retry_wait_s
from costwarden.enforcers.attribution import Attribution, attribution, current_attribution
from costwarden.enforcers.guarded_call import GuardedCall, ProviderEdge
from costwarden.enforcers.judging import post_call_policies, refusal_event, subject_of
from costwarden.enforcers.openai_audio import audio_estimate
from costwarden.enforcers.preparation import prepare_call
from costwarden.enforcers.settler import Settler
from costwarden.engine.decision import Decision
from costwarden.engine.ledger import Alert, Ledger
from costwarden.engine.pricing import cost_in_context, price_context
from costwarden.engine.rules.budget import worst_case_usage
from costwarden.engine.subjects import LlmCall
from costwarden.errors import PolicyViolation

if TYPE_CHECKING:
    from anthropic import Middleware as _MiddlewareBase
    from anthropic._middleware import AsyncCallNext, CallNext
    from anthropic._request import APIRequest
    from anthropic._response import APIResponse, AsyncAPIResponse

    from costwarden.adapters.events.event import CostEvent, EventSink
    from costwarden.enforcers.pending_batches import PendingBatches
    from costwarden.engine.evaluate import PolicySet
    from costwarden.engine.pricing import LlmPricer
else:

    def _middleware_base() -> type:
        """``anthropic.Middleware`` when the SDK is installed, so a CallGuard drops into
        ``Anthropic(middleware=[guard])``; a plain object otherwise (the OpenAI edge needs no base)."""
        if importlib.util.find_spec("anthropic") is None:
            return object
        from anthropic import Middleware

        return Middleware

    _MiddlewareBase = _middleware_base()

log = logging.getLogger("costwarden.callguard")
_R = TypeVar("_R")
RETRY_GRACE_S = 5.0
"""How long past the SDK's back-off an async retry may take to reach the guard (:meth:`CallGuard.expect_retry`)."""


class CallGuard(_MiddlewareBase):
    """Enforces ``llm_call`` policies around LLM SDK calls; one instance serves many clients and threads.

    * ``ledger`` — where budgets are reserved and settled (``costwarden.open_ledger(url)``); without
      one, budget rules skip and nothing is reserved.
    * ``defaults`` — attribution for calls that carry none (``{"feature": "chat", "team": "web",
      "env": "prod"}``; keys other than feature/user/team become tags).
    * ``sinks`` — receive one :class:`~costwarden.adapters.events.CostEvent` per call;
      ``record_content`` adds prompts and completions to it (off by default).
    * ``apply_fixes`` / ``max_fix_rounds`` — rewrite requests whose blocking failures carry fixes.
    * ``reservation_ttl_s`` — how long an unsettled hold lives (batches: ``batch_reservation_ttl_s``).
    * ``post_call_rules`` — judge the call's outcome (``requirePromptCaching`` and ``expr`` rules).
    * ``max_retries`` — the SDK's retry count where the edge cannot read the client's (the OpenAI
      helpers pass the client's; the Anthropic middleware reads it from its chain).
    * ``pricer`` — defaults to the policy set's (genai-prices with catalog overrides); ``clock`` to
      the policy set's; ``on_alert`` receives budget threshold alerts (they are also logged).
    * ``settle_in_background`` — read, price and settle responses and emit their cost events on a
      worker thread, so a call returns as soon as its response is in (:mod:`.settler`: holds keep
      their worst case until settled, so budgets never overspend; ``flush()`` waits for it, and it
      is flushed at exit). Off by default: then a call's spend is in the ledger when it returns.
    """

    def __init__(
        self,
        policies: PolicySet,
        *,
        ledger: Ledger | None = None,
        defaults: Mapping[str, str] | None = None,
        sinks: Iterable[EventSink] = (),
        reservation_ttl_s: float = 600.0,
        batch_reservation_ttl_s: float = 26 * 3600.0,
        apply_fixes: bool = True,
        max_fix_rounds: int = 3,
        clock: Callable[[], datetime] | None = None,
        pricer: LlmPricer | None = None,
        record_content: bool = False,
        post_call_rules: bool = True,
        max_retries: int = 2,
        on_alert: Callable[[Alert], None] | None = None,
        settle_in_background: bool = False,
    ) -> None:
        self.policies = policies
        self.ledger = ledger
        self.defaults = Attribution.from_mapping(defaults)
        self.sinks: tuple[EventSink, ...] = tuple(sinks)
        self.reservation_ttl_s = reservation_ttl_s
        self.batch_reservation_ttl_s = batch_reservation_ttl_s
        self.apply_fixes = apply_fixes
        self.max_fix_rounds = max_fix_rounds
        self.clock: Callable[[], datetime] = clock or policies.clock
        self.pricer = pricer or policies.pricer or _default_pricer()
        self.record_content = record_content
        self.post_call_rules = post_call_rules
        self.max_retries = max_retries
        self.on_alert = on_alert
        self.settler = Settler() if settle_in_background else None
        self.budget_rules = frozenset(  # (policy, rule) of each budget: a refusal by one is BudgetExceeded
            (p.name, r.name) for p in policies.policies for r in p.rules if r.kind == "budget"
        )
        self.warn_only_budgets = frozenset(  # onExceed: warn — over the limit they warn, never deny
            (p.name, r.name)
            for p in policies.policies
            for r in p.document.spec.rules
            if getattr(getattr(r, "budget", None), "onExceed", None) == "warn"
        )
        self.post_policies = post_call_policies(policies) if post_call_rules else None
        # the last logical call this guard started in each thread or task, so an SDK retry finds it
        self._active: ContextVar[GuardedCall | None] = ContextVar(f"costwarden_call_{id(self):x}", default=None)

    # --- the anthropic middleware interface (the edge lives in anthropic_guard) ----------------

    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        return anthropic_guard.handle(self, request, call_next)

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        return await anthropic_guard.handle_async(self, request, call_next)

    # --- the provider-independent core ---------------------------------------------------------

    def begin(
        self,
        edge: ProviderEdge,
        body: Mapping[str, Any],
        *,
        key: Hashable,
        attempt: int = 0,
        batch: bool = False,
        rewrites: Sequence[str] = (),
    ) -> GuardedCall:
        """Start a logical call, or find the one this attempt retries: ``key`` ties the attempts of
        one logical call (an SDK's idempotency key, or the request itself), compared with ``==``.

        Raises PolicyViolation / BudgetExceeded when the call may not be made; nothing is sent then.
        """
        retried, abandoned = self._pending(key, attempt)
        if retried is not None:
            return retried
        if abandoned is not None:
            abandoned.abandon("the SDK stopped retrying")
        settler = self.settler
        if settler is None:
            call = prepare_call(self, edge, body, key=key, batch=batch, rewrites=tuple(rewrites))
        else:
            settler.enter_busy()  # the settler holds off meanwhile (not ``with``: a context manager costs ~1 µs)
            try:
                call = prepare_call(self, edge, body, key=key, batch=batch, rewrites=tuple(rewrites))
            finally:
                settler.leave_busy()
        self._active.set(call)
        return call

    async def begin_async(
        self,
        edge: ProviderEdge,
        body: Mapping[str, Any],
        *,
        key: Hashable,
        attempt: int = 0,
        batch: bool = False,
        rewrites: Sequence[str] = (),
    ) -> GuardedCall:
        """:meth:`begin` for the async edges: judging (budgets read the ledger) and reserving run in a
        worker thread when the ledger or a sink does I/O (:attr:`blocking_io`), so the event loop
        keeps serving other tasks meanwhile. A task cancelled while its reservation is being made
        still gets it released once made."""
        if not self.blocking_io:
            return self.begin(edge, body, key=key, attempt=attempt, batch=batch, rewrites=rewrites)
        retried, abandoned = self._pending(key, attempt)
        if retried is not None:
            return retried
        if abandoned is not None:
            await self.offload(abandoned.abandon, "the SDK stopped retrying")
        loop = asyncio.get_running_loop()
        prepare = functools.partial(prepare_call, self, edge, body, key=key, batch=batch, rewrites=tuple(rewrites))
        made = loop.run_in_executor(None, contextvars.copy_context().run, prepare)
        try:
            call = await asyncio.shield(made)
        except asyncio.CancelledError:
            made.add_done_callback(_abandon_when_made)
            raise
        self._active.set(call)
        return call

    def attempt_ended(self, call: GuardedCall) -> None:
        """An attempt of ``call`` has its answer: unless the SDK retries it, this thread or task no
        longer keeps the call (and its body) for a retry to find until its next call."""
        if not call.pending_retry:
            self._active.set(None)

    def expect_retry(self, call: GuardedCall, headers: Mapping[str, str] | None = None) -> None:
        """An async attempt failed and the SDK may retry it after its back-off (the ``headers`` of the
        response, if any, may name it: :func:`~.attempt.retry_wait_s`). A task
        cancelled or timed out in that sleep (``asyncio.wait_for`` / ``asyncio.timeout``) sends no
        further attempt, and its context, where a later call would end this one, is gone: unless the
        retry reaches the guard ``RETRY_GRACE_S`` after the back-off, the hold is released then (or the
        sent input charged), not at its TTL. A retry that comes later still is judged as a new call."""
        if not call.pending_retry:
            return
        token = object()
        call.retry_token = token
        wait_s = retry_wait_s(headers) + RETRY_GRACE_S
        asyncio.get_running_loop().call_later(wait_s, self._retry_overdue, call, token)

    def _retry_overdue(self, call: GuardedCall, token: object) -> None:
        if not call.pending_retry or call.retry_token is not token:
            return  # retried meanwhile, or finished
        call.pending_retry = False  # on the event loop, where _pending runs: no retry takes the call up now
        reason = "the SDK sent no retry after its back-off (the task was cancelled or timed out)"
        if self.finishing_blocks:
            asyncio.get_running_loop().run_in_executor(None, call.abandon, reason)
        else:
            call.abandon(reason)

    def later(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run a finishing step (settle, release, cost event): on the settler thread when settling
        in the background, else now."""
        if self.settler is None:
            fn(*args)
        else:
            self.settler.run(fn, *args)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call finished so far is settled and reported (immediate unless
        ``settle_in_background``); False if ``timeout`` passed first."""
        return True if self.settler is None else self.settler.flush(timeout)

    @property
    def finishing_blocks(self) -> bool:
        """Whether finishing a call (its settlement and cost event) may wait on I/O in the caller:
        :attr:`blocking_io`, unless that work runs on the settler thread."""
        return self.settler is None and self.blocking_io

    async def finish_async(self, call: GuardedCall, fn: Callable[..., _R], /, *args: Any) -> _R:
        """An after-response step of an async edge: inline when it cannot block (settling runs on the
        settler thread; a batch still moves its hold here), else :meth:`offload`-ed."""
        if self.settler is not None and call.edge.batch_items is None:
            return fn(*args)
        return await self.offload(fn, *args)

    @property
    def blocking_io(self) -> bool:
        """Whether finishing or starting a call may wait on I/O: a ledger other than the in-process
        one, or a sink that writes somewhere. The async edges then run that work off the event loop."""
        ledger_io = self.ledger is not None and not getattr(self.ledger, "in_process", False)
        return ledger_io or any(not getattr(sink, "in_process", False) for sink in self.sinks)

    async def offload(self, fn: Callable[..., _R], /, *args: Any) -> _R:
        """``fn(*args)`` (a step that may reserve, settle, release or emit) where it cannot block the
        event loop: in a worker thread, with this context, when :attr:`blocking_io`; inline otherwise.
        The work completes even if the awaiting task is cancelled meanwhile."""
        if not self.blocking_io:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _pending(self, key: Hashable, attempt: int) -> tuple[GuardedCall | None, GuardedCall | None]:
        """(the call this attempt retries, or None; the call the SDK stopped retrying, or None)."""
        active = self._active.get()
        if active is None or not active.pending_retry:
            return None, None
        if attempt > 0 and active.key == key:
            active.pending_retry = False
            return active, None
        return None, active

    def judge(self, edge: ProviderEdge, body: Mapping[str, Any], *, batch: bool = False) -> Decision:
        """The runtime decision on ``body`` as the guard would see it now (no fixes, no reservation)."""
        now = self.clock()
        return self.policies.evaluate(subject_of(self, edge, body, current_attribution(), batch), "runtime", now=now,
                                      ledger=self.ledger)

    def settle_pending_batches(self, client: Any) -> PendingBatches:
        """Read and settle the results of every ended Message Batch this guard's ledger still holds
        a worst case for, through ``client`` (an ``anthropic.Anthropic``): for applications that
        never read their batches' results (``enforcers/pending_batches.py``)."""
        from costwarden.enforcers.pending_batches import settle_pending_batches

        return settle_pending_batches(self, client)

    def settle_pending_responses(self, client: Any, *, provider: str = "openai") -> PendingBatches:
        """Read and settle every ended background Response this guard's ledger still holds a worst
        case for, through ``client`` (an ``openai.OpenAI``): for applications that stop polling."""
        from costwarden.enforcers.pending_batches import settle_pending_responses

        return settle_pending_responses(self, client, provider=provider)

    def close(self) -> None:
        """Settle what is still queued, then close every sink."""
        if self.settler is not None:
            self.settler.close()
        for sink in self.sinks:
            sink.close()

    def estimate(self, subject: LlmCall, *, output: bool = True) -> float | None:
        """Worst-case USD of a call (estimated input plus clamped max output), or input only; None
        when the model has no price (the budget rule then reports the error and denies)."""
        try:
            if subject.request.api == "audio" and subject.body is not None:  # seconds, characters or tokens
                return audio_estimate(self.pricer, subject, output=output)
            usage = worst_case_usage(subject, output=output)
            return cost_in_context(self.pricer, subject.provider, subject.model, usage, batch=subject.request.batch,
                                   context=price_context(subject.body))
        except Exception:  # an unknown price is judged by the budget rule, never priced at $0 here
            return None

    def record_denial(
        self, edge: ProviderEdge, body: Mapping[str, Any], exc: PolicyViolation, model_requested: str,
        now: datetime, started: float, *, batch: bool = False,
    ) -> None:
        """Report a call refused before sending to the sinks: the event is built here (it reads the
        caller's attribution) and emitted as a finished call's is (:meth:`later`), so that with a
        settler thread the sinks still see the events in the order the calls ended."""
        if self.sinks:
            self.later(self.emit, refusal_event(self, edge, body, exc, model_requested, now, started, batch=batch))

    def alert(self, alert: Alert) -> None:
        """A budget crossed an alert threshold: log it, hand it to ``on_alert`` and to every sink
        with an ``alert`` method (a metric); a failing callback or sink is logged, never raised."""
        log.warning("budget %s", alert)
        receivers = [self.on_alert] if self.on_alert is not None else []
        receivers += [fn for fn in (getattr(sink, "alert", None) for sink in self.sinks) if callable(fn)]
        for receive in receivers:
            try:
                receive(alert)
            except Exception:
                log.exception("budget alert receiver %r failed", receive)

    def emit(self, event: CostEvent) -> None:
        """Hand ``event`` to every sink; a failing sink is logged, never raised into the caller."""
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:
                log.exception("cost event sink %r failed", sink)


def _abandon_when_made(made: asyncio.Future[GuardedCall]) -> None:
    """A reservation finished after its task was cancelled: release it (off the event loop)."""
    if made.cancelled() or made.exception() is not None:
        return
    call = made.result()
    asyncio.get_running_loop().run_in_executor(None, call.abandon, "cancelled before the request was sent")


def _default_pricer() -> LlmPricer:
    from costwarden.adapters.pricing import GenaiPricer

    return GenaiPricer()


__all__ = ["Attribution", "CallGuard", "GuardedCall", "ProviderEdge", "attribution", "current_attribution"]
