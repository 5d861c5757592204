"""What every ledger store shares: the reserve decision, alerts and the algorithm.

Money crosses the API as float dollars and is stored as integer **micro-dollars** (``$1 =
1_000_000``): sums of integers never drift, and ``$0.000001`` is far below any token price that
matters (``hold_specs.py`` converts a reservation's holds to store units). Every store keeps the
same logical state:

* a **bucket** per window key — settled micro-dollars, plus the limit, window and window end of
  the last hold seen (for ``status``) and when the bucket may be dropped;
* a **hold** per (reservation, key) — micro-dollars and when it expires (``now + ttl_s``);
* a **record** per reservation — its state (``g`` granted and holding, ``r`` refused, ``s``
  settled, ``x`` released), the outcome to repeat, and its holds; it outlives the TTL by
  ``record_grace_s`` so retries stay idempotent and a late settle still charges the call;
* an **alert marker** per (window key, threshold), set only if absent.

Memory and PostgreSQL run the one algorithm here (:func:`reserve_in`, :func:`settle_in`,
:func:`release_in`, :func:`charge_in`) against a :class:`Txn` — their transaction; only the I/O edge differs. Redis
runs the same steps as Lua scripts (``redis.py``) and SQLite as a few combined statements
(``sqlite.py``: it is the embedded default, on the call-guard's path), reusing :func:`decide`,
:func:`lock_keys` and :func:`crossed` from here; the contract tests hold all four to one behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, Self

from costwarden.adapters.ledger.hold_specs import HoldSpec, to_usd
from costwarden.engine.ledger import Alert, Hold, Ledger, Reservation
from costwarden.errors import UnknownReservation

if TYPE_CHECKING:
    from costwarden.adapters.ledger.status import BudgetStatus

RECORD_GRACE_S = 900.0
"""How long a reservation record outlives its TTL: late settles still charge, retries stay idempotent."""
PURGE_EVERY_MS = 60_000
"""How often (by the callers' clock) a store sweeps expired records, buckets and markers."""

State = str  # "g" granted (holding) | "r" refused | "s" settled | "x" released


class LedgerStore(Ledger, Protocol):
    """A :class:`~costwarden.engine.ledger.Ledger` that can also report and be closed."""

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        """Spend, live holds and limit of every current budget window whose key starts with ``prefix``."""
        ...

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        """Charge ``cost_usd`` to the key of every hold in one atomic step under a new id — what an
        unchecked ``reserve`` of the cost and its ``settle`` do, in one round trip: never refused,
        alerts as a settle's. An id this store has a record of charges nothing (a retry, or an id
        reserved before), so a charge whose outcome is unknown can be repeated. Status shows the
        limit and window of a key as its last reservation set them; a charge records only spend.
        The leased ledger settles each call admitted from a budget slice this way."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """A reservation as stored: its state, the outcome to repeat, and what it holds."""

    state: State
    outcome: Reservation
    specs: tuple[HoldSpec, ...]
    expires_ms: int
    purge_ms: int


def lock_keys(specs: Iterable[HoldSpec], *, windows: bool = True) -> dict[str, int | None]:
    """The buckets an operation touches, sorted (one lock order for every store), with how long
    each must be kept: a hold's own key, plus every key of its window when ``windows``."""
    if isinstance(specs, tuple | list) and len(specs) == 1:  # the common case: every key kept as long
        (only,) = specs
        named = (*only.window, only.key) if windows else (only.key,)
        return dict.fromkeys(sorted(set(named)), only.keep_until_ms)
    keys: dict[str, int | None] = {}
    for s in specs:
        for k in (*s.window, s.key) if windows else (s.key,):
            known = [x for x in (keys.get(k), s.keep_until_ms) if x is not None]
            keys[k] = max(known) if known else None
    return dict(sorted(keys.items()))


def decide(reservation_id: str, specs: Sequence[HoldSpec], totals: Mapping[str, int]) -> Reservation:
    """Grant only if every checked hold fits its limit, counting the holds before it in this reservation."""
    pending: dict[str, int] = {}
    for s in specs:
        if s.limit is not None and s.check:
            total = sum(totals.get(k, 0) + pending.get(k, 0) for k in s.window)
            if total + s.amount > s.limit:
                return Reservation(reservation_id, False, s.key, to_usd(total), to_usd(s.limit))
        pending[s.key] = pending.get(s.key, 0) + s.amount
    return Reservation(reservation_id, True)


def crossed(spec: HoldSpec, window_settled: int, cost: int) -> list[float]:
    """The alert thresholds that settled spend over the window has reached, now that ``cost`` was
    added to it: a threshold is its share of the limit rounded to the micro-dollar (``0.55 * $100``
    is 55000000.00000001 micro-dollars as a float, which spend of exactly $55 would not reach).

    A rolling window (more than one bucket) alerts only when this cost carried its spend across the
    threshold: its spend falls as old hours leave it, so "reached" would alert again in every new
    hour while it stays above; a calendar window alerts once per window (the marker)."""
    if spec.limit is None:
        return []
    before = window_settled - cost if len(spec.window) > 1 else -1
    return [t for t in spec.alert_at if before < math.floor(t * spec.limit + 0.5) <= window_settled]


class Txn(Protocol):
    """One store transaction; every method runs inside it. Implementations serialise reservations
    that share a key (a lock, ``BEGIN IMMEDIATE``, row locks taken in :func:`lock_keys` order)."""

    def claim(self, reservation_id: str) -> Record | None:
        """The existing record, or None after claiming the id for this transaction."""
        ...

    def load(self, reservation_id: str) -> Record | None:
        """The record, locked until the transaction ends."""
        ...

    def lock(self, keys: Mapping[str, int | None]) -> None:
        """Lock (creating if needed) the buckets, in the given (sorted) order."""
        ...

    def totals(self, keys: Sequence[str], now_ms: int) -> dict[str, int]:
        """Settled plus live (unexpired) held micro-dollars per key; may drop expired holds."""
        ...

    def settled(self, keys: Sequence[str]) -> dict[str, int]:
        """Settled micro-dollars per key."""
        ...

    def hold(self, reservation_id: str, specs: Sequence[HoldSpec], expires_ms: int) -> None:
        """Add the holds and record each bucket's limit, window and window end."""
        ...

    def unhold(self, reservation_id: str, specs: Sequence[HoldSpec], cost: int | None) -> None:
        """Drop the reservation's holds; with a cost, add it to each hold's bucket."""
        ...

    def put(self, reservation_id: str, record: Record) -> None:
        """Write the record (the claimed id, or a state change)."""
        ...

    def mark(self, key: str, threshold: float, keep_until_ms: int | None) -> bool:
        """Set the alert marker if absent; True if this call set it."""
        ...


def reserve_in(
    txn: Txn, reservation_id: str, specs: Sequence[HoldSpec], *, now_ms: int, ttl: int, grace: int
) -> Reservation:
    existing = txn.claim(reservation_id)
    if existing is not None:
        return existing.outcome
    keys = lock_keys(specs)
    txn.lock(keys)
    outcome = decide(reservation_id, specs, txn.totals(list(keys), now_ms))
    expires = now_ms + ttl
    if outcome.granted:
        txn.hold(reservation_id, specs, expires)
    kept = tuple(specs) if outcome.granted else ()
    txn.put(reservation_id, Record("g" if outcome.granted else "r", outcome, kept, expires, expires + grace))
    return outcome


def settle_in(txn: Txn, reservation_id: str, cost: int) -> list[Alert]:
    record = txn.load(reservation_id)
    if record is None:
        raise UnknownReservation(
            f"cannot settle unknown reservation {reservation_id!r}: it was never reserved here or its record "
            "expired (records are kept for ttl_s + record_grace_s)"
        )
    if record.state != "g":
        return []
    txn.lock(lock_keys(record.specs, windows=_alerting(record.specs)))
    txn.unhold(reservation_id, record.specs, cost)
    txn.put(reservation_id, replace(record, state="s"))
    return alerts_in(txn, record.specs, cost)


def charge_in(
    txn: Txn, reservation_id: str, specs: Sequence[HoldSpec], cost: int, *, now_ms: int, ttl: int, grace: int
) -> list[Alert]:
    """``LedgerStore.charge``: a settled record and the cost on every spec's bucket, unless the id
    has a record already (then nothing)."""
    if txn.claim(reservation_id) is not None:
        return []
    txn.lock(lock_keys(specs, windows=_alerting(specs)))
    txn.unhold(reservation_id, specs, cost)  # no holds to drop: adds the cost to each bucket
    expires = now_ms + ttl
    txn.put(reservation_id, Record("s", Reservation(reservation_id, True), tuple(specs), expires, expires + grace))
    return alerts_in(txn, specs, cost)


def alerts_in(txn: Txn, specs: Sequence[HoldSpec], cost: int) -> list[Alert]:
    """After ``cost`` was settled on ``specs``: the alert thresholds their windows' settled spend
    reached (:func:`crossed`), each marked (and so returned) once."""
    alerting = [s for s in specs if s.alert_at and s.limit is not None]
    if not alerting:
        return []
    sums = txn.settled(sorted({k for s in alerting for k in s.window}))
    alerts: list[Alert] = []
    for s in alerting:
        total = sum(sums.get(k, 0) for k in s.window)
        alerts.extend(
            Alert(s.key, t, to_usd(total), to_usd(s.limit or 0))
            for t in crossed(s, total, cost)
            if txn.mark(s.key, t, s.keep_until_ms)
        )
    return alerts


def _alerting(specs: Sequence[HoldSpec]) -> bool:
    return any(s.alert_at and s.limit is not None for s in specs)


def release_in(txn: Txn, reservation_id: str) -> None:
    record = txn.load(reservation_id)
    if record is None or record.state != "g":
        return
    txn.lock(lock_keys(record.specs, windows=False))
    txn.unhold(reservation_id, record.specs, None)
    txn.put(reservation_id, replace(record, state="x"))


__all__ = [
    "PURGE_EVERY_MS",
    "RECORD_GRACE_S",
    "LedgerStore",
    "Record",
    "Txn",
    "alerts_in",
    "charge_in",
    "crossed",
    "decide",
    "lock_keys",
    "release_in",
    "reserve_in",
    "settle_in",
]
