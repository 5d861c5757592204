"""Leased budget slices: most reservations are made in memory, against a slice of each budget that
this process holds in the store.

::

    ledger = open_ledger("sqlite:///spend.db?lease_calls=16")      # any store: ?lease_calls=N
    ledger = LeasedLedger(open_ledger("redis://..."), calls=16)

A reserve that a slice covers takes no store round trip. When none does, one ``reserve`` in the
store takes a new slice for every budget the call needs — sized to ``calls`` times the call's
amount, but at most ``share`` of the budget's limit — and the call is admitted from it. A slice
the store refuses (the budget is nearly spent) leaves the call to an ordinary reservation in the
store, so near the limit a call is judged exactly as without leasing, except for what other
processes' slices hold.

What it keeps, and what it changes:

* **No overspend.** A slice is an ordinary reservation in the store: every process counts it
  against the limit until it is returned. A call is admitted only while its worst case fits in
  what the slice has left; its real cost is charged to the store when it settles (the store's
  ``charge``: one atomic step, one round trip, under the call's own id, so alerts fire as usual
  and a retried charge counts once).
* **Slices are short-lived.** A slice admits calls for ``admit_s`` seconds (2 by default) and is
  returned as soon as its last call has finished; a background thread returns idle ones. Its hold
  lives in the store for ``admit_s`` plus the longest reservation TTL it admitted, so a process
  killed with SIGKILL loses nothing but the slice's hold, released at that TTL — as an
  ordinary reservation's is.
* **Early refusals.** Another process's slice holds up to ``share`` (1 % by default) of a
  limit for up to ``admit_s``; a call that fits in the budget's real headroom but not beside
  those slices is refused. So may a call beside this process's own replaced slices, each
  keeping under one call's room until its running calls end.
* **Spend reads** (budgets that downgrade or warn judge by them) count this process's slices as
  the calls they hold; other processes see them whole. A read is reused for ``spent_s`` (0.1 s):
  within it, this process's own holds and charges are current, other processes' spend is as
  read. Any store reservation of this process's own (not leased) makes the next read fresh.
* **Not leased:** reservations with unchecked holds or a ``keep_s`` (Message Batches), holds
  without a limit, and calls whose slice would hold fewer than two of them — those go to the
  store as they are.
* A call never settled nor released is forgotten when the store lets its slice lapse (a settle
  that still comes goes to the store, which does not know it: the caller charges it).
* A forked child starts without slices; a settle or release it does for a reservation its
  parent made locally goes to the store, which does not know it.

Where the parts are: this module holds the ledger itself — the Ledger and store protocols, and
taking, charging and returning slices in the store. What it remembers between calls and the
bookkeeping under its lock are in ``leased_book.py``; the records of a slice and of a call
admitted from one in ``leased_slices.py``; the background thread that returns idle slices and
the fork and exit hooks in ``leased_sweeper.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from costwarden.adapters.ledger.hold_specs import to_micros
from costwarden.adapters.ledger.leased_book import DONE_KEPT as DONE_KEPT
from costwarden.adapters.ledger.leased_book import LeaseBook
from costwarden.adapters.ledger.leased_slices import Lease, LocalCall, slot
from costwarden.adapters.ledger.leased_sweeper import sweep_later, track
from costwarden.adapters.ledger.status import BudgetStatus
from costwarden.adapters.ledger.store import LedgerStore
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError, describe

log = logging.getLogger("costwarden.ledger")
_T = TypeVar("_T")

class LeasedLedger(LeaseBook):
    """Wraps a store so that most reserves and releases are answered in memory (see the module).

    * ``calls`` — a slice holds this many times the amount of the call that took it;
    * ``share`` — but at most this fraction of the budget's limit;
    * ``admit_s`` — how long a slice admits calls before it is returned;
    * ``spent_s`` — how long a spend read is reused (0: never).
    """

    in_process = False
    """A reserve may take a slice from the store: the async call-guard edges run it off the loop."""

    def __init__(
        self, inner: LedgerStore, *, calls: float = 16, share: float = 0.01, admit_s: float = 2.0, spent_s: float = 0.1
    ) -> None:
        if not calls >= 2 or not 0 < share <= 1 or not admit_s > 0 or not spent_s >= 0:
            raise LedgerError(f"leased ledger needs calls >= 2, 0 < share <= 1, admit_s > 0 and spent_s >= 0; "
                              f"got calls={calls}, share={share}, admit_s={admit_s}, spent_s={spent_s}")
        self.inner = inner
        self.calls = calls
        self.share = share
        self.admit_s = admit_s
        self.spent_s = spent_s
        self._reset()
        track(self)

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        """The store's figures, with this process's slices counted as the calls they hold. Within
        ``spent_s`` of a read, what other processes did is taken from that read (this process's
        own charges and holds are always current)."""
        mono = time.monotonic()
        with self._lock:
            cache = self._spent
            if cache and all(k in cache and cache[k][0] > mono for k in keys):
                held = self._own(keys, "held", now)
                return [(cache[k][1] + self._charged.get(k, 0) + held[k]) / 1e6 for k in keys]
            version, charged = self._version, {k: self._charged.get(k, 0) for k in keys}
            charges = None if self._charging else self._charges
        totals = [round(t * 1e6) for t in self.inner.spent(keys, now=now)]
        with self._lock:
            held, sliced = self._own(keys, "held", now), self._own(keys, "amount", now)
            # no slice taken or returned, and no charge that the read may or may not include, meanwhile
            if version == self._version and charges == self._charges and self.spent_s > 0:
                if len(cache) > 4_096:
                    cache.clear()
                for key, total in zip(keys, totals, strict=True):
                    cache[key] = (mono + self.spent_s, total - charged[key] - sliced[key])
        return [max(0, total - sliced[k] + held[k]) / 1e6 for k, total in zip(keys, totals, strict=True)]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        amounts = [to_micros(h.amount_usd) for h in holds]
        mono = time.monotonic()
        drained: list[str] = []
        with self._lock:
            self._clock = (now, mono)
            local = self._held.get(reservation_id) or self._done.get(reservation_id)
            if local is not None:  # reserved here before: the first outcome
                return local.outcome
            if reservation_id not in self._done and keep_s is None and self._leasable(holds, amounts):
                local = self._admit(reservation_id, holds, amounts, ttl_s, now, mono)
                if self._drainable:
                    drained = self._drained()  # slices this replaced, so the store has their room back
            if local is None:
                self._remember(reservation_id, None)
        if drained:
            self._return(drained, now)
        if local is not None:
            return local.outcome
        return self._direct(self.inner.reserve, reservation_id, holds, ttl_s=ttl_s, now=now, keep_s=keep_s)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        with self._lock:
            local = self._held.get(reservation_id)
            if local is None:
                finished = self._done.get(reservation_id)
            elif local.settling:
                return []  # being settled by another thread
            else:
                local.settling = True
                self._charging += 1
                self._charges += 1
        if local is None:
            # None: the store's own reservation, or one unknown here (the store then says so)
            return [] if finished is not None else self._direct(self.inner.settle, reservation_id, cost_usd, now=now)
        try:  # the real cost goes to the store under the call's id: once, however often this is retried
            alerts = self.inner.charge(reservation_id, local.holds, cost_usd, ttl_s=local.ttl_s, now=now)
        except BaseException:
            with self._lock:
                local.settling = False  # the slice still holds the worst case; a retry may charge it
                self._charging -= 1
            raise
        try:
            self._finish(reservation_id, local, cost, now)
        finally:
            with self._lock:
                self._charging -= 1
        return alerts

    def release(self, reservation_id: str, *, now: datetime) -> None:
        with self._lock:
            local = self._held.get(reservation_id)
            if local is None:
                finished = self._done.get(reservation_id)
            elif local.settling:
                return  # a settle came first and wins
        if local is not None:
            self._finish(reservation_id, local, None, now)
        elif finished is None:
            self._direct(self.inner.release, reservation_id, now=now)

    # -- the store protocol --------------------------------------------------------------------
    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        """The store's charge. An id admitted here from a slice has a record only here: it charges
        nothing, as in a store (its own settle charges the call). Any other id is remembered as the
        store's, so a reserve under it afterwards gets the store's answer (the charge's outcome,
        holding nothing) rather than a second hold from a slice."""
        with self._lock:
            if self._held.get(reservation_id) or self._done.get(reservation_id):
                return []
            self._remember(reservation_id, None)
        return self._direct(self.inner.charge, reservation_id, holds, cost_usd, ttl_s=ttl_s, now=now)

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        return self.inner.status(prefix, now=now)

    def close(self) -> None:
        """Return every slice whose calls have finished, then close the store."""
        self.return_slices(everything=True)
        self._closed.set()
        self.inner.close()

    def __enter__(self) -> LeasedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def return_slices(self, *, everything: bool = False) -> None:
        """Return slices past admitting (``everything``: all of them) once their calls have finished;
        a slice with calls still running is returned when its last one finishes."""
        mono = time.monotonic()
        with self._lock:
            for slot, lease in list(self._open.items()):
                if everything or mono >= lease.admit_until_mono:
                    self._retire(slot, lease)
            self._forget_lapsed(mono)
            drained = self._drained()
            now = self._now(mono)
        self._return(drained, now)

    # -- internals -----------------------------------------------------------------------------
    def _admit(
        self, rid: str, holds: Sequence[Hold], amounts: Sequence[int], ttl_s: float, now: datetime, mono: float
    ) -> LocalCall | None:
        """Admit from this process's slices, taking new ones where needed (the lock is held)."""
        if len(holds) == 1:  # the usual call: one budget, its slice open with room
            lease = self._open.get(slot(holds[0]))
            if lease is not None and lease.admits(now, mono, ttl_s, amounts[0]):
                lease.held += amounts[0]
                lease.calls += 1
                local = LocalCall(tuple(holds), (lease,), tuple(amounts), ttl_s, Reservation(rid, True),
                                  lease.admit_until_mono + ttl_s)
                self._held[rid] = local
                return local
        leases: list[Lease | None] = []
        for hold, amount in zip(holds, amounts, strict=True):
            lease = self._open.get(slot(hold))
            leases.append(lease if lease is not None and lease.admits(now, mono, ttl_s, amount) else None)
        missing = [i for i, lease in enumerate(leases) if lease is None]
        if missing:
            taken = self._take([holds[i] for i in missing], [amounts[i] for i in missing], ttl_s, now, mono)
            if taken is None:
                return None
            for i, lease in zip(missing, taken, strict=True):
                leases[i] = lease
        picked = tuple(lease for lease in leases if lease is not None)
        for lease, amount in zip(picked, amounts, strict=True):
            lease.held += amount
            lease.calls += 1
        local = LocalCall(tuple(holds), picked, tuple(amounts), ttl_s, Reservation(rid, True),
                       max(lease.admit_until_mono for lease in picked) + ttl_s)
        self._held[rid] = local
        return local

    def _take(
        self, holds: Sequence[Hold], amounts: Sequence[int], ttl_s: float, now: datetime, mono: float
    ) -> list[Lease] | None:
        """New slices for ``holds`` in one store reserve; None when they are too small to pay or the
        store refuses them (the slices they replace are retired either way)."""
        sizes = [int(min(self.calls * a, self.share * to_micros(h.limit_usd or 0.0)))
                 for h, a in zip(holds, amounts, strict=True)]
        if any(size < 2 * a for size, a in zip(sizes, amounts, strict=True)):
            return None
        rid = f"{self._prefix}{next(self._ids):x}"
        slices = [dataclasses.replace(h, amount_usd=size / 1e6) for h, size in zip(holds, sizes, strict=True)]
        for hold in holds:
            old = self._open.get(slot(hold))
            if old is not None:
                self._retire(slot(hold), old)
        try:
            outcome = self.inner.reserve(rid, slices, ttl_s=self.admit_s + ttl_s, now=now)
            self._changed()
        except LedgerError as exc:
            log.debug("no budget slice taken (%s); reserving the call itself", describe(exc))
            return None
        if not outcome.granted:
            return None
        taken = []
        for hold, size in zip(slices, sizes, strict=True):
            lease = Lease(rid, slot(hold), hold, size, now + timedelta(seconds=self.admit_s),
                           mono + self.admit_s, now + timedelta(seconds=self.admit_s + ttl_s))
            self._open[lease.slot] = lease
            taken.append(lease)
        self._slices[rid] = tuple(taken)
        sweep_later(self)
        return taken

    def _return(self, rids: Sequence[str], now: datetime) -> None:
        for rid in rids:
            try:
                self.inner.release(rid, now=now)
            except Exception as exc:  # the store lets it lapse at its TTL
                log.warning("could not return budget slice %s (%s); it lapses at its TTL", rid, describe(exc))
        if rids:  # a read made while the store still held them must not be reused
            with self._lock:
                self._changed()

    def _finish(self, rid: str, local: LocalCall, cost: int | None, now: datetime) -> None:
        with self._lock:
            if self._held.pop(rid, None) is not local:
                return
            self._remember(rid, local)
            for lease, amount in zip(local.leases, local.amounts, strict=True):
                lease.held -= amount
                lease.calls -= 1
                if cost is not None:
                    lease.charged += cost
                if lease.retired and lease.calls == 0:
                    self._drainable.add(lease.rid)
            if cost is not None:
                for hold in local.holds:
                    self._charged[hold.key] = self._charged.get(hold.key, 0) + cost
            drained = self._drained() if self._drainable else []
        self._return(drained, now)

    def _direct(self, op: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A store operation on a reservation of the store's own (not leased)."""
        with self._lock:
            self._changed()
        try:
            return op(*args, **kwargs)
        finally:
            with self._lock:
                self._changed()


__all__ = ["LeasedLedger"]
