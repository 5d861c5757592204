"""Work that is settled after its call has returned: Message Batches (``batch_settle.py``) and
background Responses (``background_responses.py``).

When the provider accepts such work, :func:`keep_for_later` moves the call's hold to a
reservation named after the work. That reservation carries a marker hold, whose 0 % alert tells
which settlement took effect, and the creation record (``batch_record.py``). The pre-send
reservation is then released, and the call finishes with an uncharged event. The creating process
also remembers the record in memory (:class:`Remembered`), for the event of the settlement.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.attribution import current_attribution
from costwarden.enforcers.batch_record import BatchRecord, record_hold
from costwarden.enforcers.guarded_call import merge_holds
from costwarden.engine.ledger import Hold
from costwarden.errors import describe

if TYPE_CHECKING:
    from costwarden.adapters.events.event import CostEvent
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall
    from costwarden.engine.ledger import Ledger

log = logging.getLogger("costwarden.callguard")

MAX_REMEMBERED = 10_000
"""Records kept in memory per guard and kind of work (older ones are found in the ledger)."""


@dataclass
class Remembered:
    """What one process knows of the deferred work it created (``pending``) and reported (``reported``)."""

    pending: OrderedDict[str, BatchRecord] = field(default_factory=OrderedDict)
    reported: OrderedDict[str, None] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, work_id: str, record: BatchRecord) -> None:
        with self.lock:
            self.pending[work_id] = record
            while len(self.pending) > MAX_REMEMBERED:
                self.pending.popitem(last=False)

    def record(self, work_id: str) -> BatchRecord | None:
        with self.lock:
            return self.pending.get(work_id)

    def reported_now(self, work_id: str, *, once: bool, forget: bool) -> bool:
        """Mark ``work_id`` reported; False (and nothing marked) when ``once`` and it was before.
        ``forget`` drops its record (settled for good)."""
        with self.lock:
            if once and work_id in self.reported:
                return False
            self.reported[work_id] = None
            while len(self.reported) > MAX_REMEMBERED:
                self.reported.popitem(last=False)
            if forget:
                self.pending.pop(work_id, None)
            return True


_BY_GUARD: weakref.WeakKeyDictionary[Any, dict[str, Remembered]] = weakref.WeakKeyDictionary()
_BY_GUARD_LOCK = threading.Lock()


def remembered(guard: CallGuard, kind: str) -> Remembered:
    """The guard's memory of one kind of deferred work (``"batch"``, ``"background"``)."""
    with _BY_GUARD_LOCK:
        kinds = _BY_GUARD.get(guard)
        if kinds is None:
            kinds = _BY_GUARD[guard] = {}
        return kinds.setdefault(kind, Remembered())


def creation_record(call: GuardedCall) -> BatchRecord:
    s = call.subject
    return BatchRecord(s.feature, s.user, s.team, dict(s.tags), call.model_requested, call.model,
                       call.estimate_usd, call.rewrites, call.started_at)


def keep_for_later(call: GuardedCall, kind: str, work: str, work_id: str, rid: str, marker: str,
                   *, keep_s: float) -> None:
    """The provider accepted deferred work (``work`` names it in messages): keep the call's hold
    under ``rid`` until the work is settled, and finish the call uncharged. When the hold cannot be
    kept, the call is charged its reserved worst case instead."""
    guard, ledger = call.guard, call.guard.ledger
    record = creation_record(call)
    if ledger is not None:
        try:
            kept = _move_hold(guard, call, work_id, rid, marker, record, keep_s)
        except Exception as exc:
            log.error("%s: could not keep its hold: %s", work, describe(exc))
            call.charge_estimate(error=f"{work}: hold not kept ({describe(exc)}); charged the reserved worst case")
            return
        if not kept:
            call.charge_estimate(error=f"{work}: its reservation {rid} was refused before; charged the reserved "
                                       "worst case")
            return
    remembered(guard, kind).keep(work_id, record)
    call.defer()


def _move_hold(guard: CallGuard, call: GuardedCall, work_id: str, rid: str, marker_key: str,
               record: BatchRecord, keep_s: float) -> bool:
    """Hold the call's amounts under ``rid`` with the marker and the record, then release the
    pre-send reservation.

    The named holds are not checked against their limits (``Hold.check``): the pre-send
    reservation admitted this spend already, and it is released only once the named one holds, so
    the budget counts the work twice for an instant and never less than once — no other call can
    take its share in between. False when the named reservation is not granted (its id was refused
    before): the pre-send reservation still holds then, for the caller to settle.
    """
    ledger = guard.ledger
    assert ledger is not None
    now = guard.clock()
    ttl_s = guard.batch_reservation_ttl_s
    estimate = call.estimate_usd or 0.0
    holds: list[Hold] = [dataclasses.replace(h, check=False) for h in merge_holds(call.decision.holds)]
    holds.append(Hold(marker_key, estimate, estimate, expires_at=now + timedelta(seconds=ttl_s), alert_at=(0.0,)))
    kept = record_hold(work_id, record, now, keep_s)
    if kept is not None:
        holds.append(kept)
    if not ledger.reserve(rid, holds, ttl_s=ttl_s, now=now, keep_s=keep_s).granted:
        return False
    presend = call.reservation_id if call.held else None
    call.reservation_id, call.held = rid, True
    if presend is not None:
        try:
            ledger.release(presend, now=now)
        except Exception as exc:  # it expires at its TTL: held twice until then, never lost
            log.warning("%s: pre-send reservation %s not released (%s); it expires at its TTL", rid, presend,
                        describe(exc))
    return True


def worst_case(ledger: Ledger | None, record: BatchRecord | None, marker_key: str, now: datetime) -> float:
    """The worst case reserved for the work: its record's, else what its marker holds (0 when
    neither can tell)."""
    if record is not None and record.estimate is not None:
        return record.estimate
    if ledger is None:
        return 0.0
    try:
        return float(ledger.spent([marker_key], now=now)[0])
    except Exception:
        return 0.0


def settled_event(
    guard: CallGuard, record: BatchRecord | None, *, now: datetime, served: str | None, **fields: Any
) -> CostEvent:
    """The cost event of deferred work's settlement, attributed to its creator (``record``), or to
    the reader when no record is known. ``fields`` are the event's own figures."""
    from costwarden.adapters.events.event import CostEvent

    if record is None:  # no record of its creation (see batch_record.py): the reader's attribution
        who = current_attribution().over(guard.defaults)
        record = BatchRecord(who.feature, who.user, who.team, dict(who.tags), served or "", served or "")
    return CostEvent(
        model_requested=record.model_requested,
        verdict="allow",
        started_at=record.started_at or now,
        finished_at=now,
        model_served=served,
        feature=record.feature,
        user=record.user,
        team=record.team,
        tags=dict(record.tags),
        estimated_cost_usd=record.estimate,
        status_code=200,
        rewrites=record.rewrites,
        **fields,
    )


__all__ = [
    "MAX_REMEMBERED",
    "Remembered",
    "creation_record",
    "keep_for_later",
    "remembered",
    "settled_event",
    "worst_case",
]
