"""The shared ledger algorithm (``store.py``) as SQLite statements, each step a function of an open
connection inside the caller's transaction (``sqlite.py`` holds the connection, the locks and the
transactions)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence

from costwarden.adapters.ledger.hold_specs import HoldSpec, dump_specs, load_specs, to_micros, to_usd
from costwarden.adapters.ledger.store import Record, crossed, decide, lock_keys
from costwarden.engine.ledger import Alert, Reservation
from costwarden.errors import UnknownReservation

RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
"""``UPDATE ... RETURNING`` (SQLite 3.35+) moves a reservation and reads its holds in one statement."""
_LOAD = (
    "SELECT state, refused_key, spent, limit_micros, specs, expires_ms, purge_ms FROM ledger_reservations WHERE id = ?"
)
_CLAIM = (
    "INSERT INTO ledger_reservations (id, state, specs, expires_ms, purge_ms) VALUES (?, 'g', ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
_REFUSE = (
    "UPDATE ledger_reservations SET state = 'r', refused_key = ?, spent = ?, limit_micros = ?, specs = '[]'"
    " WHERE id = ?"
)
_KEEP = "max(coalesce(keep_until_ms, excluded.keep_until_ms), excluded.keep_until_ms)"
# One upsert covers what the shared algorithm's lock / hold / unhold steps write to the buckets:
# create the row, extend how long it is kept (SQLite's max() is NULL when an argument is: a hold
# without a window end keeps its bucket for good), add settled spend, and (rows with a window: a
# hold's own key on a grant) record the limit, window and end that ``status`` shows.
_UPSERT = (
    "INSERT INTO ledger_buckets (key, settled, keep_until_ms, limit_micros, window, ends_ms) VALUES {rows}"
    f" ON CONFLICT (key) DO UPDATE SET settled = settled + excluded.settled, keep_until_ms = {_KEEP},"
    " limit_micros = CASE WHEN excluded.window IS NULL THEN limit_micros ELSE excluded.limit_micros END,"
    " window = coalesce(excluded.window, window),"
    " ends_ms = CASE WHEN excluded.window IS NULL THEN ends_ms ELSE excluded.ends_ms END"
)
# The window's buckets (with what the upsert would write, so unchanged rows are not rewritten)
# and the live holds on them, in one statement.
_TOTALS = (
    "SELECT 0, key, settled, keep_until_ms, limit_micros, window, ends_ms FROM ledger_buckets"
    " WHERE key IN ({marks}) UNION ALL"
    " SELECT 1, key, sum(amount), NULL, NULL, NULL, NULL FROM ledger_holds"
    " WHERE key IN ({marks}) AND expires_ms > ? GROUP BY key"
)
SPENT = (
    "SELECT key, settled FROM ledger_buckets WHERE key IN ({marks}) UNION ALL"
    " SELECT key, sum(amount) FROM ledger_holds WHERE key IN ({marks}) AND expires_ms > ? GROUP BY key"
)
_HOLD = "INSERT OR REPLACE INTO ledger_holds (key, reservation_id, amount, expires_ms) VALUES {rows}"
_UNHOLD = "DELETE FROM ledger_holds WHERE reservation_id = ? AND key IN ({marks})"
_SETTLED = "SELECT key, settled FROM ledger_buckets WHERE key IN ({marks})"
_MARK = "INSERT OR IGNORE INTO ledger_alerts VALUES (?, ?, ?)"


@functools.cache
def in_marks(template: str, n: int) -> str:
    """``template`` with ``{marks}`` for ``n`` keys (one text per size, so sqlite3 caches the statement)."""
    return template.format(marks=",".join("?" * n))


@functools.cache
def _values(template: str, n: int, width: int) -> str:
    """``template`` with ``{rows}`` for ``n`` rows of ``width`` values (one multi-row statement)."""
    row = "(" + ",".join("?" * width) + ")"
    return template.format(rows=",".join([row] * n))


def _load(db: sqlite3.Connection, reservation_id: str) -> Record | None:
    row = db.execute(_LOAD, (reservation_id,)).fetchone()
    if row is None:
        return None
    state, key, spent, limit, specs, expires, purge = row
    outcome = Reservation(
        reservation_id,
        state != "r",
        key,
        None if spent is None or state != "r" else to_usd(spent),  # a settled record's is its cost
        None if limit is None else to_usd(limit),
    )
    return Record(state, outcome, load_specs(specs), expires, purge)


def _upsert(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """``(key, settled, keep_until_ms, limit, window JSON or None, ends_ms)`` per bucket."""
    db.execute(_values(_UPSERT, len(rows), 6), [v for row in rows for v in row])


def reserve(
    db: sqlite3.Connection, reservation_id: str, specs: Sequence[HoldSpec], now_ms: int, ttl: int, grace: int
) -> tuple[Reservation, bool]:
    """The shared algorithm (``reserve_in``) in three or four statements: claim the id with a
    granted record (a repeat finds the first one), read the window, then write the holds and the
    buckets that change, or turn the record into the refusal. ``BEGIN IMMEDIATE`` makes the read
    and the writes one atomic step. Also says whether this call made the record (not a repeat)."""
    expires = now_ms + ttl
    if db.execute(_CLAIM, (reservation_id, dump_specs(specs), expires, expires + grace)).rowcount != 1:
        existing = _load(db, reservation_id)
        assert existing is not None  # the claim conflicted with it inside this transaction
        return existing.outcome, False
    if not specs:
        return Reservation(reservation_id, True), True
    keys = lock_keys(specs)
    totals: dict[str, int] = {}
    stored: dict[str, tuple[object, ...]] = {}
    for held, key, amount, *bucket in db.execute(in_marks(_TOTALS, len(keys)), (*keys, *keys, now_ms)):
        totals[key] = totals.get(key, 0) + amount
        if not held:
            stored[key] = tuple(bucket)
    outcome = decide(reservation_id, specs, totals)
    own = {s.key: s for s in specs} if outcome.granted else {}
    rows: list[tuple[object, ...]] = []
    for key, keep in keys.items():
        old = stored.get(key)
        s = own.get(key)
        new_keep = keep if old is None else _kept(old[0], keep)
        if s is None:
            if old is None or new_keep != old[0]:
                rows.append((key, 0, keep, None, None, None))
        else:
            meta = (s.limit, _window_json(s.window), s.ends_ms)
            if old is None or new_keep != old[0] or meta != old[1:]:
                rows.append((key, 0, keep, *meta))
    if rows:
        _upsert(db, rows)
    if outcome.granted:
        held_rows = [v for s in specs for v in (s.key, reservation_id, s.amount, expires)]
        db.execute(_values(_HOLD, len(specs), 4), held_rows)
    else:
        spent = None if outcome.spent_usd is None else to_micros(outcome.spent_usd)
        limit = None if outcome.limit_usd is None else to_micros(outcome.limit_usd)
        db.execute(_REFUSE, (outcome.refused_key, spent, limit, reservation_id))
    return outcome, True


CHARGE = (
    "INSERT INTO ledger_reservations (id, state, spent, specs, expires_ms, purge_ms) VALUES (?, 's', ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
"""A charge: a settled record under a new id; the ``ledger_charge`` trigger adds its cost to each
hold's bucket within the same statement. An id with a record already inserts (and charges) nothing."""
MOVE = "UPDATE ledger_reservations SET state = ?, spent = ? WHERE id = ? AND state = 'g'"
"""Settle (``s``, with the cost) or release (``x``) a granted reservation: the ``ledger_unhold``
trigger drops its holds and charges the cost to each hold's bucket within the same statement."""
_KNOWN = "SELECT 1 FROM ledger_reservations WHERE id = ?"


