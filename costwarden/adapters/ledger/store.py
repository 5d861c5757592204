"""What every ledger store shares: micro-dollars, the reserve decision, alerts and the algorithm.

Money crosses the API as float dollars and is stored as integer **micro-dollars** (``$1 =
1_000_000``): sums of integers never drift, and ``$0.000001`` is far below any token price that
matters. Every store keeps the same logical state:

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

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, Self

from costwarden.engine.ledger import Alert, Hold, Ledger, Reservation
from costwarden.errors import LedgerError

if TYPE_CHECKING:
    from costwarden.adapters.ledger.status import BudgetStatus

MICROS = 1_000_000
RECORD_GRACE_S = 900.0
"""How long a reservation record outlives its TTL: late settles still charge, retries stay idempotent."""
BUCKET_GRACE_MS = 86_400_000
"""How long a bucket is kept after the last window that reads it ends (clock skew, status)."""
ROLLING_BUCKET_MS = 3_600_000
"""Rolling windows are hourly buckets (``engine/budget.py``): a bucket named in a window of N keys
is read for N-1 more hours after it stops receiving spend."""
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
class HoldSpec:
    """A :class:`Hold` in store units: one per distinct key of a reservation."""

    key: str
    amount: int
    limit: int | None
    window: tuple[str, ...]
    ends_ms: int | None
    keep_until_ms: int | None
    alert_at: tuple[float, ...]
    check: bool = True
    """False: never refused (the hold's ``check``); the limit is kept for status and alerts."""


@dataclass(frozen=True, slots=True)
class Record:
    """A reservation as stored: its state, the outcome to repeat, and what it holds."""

    state: State
    outcome: Reservation
    specs: tuple[HoldSpec, ...]
    expires_ms: int
    purge_ms: int


def to_micros(usd: float, what: str = "amount") -> int:
    """Dollars to integer micro-dollars; refuses negative, NaN and infinite amounts."""
    if not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
        raise LedgerError(f"{what} must be a finite, non-negative number of dollars, got {usd!r}")
    return round(usd * MICROS)


def to_usd(micros: int) -> float:
    return micros / MICROS


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch (a naive datetime is local time, as ``datetime.timestamp`` says)."""
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ttl_ms(ttl_s: float) -> int:
    if not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise LedgerError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return max(1, round(ttl_s * 1000))


_Shape = tuple[int | None, tuple[str, ...], int | None, int | None, tuple[float, ...]]
_SHAPES: dict[tuple[object, ...], _Shape] = {}
_SHAPES_MAX = 4_096


def _shape(hold: Hold) -> _Shape:
    """A hold's fields other than its amount in store units (limit, window, window end, keep-until,
    thresholds). They only change when a budget's window rolls over, and a guarded call's hold
    differs from the previous call's by its amount alone, so they are converted once per window."""
    memo = (hold.key, hold.limit_usd, hold.window, hold.expires_at, hold.alert_at)
    try:
        known = _SHAPES.get(memo)
    except TypeError:  # an unhashable field (a list passed for a tuple): convert without the memo
        known, hashable = None, False
    else:
        hashable = True
    if known is not None:
        return known
    limit = None if hold.limit_usd is None else to_micros(hold.limit_usd, "limit_usd")
    ends = None if hold.expires_at is None else epoch_ms(hold.expires_at)
    window = tuple(dict.fromkeys(hold.window_keys))
    keep = None if ends is None else ends + (len(window) - 1) * ROLLING_BUCKET_MS + BUCKET_GRACE_MS
    shape = (limit, window, ends, keep, tuple(hold.alert_at))
    if hashable:
        if len(_SHAPES) >= _SHAPES_MAX:  # keys come from attribution values: stay bounded
            _SHAPES.clear()
        _SHAPES[memo] = shape
    return shape


def specs_from(holds: Sequence[Hold]) -> tuple[HoldSpec, ...]:
    """Holds in store units, merged per key (amounts add up, the strictest limit wins)."""
    merged: dict[str, HoldSpec] = {}
    for hold in holds:
        limit, window, ends, keep, alert_at = _shape(hold)
        spec = HoldSpec(hold.key, to_micros(hold.amount_usd), limit, window, ends, keep, alert_at, hold.check)
        prior = merged.get(hold.key)
        if prior is not None:  # checked if either part is: a merged hold never skips a limit
            limits = [x for x in (prior.limit, spec.limit) if x is not None]
            spec = replace(
                spec,
                amount=prior.amount + spec.amount,
                limit=min(limits) if limits else None,
                alert_at=tuple(sorted(set(prior.alert_at) | set(spec.alert_at))),
                check=prior.check or spec.check,
            )
        merged[hold.key] = spec
    return tuple(merged.values())


