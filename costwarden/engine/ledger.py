"""The budget ledger interface: reserve → call → settle, with windows as keys.

The engine reads spend through :meth:`Ledger.spent` when it judges a ``budget`` rule; the
call-guard reserves worst-case cost before a call and settles the real cost after it. Stores
live in ``costwarden.adapters.ledger`` (memory, SQLite, Redis, PostgreSQL) and are opened by URL
with ``costwarden.open_ledger``.

Contract every store keeps:

* ``reserve`` holds ``amount_usd`` on each hold's ``key`` atomically — all or nothing — and
  refuses (returns a refusal naming the first key that would overflow, with the window's spend
  and limit) when any hold's window sum — settled spend plus live reservations over
  ``window_keys``, plus what earlier holds of the same call add there — would pass its limit;
  exactly the limit is allowed; a hold with ``check=False`` is never refused (spend already
  admitted elsewhere, or a budget that only warns) but counts like any other and keeps its
  limit for ``status`` and alerts;
* reservations are idempotent per ``reservation_id``: reserving again, from any process, returns
  the first outcome — a refusal included — without holding twice;
* ``settle`` replaces the held amounts by the actual cost, charged in full to every hold's key
  (each budget sees the whole call), and is idempotent; a settle that arrives after the TTL still
  charges (the call was made) while the record is kept (``keep_s`` after the TTL, by default the
  store's ``record_grace_s``); settling an unknown (or long-purged) reservation raises
  :class:`~costwarden.errors.LedgerError` rather than silently dropping the cost;
* ``release`` drops an unsettled reservation and is idempotent; whichever of settle and release
  comes first wins, the other is a no-op; a reservation never settled stops counting ``ttl_s``
  after it was made and is purged lazily (no sweeper);
* ``settle`` returns an :class:`Alert` for each ``alert_at`` threshold that settled spend over
  the window reached, exactly once per threshold per window key, across processes (a rolling
  window, whose spend also falls, alerts when a settle carries it across the threshold);
* the ledger's clock is the ``now`` its callers pass: TTLs and windows are judged by it;
* a store that cannot be reached, or does not answer within its timeout, raises
  :class:`~costwarden.errors.LedgerError` — never a silent allow.

Stores keep money as integer micro-dollars, so sums of many small costs do not drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Hold:
    """An amount to hold against one budget, as a ``budget`` rule asks the call-guard to reserve it.

    ``key`` is the bucket that receives the amount (``budget:<policy>/<rule>:user=alice:2026-11-30``);
    ``window`` lists every bucket whose sum is compared with ``limit_usd`` — just ``(key,)`` for
    calendar windows, the last N+1 hourly buckets for ``rolling:<N>h`` (``engine/budget.py``).
    ``expires_at`` is when the window ends — when ``key`` stops receiving spend (None: never); a
    store keeps the bucket while any window may still read it (for a window of W hourly buckets,
    W-1 hours longer) plus a day's grace.
    ``alert_at`` holds the fractions of the limit at which an alert fires once per window key (a
    rolling window: when a settle carries its spend across one).
    ``check=False`` holds the amount without comparing the window with the limit: for spend that
    was admitted already (a Message Batch's hold moving to the batch's name) or that a budget only
    warns about; the limit still names the budget's size in ``status`` and for alerts.
    """

    key: str
    amount_usd: float
    limit_usd: float | None = None
    window: tuple[str, ...] = ()
    expires_at: datetime | None = None
    alert_at: tuple[float, ...] = ()
    check: bool = True

    @property
    def window_keys(self) -> tuple[str, ...]:
        return self.window or (self.key,)


@dataclass(frozen=True, slots=True)
class Alert:
    """A budget crossed ``threshold`` (a fraction of its limit) for the first time in a window."""

    key: str
    threshold: float
    spent_usd: float
    limit_usd: float

    def __str__(self) -> str:
        return f"{self.key} crossed {self.threshold * 100:g}% (${self.spent_usd:,.4f} of ${self.limit_usd:,.2f})"


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of a reserve call. ``refused_key`` names the first key that would overflow."""

    reservation_id: str
    granted: bool
    refused_key: str | None = None
    spent_usd: float | None = None
    limit_usd: float | None = None


@runtime_checkable
class Ledger(Protocol):
    """A budget ledger store."""

    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        """Settled spend plus live reservations per key, in order."""
        ...

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        """Hold every amount at once or none; idempotent per ``reservation_id``. The record outlives
        ``ttl_s`` by ``keep_s`` (None: the store's ``record_grace_s``), so a settle that late still
        charges — a Message Batch's results may be read weeks after its hold expired."""
        ...

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        """Replace a reservation's holds by the actual cost; idempotent. Returns the alert
        thresholds this settlement crossed for the first time in their windows."""
        ...

    def release(self, reservation_id: str, *, now: datetime) -> None:
        """Drop an unsettled reservation; idempotent."""
        ...


__all__ = ["Alert", "Hold", "Ledger", "Reservation"]