def _take(db: sqlite3.Connection, reservation_id: str, state: str, cost: int | None) -> tuple[HoldSpec, ...] | None:
    """Move a granted reservation to ``state`` ("s" settled at ``cost``, "x" released) and return
    its holds; () when it is no longer granted (settle and release are idempotent), None when unknown."""
    if RETURNING:
        rows = db.execute(MOVE + " RETURNING specs", (state, cost, reservation_id)).fetchall()
        if rows:
            return load_specs(rows[0][0])
        return () if db.execute(_KNOWN, (reservation_id,)).fetchone() is not None else None
    row = db.execute("SELECT state, specs FROM ledger_reservations WHERE id = ?", (reservation_id,)).fetchone()
    if row is None:
        return None
    if row[0] != "g":
        return ()
    db.execute(MOVE, (state, cost, reservation_id))
    return load_specs(row[1])


def settle(db: sqlite3.Connection, reservation_id: str, cost: int) -> list[Alert]:
    """The shared algorithm (``settle_in``): drop the holds and add the cost to every hold's bucket
    (both by the trigger), then set the marker of each alert threshold the window's settled spend
    reached, once."""
    specs = _take(db, reservation_id, "s", cost)
    if specs is None:
        raise UnknownReservation(
            f"cannot settle unknown reservation {reservation_id!r}: it was never reserved here or its record "
            "expired (records are kept for ttl_s + record_grace_s)"
        )
    return _alerts(db, specs, cost)


def charge(db: sqlite3.Connection, params: tuple[object, ...], specs: Sequence[HoldSpec]) -> list[Alert]:
    """The shared algorithm (``charge_in``) with alert thresholds: the charge, then the alerts."""
    if db.execute(CHARGE, params).rowcount != 1:
        return []
    cost = params[1]
    assert isinstance(cost, int)  # CHARGE's second value: the cost in micro-dollars
    return _alerts(db, specs, cost)


def _alerts(db: sqlite3.Connection, specs: Sequence[HoldSpec], cost: int) -> list[Alert]:
    """The shared algorithm (``alerts_in``): mark each alert threshold the windows' settled spend reached, once."""
    alerting = [s for s in specs if s.alert_at and s.limit is not None]
    if not alerting:
        return []
    window = sorted({k for s in alerting for k in s.window})
    sums = dict(db.execute(in_marks(_SETTLED, len(window)), window).fetchall())
    alerts: list[Alert] = []
    for s in alerting:
        total = sum(sums.get(k, 0) for k in s.window)
        alerts.extend(
            Alert(s.key, t, to_usd(total), to_usd(s.limit or 0))
            for t in crossed(s, total, cost)
            if db.execute(_MARK, (s.key, repr(t), s.keep_until_ms)).rowcount == 1
        )
    return alerts


def _kept(old: object, new: int | None) -> int | None:
    """The upsert's ``keep_until_ms``: ``max(coalesce(old, new), new)``, NULL when ``new`` is."""
    if new is None:
        return None
    return new if old is None else max(old, new)  # type: ignore[call-overload]


@functools.lru_cache(maxsize=1024)
def _window_json(window: tuple[str, ...]) -> str:
    return json.dumps(window)


__all__ = ["CHARGE", "MOVE", "RETURNING", "SPENT", "charge", "in_marks", "reserve", "settle"]