def dump_specs(specs: Iterable[HoldSpec]) -> str:
    """JSON for a record's holds; None fields are omitted so Lua sees ``nil``. Thresholds are
    strings so every store names an alert marker the same way.

    The text is what ``json.dumps(..., separators=(",", ":"))`` of ``{"k", "a", "w", "t"[, "l",
    "n", "e", "u"]}`` objects gives (``"u": 1`` marks a hold that is not checked), written directly
    (it is on every reservation's path), and it is remembered so that this process's
    :func:`load_specs` of it needs no parsing."""
    specs = tuple(specs)
    text = "[" + ",".join([_spec_json(s) for s in specs]) + "]"
    if len(_PARSED) >= _PARSED_MAX:  # bounded: amounts and keys vary from call to call
        _PARSED.clear()
    _PARSED[text] = specs
    return text


def _spec_json(s: HoldSpec) -> str:
    """One hold's JSON object. Everything but the amount is written once per window (see _shape)."""
    memo = (s.key, s.limit, s.window, s.ends_ms, s.keep_until_ms, s.alert_at, s.check)
    parts = _JSON_PARTS.get(memo)
    if parts is None:
        window = ",".join([_string(k) for k in s.window])
        thresholds = ",".join([_string(repr(t)) for t in s.alert_at])
        tail = f',"w":[{window}],"t":[{thresholds}]'
        if s.limit is not None:
            tail += f',"l":{int(s.limit)}'
        if s.ends_ms is not None:
            tail += f',"n":{int(s.ends_ms)}'
        if s.keep_until_ms is not None:
            tail += f',"e":{int(s.keep_until_ms)}'
        if not s.check:
            tail += ',"u":1'
        parts = (f'{{"k":{_string(s.key)},"a":', tail + "}")
        if len(_JSON_PARTS) >= _SHAPES_MAX:
            _JSON_PARTS.clear()
        _JSON_PARTS[memo] = parts
    return f"{parts[0]}{int(s.amount)}{parts[1]}"


_JSON_PARTS: dict[tuple[object, ...], tuple[str, str]] = {}


def load_specs(text: str) -> tuple[HoldSpec, ...]:
    """The holds of a record; a text this process wrote (a settle after its own reserve) is not
    parsed again: the specs are immutable, so the ones it was made from are returned."""
    known = _PARSED.get(text)
    if known is not None:
        return known
    return tuple(
        HoldSpec(
            i["k"],
            int(i["a"]),
            _int(i.get("l")),
            tuple(i["w"]),
            _int(i.get("n")),
            _int(i.get("e")),
            tuple(float(t) for t in i["t"]),
            not i.get("u"),
        )
        for i in json.loads(text)
    )


_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string literal, escaped exactly as ``json.dumps`` does (``ensure_ascii``)."""
_PARSED: dict[str, tuple[HoldSpec, ...]] = {}
_PARSED_MAX = 4_096


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


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


def crossed(spec: HoldSpec, window_settled: int) -> list[float]:
    """The alert thresholds that settled spend over the window has reached."""
    if spec.limit is None:
        return []
    return [t for t in spec.alert_at if window_settled >= t * spec.limit]


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
        raise LedgerError(
            f"cannot settle unknown reservation {reservation_id!r}: it was never reserved here or its record "
            "expired (records are kept for ttl_s + record_grace_s)"
        )
    if record.state != "g":
        return []
    txn.lock(lock_keys(record.specs, windows=_alerting(record.specs)))
    txn.unhold(reservation_id, record.specs, cost)
    txn.put(reservation_id, replace(record, state="s"))
    return alerts_in(txn, record.specs)


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
    return alerts_in(txn, specs)


def alerts_in(txn: Txn, specs: Sequence[HoldSpec]) -> list[Alert]:
    """After spend was settled on ``specs``: the alert thresholds their windows' settled spend
    reached, each marked (and so returned) once."""
    alerting = [s for s in specs if s.alert_at and s.limit is not None]
    if not alerting:
        return []
    sums = txn.settled(sorted({k for s in alerting for k in s.window}))
    alerts: list[Alert] = []
    for s in alerting:
        total = sum(sums.get(k, 0) for k in s.window)
        alerts.extend(
            Alert(s.key, t, to_usd(total), to_usd(s.limit or 0))
            for t in crossed(s, total)
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
    "LedgerStore",
    "alerts_in",
    "charge_in",
    "HoldSpec",
    "Record",
    "Txn",
    "crossed",
    "decide",
    "dump_specs",
    "epoch_ms",
    "load_specs",
    "lock_keys",
    "release_in",
    "reserve_in",
    "settle_in",
    "specs_from",
    "to_micros",
    "to_usd",
]
