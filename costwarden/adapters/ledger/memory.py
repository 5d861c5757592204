"""An in-process ledger: exact, thread-safe, nothing persisted. For tests and single processes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from costwarden.engine.ledger import Hold, Reservation


@dataclass
class _Entry:
    holds: tuple[Hold, ...]
    expires: datetime
    outcome: Reservation
    settled: bool = False


class MemoryLedger:
    """Spend and live reservations per key, behind one lock (reserve is all-or-nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled: dict[str, float] = {}
        self._reservations: dict[str, _Entry] = {}

    def _held(self, key: str, now: datetime) -> float:
        return sum(
            h.amount_usd
            for e in self._reservations.values()
            if not e.settled and e.outcome.granted and e.expires > now
            for h in e.holds
            if h.key == key
        )

    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        with self._lock:
            return [self._settled.get(k, 0.0) + self._held(k, now) for k in keys]

    def reserve(self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime) -> Reservation:
        with self._lock:
            existing = self._reservations.get(reservation_id)
            if existing is not None:
                return existing.outcome
            for hold in holds:
                total = self._settled.get(hold.key, 0.0) + self._held(hold.key, now)
                if hold.limit_usd is not None and total + hold.amount_usd > hold.limit_usd:
                    outcome = Reservation(reservation_id, False, hold.key, total, hold.limit_usd)
                    self._reservations[reservation_id] = _Entry((), now, outcome)
                    return outcome
            outcome = Reservation(reservation_id, True)
            self._reservations[reservation_id] = _Entry(tuple(holds), now + timedelta(seconds=ttl_s), outcome)
            return outcome

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> None:
        with self._lock:
            entry = self._reservations.get(reservation_id)
            if entry is None or entry.settled or not entry.outcome.granted:
                return
            entry.settled = True
            for hold in entry.holds:
                self._settled[hold.key] = self._settled.get(hold.key, 0.0) + cost_usd

    def release(self, reservation_id: str, *, now: datetime) -> None:
        with self._lock:
            entry = self._reservations.get(reservation_id)
            if entry is not None and not entry.settled:
                entry.settled = True

    def add_spend(self, key: str, amount_usd: float) -> None:
        """Record spend directly (imports, tests)."""
        with self._lock:
            self._settled[key] = self._settled.get(key, 0.0) + amount_usd
