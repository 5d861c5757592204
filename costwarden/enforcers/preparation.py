"""Preparing a logical call before its request leaves: ``CallGuard.begin`` (and ``begin_async``, in
a worker thread) runs :func:`prepare_call` — judge the request with its fixes
(:func:`~costwarden.enforcers.judging.judge_request`), report a refusal, then reserve the
decision's holds (:func:`~costwarden.enforcers.reservations.reserve_call`). A batch is judged
request by request at the batch rate, under one reservation (:func:`prepare_batch`)."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.attribution import Attribution, current_attribution
from costwarden.enforcers.guarded_call import GuardedCall, ProviderEdge
from costwarden.enforcers.judging import judge_request, replace_item
from costwarden.enforcers.reservations import reserve_call
from costwarden.engine.decision import Decision
from costwarden.engine.ledger import Hold
from costwarden.engine.subjects import LlmCall
from costwarden.errors import PolicyViolation

if TYPE_CHECKING:
    from costwarden.enforcers.callguard import CallGuard


def prepare_call(
    guard: CallGuard, edge: ProviderEdge, body: Mapping[str, Any], *, key: Hashable, batch: bool,
    rewrites: tuple[str, ...],
) -> GuardedCall:
    """Judge ``body`` (fixing what can be fixed) and reserve its budget holds: a new logical call.

    Raises PolicyViolation / BudgetExceeded when the call may not be made; nothing is sent then."""
    started = time.perf_counter()
    now = guard.clock()
    who = current_attribution()
    model_requested = str(body.get("model", ""))
    if edge.batch_items is not None:
        return prepare_batch(guard, edge, body, key=key, who=who, now=now, started=started)
    try:
        body, subject, decision, applied = judge_request(guard, edge, body, who, batch=batch, now=now)
    except PolicyViolation as exc:
        guard.record_denial(edge, body, exc, model_requested, now, started)
        raise
    call = GuardedCall(
        guard, edge, key, body, subject, decision, rewrites + applied, model_requested, started, now
    )
    reserve_call(guard, call, decision.holds, guard.reservation_ttl_s)
    return call


def prepare_batch(
    guard: CallGuard, edge: ProviderEdge, body: Mapping[str, Any], *, key: Hashable, who: Attribution, now: datetime,
    started: float,
) -> GuardedCall:
    """Judge every request of a batch at the batch rate; one reservation holds them all."""
    assert edge.batch_items is not None
    holds: list[Hold] = []
    rewrites: list[str] = []
    subjects: list[LlmCall] = []
    decisions: list[Decision] = []
    for pointer, params in edge.batch_items(body):
        try:
            new, subject, decision, applied = judge_request(guard, edge, params, who, batch=True, now=now)
        except PolicyViolation as exc:
            guard.record_denial(edge, params, exc, str(params.get("model", "")), now, started, batch=True)
            raise
        if new is not params:
            body = replace_item(body, pointer, new)
        rewrites += [f"{pointer}: {text}" for text in applied]
        holds += decision.holds
        subjects.append(subject)
        decisions.append(decision)
    call = GuardedCall.for_batch(guard, edge, key, body, subjects, decisions, tuple(rewrites), started, now)
    reserve_call(guard, call, holds, guard.batch_reservation_ttl_s)
    return call


__all__ = ["prepare_batch", "prepare_call"]
