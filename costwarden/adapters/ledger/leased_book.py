"""What a leased ledger (``leased.py``) remembers between calls, and the bookkeeping that changes
it under the ledger's lock: the slices open and retired, the store reservations they are held
under, the calls admitted from them, finished ids kept for idempotency, and the spend-read cache.

It is separate from ``leased.py`` because nothing here talks to the store: these methods only
move figures between the collections (and say which store reservations may now be returned),
while ``leased.py`` takes, charges and returns slices in the store. The records themselves
(``Lease``, ``LocalCall``) are in ``leased_slices.py``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta

from costwarden.adapters.ledger.leased_slices import Lease, LocalCall, Slot
from costwarden.engine.ledger import Hold

DONE_KEPT = 65_536
"""Finished reservation ids remembered for idempotency (an older one is asked of the store)."""


class LeaseBook:
    """The in-memory state of a leased ledger; every method but ``_reset`` runs with ``_lock`` held."""

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Slot, Lease] = {}  # the slice admitting calls, per budget window
        self._retired: list[Lease] = []  # slices past admitting, returned once their calls finish
        self._slices: dict[str, tuple[Lease, ...]] = {}  # store reservation -> the slices it holds
        self._drainable: set[str] = set()  # store reservations that may have just lost their last call
        self._held: dict[str, LocalCall] = {}
        self._done: OrderedDict[str, LocalCall | None] = OrderedDict()  # None: the store's reservation
        self._clock = (datetime.now().astimezone(), time.monotonic())
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self._ids = itertools.count()
        self._prefix = f"cw-lease-{os.urandom(8).hex()}-"
        self._spent: dict[str, tuple[float, int]] = {}  # key -> (fresh until, others' spend and holds)
        self._charged: dict[str, int] = {}  # what this process's leased calls charged, per key
        self._version = 0  # changes when this process's slices or store reservations change the store
        self._charging = 0  # leased calls' charges sent to the store and not yet counted in _charged
        self._charges = 0  # charges started, so a read can tell whether one overlapped it

    def _leasable(self, holds: Sequence[Hold], amounts: Sequence[int]) -> bool:
        for hold, amount in zip(holds, amounts, strict=True):
            if not hold.check or hold.limit_usd is None or amount <= 0:
                return False
        return 0 < len(holds) == (1 if len(holds) == 1 else len({h.key for h in holds}))

    def _retire(self, slot: Slot, lease: Lease) -> None:
        if self._open.get(slot) is lease:
            del self._open[slot]
        if not lease.retired:
            lease.retired = True
            self._retired.append(lease)
            if lease.calls == 0:
                self._drainable.add(lease.rid)

    def _drained(self) -> list[str]:
        """Store reservations whose slices are all retired with every call finished (removed here).
        Only those that just lost a call or a slice are looked at, so a settle costs the same
        however many slices still wait for their calls."""
        drained = []
        for rid in self._drainable:
            leases = self._slices.get(rid, ())
            if leases and all(lease.retired and lease.calls == 0 for lease in leases):
                drained.append(rid)
                del self._slices[rid]
        self._drainable.clear()
        if drained:
            gone = set(drained)
            self._retired = [lease for lease in self._retired if lease.rid not in gone]
            self._changed()
        return drained

    def _forget_lapsed(self, mono: float) -> None:
        """Drop calls never settled nor released (an application that reserved and lost the id)
        once the store has let their slices lapse, so their slices are returned and memory does not
        grow. They are not remembered as finished: a settle that still comes goes to the store,
        which does not know it, and the caller charges it (as for a call that outlived its TTL)."""
        for rid, local in list(self._held.items()):
            if local.settling or mono < local.lapses_mono:
                continue
            del self._held[rid]
            for lease, amount in zip(local.leases, local.amounts, strict=True):
                lease.held -= amount
                lease.calls -= 1
                if lease.retired and lease.calls == 0:
                    self._drainable.add(lease.rid)

    def _own(self, keys: Sequence[str], what: str, now: datetime) -> dict[str, int]:
        """Per key, this process's slices' ``amount`` (held in the store) or ``held`` (by calls).
        A slice past its hold's TTL counts neither: the store has let it lapse, and the calls it
        admitted are past theirs (as their own reservations in the store would be)."""
        out = dict.fromkeys(keys, 0)
        for lease in itertools.chain(self._open.values(), self._retired):
            key = lease.slot[0]
            if key in out and lease.covers_until > now:
                out[key] += lease.amount if what == "amount" else lease.held
        return out

    def _changed(self) -> None:
        """The store changed by this process other than by a leased call's charge: cached spend is stale."""
        self._version += 1
        self._spent.clear()

    def _remember(self, rid: str, local: LocalCall | None) -> None:
        self._done[rid] = local
        while len(self._done) > DONE_KEPT:
            self._done.popitem(last=False)

    def _now(self, mono: float) -> datetime:
        seen, at = self._clock
        return seen + timedelta(seconds=max(0.0, mono - at))

    def _forget(self) -> None:
        """In a forked child: the parent's slices are the parent's."""
        self._reset()


__all__ = ["DONE_KEPT", "LeaseBook"]
