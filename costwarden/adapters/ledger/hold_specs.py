"""A reservation's holds in store units — integer micro-dollars and epoch milliseconds — and the
JSON form a store keeps them in (a record's ``specs``), written and read on every reservation's path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from costwarden.engine.ledger import Hold
from costwarden.errors import LedgerError

MICROS = 1_000_000
BUCKET_GRACE_MS = 86_400_000
"""How long a bucket is kept after the last window that reads it ends (clock skew, status)."""
ROLLING_BUCKET_MS = 3_600_000
"""Rolling windows are hourly buckets (``engine/budget.py``): a bucket named in a window of N keys
is read for N-1 more hours after it stops receiving spend."""


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



MAX_MICROS = 2**53 - 1
"""The largest amount a store keeps exactly (Redis sums in Lua doubles; SQLite and PostgreSQL
integers are 64-bit): about nine billion dollars."""


def to_micros(usd: float, what: str = "amount") -> int:
    """Dollars to integer micro-dollars; refuses negative, NaN, infinite and too large amounts."""
    if not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
        raise LedgerError(f"{what} must be a finite, non-negative number of dollars, got {usd!r}")
    micros = round(usd * MICROS)
    if micros > MAX_MICROS:
        raise LedgerError(f"{what} must be at most ${MAX_MICROS / MICROS:,.0f}, got {usd!r}")
    return micros


def to_usd(micros: int) -> float:
    return micros / MICROS


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch (a naive datetime is local time, as ``datetime.timestamp`` says)."""
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ttl_ms(ttl_s: float) -> int:
    if not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0 or ttl_s * 1000 > MAX_MICROS:
        raise LedgerError(f"ttl_s must be a positive number of seconds (at most {MAX_MICROS // 1000}), got {ttl_s!r}")
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
    _check_keys(hold)
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


def _check_keys(hold: Hold) -> None:
    """Refuse a key no store keeps faithfully, alike in every store: one with a NUL character
    (SQLite's JSON functions cut a text at NUL, so a settle charged a truncated key and left the
    hold to lapse, losing the spend; PostgreSQL refuses it) or a lone surrogate (not UTF-8). The
    ``budget`` rule encodes both in attribution values (``engine/rules/budget.py``)."""
    for key in (hold.key, *hold.window):
        if "\x00" in key:
            raise LedgerError(f"ledger key {key!r} holds a NUL character, which no ledger store keeps")
        if not key.isascii():
            try:
                key.encode()
            except UnicodeEncodeError:
                raise LedgerError(f"ledger key {key!r} is not valid Unicode (a lone surrogate)") from None


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


__all__ = [
    "BUCKET_GRACE_MS",
    "MAX_MICROS",
    "MICROS",
    "ROLLING_BUCKET_MS",
    "HoldSpec",
    "dump_specs",
    "epoch_ms",
    "from_ms",
    "load_specs",
    "specs_from",
    "to_micros",
    "to_usd",
    "ttl_ms",
]
