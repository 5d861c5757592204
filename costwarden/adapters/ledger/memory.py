"""An in-process ledger: exact and thread-safe, nothing persisted. For tests and single processes.

::

    ledger = MemoryLedger()
    r = ledger.reserve("call-1", holds, ttl_s=120, now=now)
    if r.granted:
        alerts = ledger.settle("call-1", 0.0123, now=now)

One lock serialises every operation, so each is atomic; the algorithm is the one every store
shares (``store.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime

from costwarden.adapters.ledger.hold_specs import HoldSpec, epoch_ms, specs_from, to_micros, to_usd, ttl_ms
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import (
    PURGE_EVERY_MS,
    RECORD_GRACE_S,
    Record,
    charge_in,
    release_in,
    reserve_in,
    settle_in,
)
from costwarden.engine.ledger import Alert, Hold, Reservation


class _Bucket:
    __slots__ = ("ends_ms", "first_expiry", "held", "held_total", "keep_until_ms", "limit", "settled", "window")

    def __init__(self) -> None:
        self.settled = 0
        self.held: dict[str, tuple[int, int]] = {}  # reservation id -> (micros, expires_ms)
        self.held_total = 0  # the sum of ``held``'s amounts
        self.first_expiry: int | None = None  # at or before the earliest expiry in ``held``
        self.limit: int | None = None
        self.window: tuple[str, ...] = ()
        self.ends_ms: int | None = None
        self.keep_until_ms: int | None = None

    def add(self, reservation_id: str, amount: int, expires_ms: int) -> None:
        self.drop(reservation_id)
        self.held[reservation_id] = (amount, expires_ms)
        self.held_total += amount
        if self.first_expiry is None or expires_ms < self.first_expiry:
            self.first_expiry = expires_ms

    def drop(self, reservation_id: str) -> None:
        gone = self.held.pop(reservation_id, None)
        if gone is not None:
            self.held_total -= gone[0]

    def live(self, now_ms: int) -> int:
        """The live holds' total. The holds are only looked through when one may have expired, so
        a reserve costs the same however many calls are in flight on the budget."""
        if self.first_expiry is not None and self.first_expiry <= now_ms:
            for rid in [rid for rid, (_, exp) in self.held.items() if exp <= now_ms]:
                self.drop(rid)
            self.first_expiry = min((exp for _, exp in self.held.values()), default=None)
        return self.held_total


class MemoryLedger:
    """Spend, live reservations, records and alert markers in dicts behind one lock."""

    in_process = True
    """No I/O: the async call-guard edges call it on the event loop rather than in a worker thread."""

    def __init__(self, *, record_grace_s: float = RECORD_GRACE_S) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._records: dict[str, Record] = {}
        self._markers: dict[tuple[str, float], int | None] = {}
        self._grace = ttl_ms(record_grace_s)
        self._next_purge = 0

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        at = epoch_ms(now)
        with self._lock:
            return [to_usd(self._total(k, at)) for k in keys]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        with self._lock:
            self._purge(at)
            grace = self._grace if keep_s is None else ttl_ms(keep_s)
            return reserve_in(self, reservation_id, specs, now_ms=at, ttl=ttl, grace=grace)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        with self._lock:
            return settle_in(self, reservation_id, cost)

    def release(self, reservation_id: str, *, now: datetime) -> None:
        with self._lock:
            release_in(self, reservation_id)

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        specs, cost, at = specs_from(holds), to_micros(cost_usd, "cost_usd"), epoch_ms(now)
        with self._lock:
            self._purge(at)
            return charge_in(self, reservation_id, specs, cost, now_ms=at, ttl=ttl_ms(ttl_s), grace=self._grace)

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        at = now_ms(now)
        with self._lock:
            rows = [
                BucketRow(k, b.settled, b.live(at), b.limit, b.window, b.ends_ms)
                for k, b in self._buckets.items()
                if k.startswith(prefix)
            ]
            return summarize(rows, lambda keys: {k: self._figures(k, at) for k in keys}, at)

    def add_spend(self, key: str, amount_usd: float) -> None:
        """Record settled spend directly (seeding tests and ``costwarden test`` cases)."""
        with self._lock:
            self._bucket(key).settled += to_micros(amount_usd)

    def close(self) -> None:
        """Nothing to release; present for the store protocol."""

    def __enter__(self) -> MemoryLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Txn the shared algorithm runs against (called with the lock held) ------------------
    def claim(self, reservation_id: str) -> Record | None:
        return self._records.get(reservation_id)

    def load(self, reservation_id: str) -> Record | None:
        return self._records.get(reservation_id)

    def lock(self, keys: Mapping[str, int | None]) -> None:
        for key, keep in keys.items():
            bucket = self._bucket(key)
            if keep is not None and (bucket.keep_until_ms is None or keep > bucket.keep_until_ms):
                bucket.keep_until_ms = keep

    def totals(self, keys: Sequence[str], now_ms: int) -> dict[str, int]:
        return {k: self._total(k, now_ms) for k in keys}

    def settled(self, keys: Sequence[str]) -> dict[str, int]:
        return {k: self._buckets[k].settled if k in self._buckets else 0 for k in keys}

    def hold(self, reservation_id: str, specs: Sequence[HoldSpec], expires_ms: int) -> None:
        for s in specs:
            bucket = self._bucket(s.key)
            bucket.add(reservation_id, s.amount, expires_ms)
            bucket.limit, bucket.window, bucket.ends_ms = s.limit, s.window, s.ends_ms

    def unhold(self, reservation_id: str, specs: Sequence[HoldSpec], cost: int | None) -> None:
        for s in specs:
            bucket = self._bucket(s.key)
            bucket.drop(reservation_id)
            if cost is not None:
                bucket.settled += cost

    def put(self, reservation_id: str, record: Record) -> None:
        self._records[reservation_id] = record

    def mark(self, key: str, threshold: float, keep_until_ms: int | None) -> bool:
        if (key, threshold) in self._markers:
            return False
        self._markers[(key, threshold)] = keep_until_ms
        return True

    # -- internals -----------------------------------------------------------------------------
    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        return bucket

    def _total(self, key: str, now_ms: int) -> int:
        bucket = self._buckets.get(key)
        return 0 if bucket is None else bucket.settled + bucket.live(now_ms)

    def _figures(self, key: str, now_ms: int) -> tuple[int, int]:
        bucket = self._buckets.get(key)
        return (0, 0) if bucket is None else (bucket.settled, bucket.live(now_ms))

    def _purge(self, now_ms: int) -> None:
        """Drop records, buckets and markers past their keep-until, at most once a minute."""
        if now_ms < self._next_purge:
            return
        self._next_purge = now_ms + PURGE_EVERY_MS
        for rid in [rid for rid, r in self._records.items() if r.purge_ms <= now_ms]:
            del self._records[rid]
        for key in [k for k, b in self._buckets.items() if b.keep_until_ms is not None and b.keep_until_ms <= now_ms]:
            del self._buckets[key]
        for marker in [m for m, keep in self._markers.items() if keep is not None and keep <= now_ms]:
            del self._markers[marker]


__all__ = ["MemoryLedger"]
