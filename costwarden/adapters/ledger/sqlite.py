"""The embedded default ledger: one SQLite file, safe across threads and processes.

::

    ledger = SqliteLedger("/var/lib/costwarden/ledger.db")      # or open_ledger("sqlite:////var/lib/...")

Every write is one transaction that takes the file's write lock up front (``BEGIN IMMEDIATE``, or
a single write statement, which does the same): SQLite takes the lock before reading,
so a reserve's read of the window and its write of the hold cannot interleave with another
process's. WAL mode lets readers (``spent``) run beside the writer; ``synchronous=NORMAL`` keeps a
commit durable across a process crash (a power loss may drop the last commits).

A reserve or settle is on every guarded LLM call's path, so each is a handful of statements (the
shared algorithm of ``store.py`` with its steps combined: a reserve claims its record, reads the
window's buckets and live holds in one ``SELECT``, and writes the holds plus only the buckets that
change), and writes three pages. A settle or release is one ``UPDATE`` of the record: the
``ledger_unhold`` trigger drops its holds and adds the cost to their buckets inside that statement,
so a settle of a reservation this ledger granted, without alert thresholds (a guarded call's), is a
single-statement transaction — atomic like any statement, durable like any commit — with no
``BEGIN``/``COMMIT`` round trips; one that must read the window for alerts, or whose reservation
was made elsewhere, runs in a ``BEGIN IMMEDIATE`` transaction around the same ``UPDATE``. A charge
(``LedgerStore.charge``: how the leased ledger settles a call admitted from a budget slice) is
likewise one ``INSERT`` of a settled record, which the ``ledger_charge`` trigger adds to its buckets. Most of
what remains is SQLite's own locking and WAL writes. WAL checkpoints — which copy the WAL back into
the database and fsync both — run in a thread of their own instead of inside whichever commit
fills the WAL (:class:`~costwarden.adapters.ledger.sqlite_checkpoints.Checkpointer`).

Threads of one process share one connection behind a lock — they queue fairly on it instead of
spinning in SQLite's busy handler — and processes wait on the file lock up to ``timeout_s``. An
operation therefore waits at most about ``timeout_s`` for the in-process lock plus ``timeout_s``
for the file lock, then raises :class:`~costwarden.errors.LedgerError`. A forked child reopens the
file instead of reusing its parent's connection.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from costwarden.adapters.ledger.sqlite_checkpoints import Checkpointer
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import (
    PURGE_EVERY_MS,
    RECORD_GRACE_S,
    HoldSpec,
    Record,
    crossed,
    decide,
    dump_specs,
    epoch_ms,
    load_specs,
    lock_keys,
    specs_from,
    to_micros,
    to_usd,
    ttl_ms,
)
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError

_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_buckets (
    key TEXT PRIMARY KEY, settled INTEGER NOT NULL DEFAULT 0, limit_micros INTEGER,
    window TEXT, ends_ms INTEGER, keep_until_ms INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_holds (
    key TEXT NOT NULL, reservation_id TEXT NOT NULL, amount INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (key, reservation_id)) WITHOUT ROWID;
DROP INDEX IF EXISTS ledger_holds_expiry;
CREATE TABLE IF NOT EXISTS ledger_reservations (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, refused_key TEXT, spent INTEGER, limit_micros INTEGER,
    specs TEXT NOT NULL, expires_ms INTEGER NOT NULL, purge_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_reservations_purge ON ledger_reservations (purge_ms);
CREATE TABLE IF NOT EXISTS ledger_alerts (
    key TEXT NOT NULL, threshold TEXT NOT NULL, keep_until_ms INTEGER, PRIMARY KEY (key, threshold)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS ledger_unhold AFTER UPDATE OF state ON ledger_reservations
WHEN OLD.state = 'g' AND NEW.state IN ('s', 'x') BEGIN
    DELETE FROM ledger_holds WHERE reservation_id = NEW.id
        AND key IN (SELECT json_extract(value, '$.k') FROM json_each(NEW.specs));
    INSERT INTO ledger_buckets (key, settled, keep_until_ms)
        SELECT json_extract(value, '$.k'), coalesce(NEW.spent, 0), json_extract(value, '$.e')
        FROM json_each(NEW.specs) WHERE true
        ON CONFLICT (key) DO UPDATE SET settled = settled + excluded.settled,
        keep_until_ms = max(coalesce(keep_until_ms, excluded.keep_until_ms), excluded.keep_until_ms);
END;
CREATE TRIGGER IF NOT EXISTS ledger_charge AFTER INSERT ON ledger_reservations
WHEN NEW.state = 's' BEGIN
    INSERT INTO ledger_buckets (key, settled, keep_until_ms)
        SELECT json_extract(value, '$.k'), NEW.spent, json_extract(value, '$.e')
        FROM json_each(NEW.specs) WHERE true
        ON CONFLICT (key) DO UPDATE SET settled = settled + excluded.settled,
        keep_until_ms = max(coalesce(keep_until_ms, excluded.keep_until_ms), excluded.keep_until_ms);
END;
"""

FIGURES = """
SELECT k.value, coalesce(b.settled, 0),
       coalesce((SELECT sum(h.amount) FROM ledger_holds h WHERE h.key = k.value AND h.expires_ms > ?), 0)
FROM json_each(?) AS k LEFT JOIN ledger_buckets b ON b.key = k.value
"""
PURGE = (
    "DELETE FROM ledger_reservations WHERE purge_ms <= ?",
    "DELETE FROM ledger_holds WHERE expires_ms <= ?",
    "DELETE FROM ledger_buckets WHERE keep_until_ms <= ?",
    "DELETE FROM ledger_alerts WHERE keep_until_ms <= ?",
)


_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
"""``UPDATE ... RETURNING`` (SQLite 3.35+) moves a reservation and reads its holds in one statement."""
_QUIET_MAX = 65_536
"""Reservation ids remembered for the one-statement settle (forgetting one only costs the long path)."""

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
_SPENT = (
    "SELECT key, settled FROM ledger_buckets WHERE key IN ({marks}) UNION ALL"
    " SELECT key, sum(amount) FROM ledger_holds WHERE key IN ({marks}) AND expires_ms > ? GROUP BY key"
)
_HOLD = "INSERT OR REPLACE INTO ledger_holds (key, reservation_id, amount, expires_ms) VALUES {rows}"
_UNHOLD = "DELETE FROM ledger_holds WHERE reservation_id = ? AND key IN ({marks})"
_SETTLED = "SELECT key, settled FROM ledger_buckets WHERE key IN ({marks})"
_MARK = "INSERT OR IGNORE INTO ledger_alerts VALUES (?, ?, ?)"


@functools.cache
def _in(template: str, n: int) -> str:
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


def _reserve(
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
    for held, key, amount, *bucket in db.execute(_in(_TOTALS, len(keys)), (*keys, *keys, now_ms)):
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


_CHARGE = (
    "INSERT INTO ledger_reservations (id, state, spent, specs, expires_ms, purge_ms) VALUES (?, 's', ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
"""A charge: a settled record under a new id; the ``ledger_charge`` trigger adds its cost to each
hold's bucket within the same statement. An id with a record already inserts (and charges) nothing."""
_MOVE = "UPDATE ledger_reservations SET state = ?, spent = ? WHERE id = ? AND state = 'g'"
"""Settle (``s``, with the cost) or release (``x``) a granted reservation: the ``ledger_unhold``
trigger drops its holds and charges the cost to each hold's bucket within the same statement."""
_KNOWN = "SELECT 1 FROM ledger_reservations WHERE id = ?"


def _take(db: sqlite3.Connection, reservation_id: str, state: str, cost: int | None) -> tuple[HoldSpec, ...] | None:
    """Move a granted reservation to ``state`` ("s" settled at ``cost``, "x" released) and return
    its holds; () when it is no longer granted (settle and release are idempotent), None when unknown."""
    if _RETURNING:
        rows = db.execute(_MOVE + " RETURNING specs", (state, cost, reservation_id)).fetchall()
        if rows:
            return load_specs(rows[0][0])
        return () if db.execute(_KNOWN, (reservation_id,)).fetchone() is not None else None
    row = db.execute("SELECT state, specs FROM ledger_reservations WHERE id = ?", (reservation_id,)).fetchone()
    if row is None:
        return None
    if row[0] != "g":
        return ()
    db.execute(_MOVE, (state, cost, reservation_id))
    return load_specs(row[1])


def _settle(db: sqlite3.Connection, reservation_id: str, cost: int) -> list[Alert]:
    """The shared algorithm (``settle_in``): drop the holds and add the cost to every hold's bucket
    (both by the trigger), then set the marker of each alert threshold the window's settled spend
    reached, once."""
    specs = _take(db, reservation_id, "s", cost)
    if specs is None:
        raise LedgerError(
            f"cannot settle unknown reservation {reservation_id!r}: it was never reserved here or its record "
            "expired (records are kept for ttl_s + record_grace_s)"
        )
    return _alerts(db, specs)


def _charge(db: sqlite3.Connection, params: tuple[object, ...], specs: Sequence[HoldSpec]) -> list[Alert]:
    """The shared algorithm (``charge_in``) with alert thresholds: the charge, then the alerts."""
    if db.execute(_CHARGE, params).rowcount != 1:
        return []
    return _alerts(db, specs)


def _alerts(db: sqlite3.Connection, specs: Sequence[HoldSpec]) -> list[Alert]:
    """The shared algorithm (``alerts_in``): mark each alert threshold the windows' settled spend reached, once."""
    alerting = [s for s in specs if s.alert_at and s.limit is not None]
    if not alerting:
        return []
    window = sorted({k for s in alerting for k in s.window})
    sums = dict(db.execute(_in(_SETTLED, len(window)), window).fetchall())
    alerts: list[Alert] = []
    for s in alerting:
        total = sum(sums.get(k, 0) for k in s.window)
        alerts.extend(
            Alert(s.key, t, to_usd(total), to_usd(s.limit or 0))
            for t in crossed(s, total)
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


class SqliteLedger:
    """A ledger in one SQLite file (``":memory:"`` for a private, single-process one)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 2.0, record_grace_s: float = RECORD_GRACE_S) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._grace = ttl_ms(record_grace_s)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._next_purge = 0
        self._checkpoints: Checkpointer | None = None
        # reservations this instance granted whose holds have no alert thresholds: settled in one statement
        self._quiet: dict[str, None] = {}
        with self._connection():
            pass  # create the file and tables now, so a bad path fails at open time

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        if not keys:
            return []
        at = epoch_ms(now)
        if not self._lock.acquire(timeout=self.timeout_s):
            raise LedgerError(f"SQLite ledger {self.path}: busy for more than {self.timeout_s}s in this process")
        try:  # one statement: one consistent snapshot of the settled spend and the live holds
            rows = self._open().execute(_in(_SPENT, len(keys)), (*keys, *keys, at)).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
        finally:
            self._lock.release()
        totals = dict.fromkeys(keys, 0)
        for key, amount in rows:
            totals[key] += amount
        return [to_usd(totals[k]) for k in keys]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        grace = self._grace if keep_s is None else ttl_ms(keep_s)
        outcome, made = self._write(self._reserve, reservation_id, specs, at, ttl, grace)
        if made and outcome.granted and not any(s.alert_at and s.limit is not None for s in specs):
            if len(self._quiet) >= _QUIET_MAX:  # reservations never settled: stay bounded
                self._quiet.clear()
            self._quiet[reservation_id] = None
        return outcome

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        """One ``UPDATE`` (its own transaction) for a reservation this ledger granted without alert
        thresholds, which is every guarded call's: the trigger unholds and charges it atomically.
        Anything else — a repeat, a reservation made elsewhere, alert thresholds to check against
        the window's spend — takes the transaction that reads the record first."""
        cost = to_micros(cost_usd, "cost_usd")
        if reservation_id in self._quiet:
            del self._quiet[reservation_id]
            if self._statement(_MOVE, ("s", cost, reservation_id)) == 1:
                return []
        return self._write(_settle, reservation_id, cost)

    def release(self, reservation_id: str, *, now: datetime) -> None:
        """One ``UPDATE``: a granted record becomes released (the trigger drops its holds); any
        other record, or none, is left as it is (release is idempotent)."""
        self._quiet.pop(reservation_id, None)
        self._statement(_MOVE, ("x", None, reservation_id))

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        """One ``INSERT`` (its own transaction) of a settled record, which the ``ledger_charge``
        trigger charges; with alert thresholds, in the ``BEGIN IMMEDIATE`` transaction that also
        marks them."""
        specs, at = specs_from(holds), epoch_ms(now)
        expires = at + ttl_ms(ttl_s)
        params = (reservation_id, to_micros(cost_usd, "cost_usd"), dump_specs(specs), expires, expires + self._grace)
        if any(s.alert_at and s.limit is not None for s in specs):
            return self._write(_charge, params, specs)
        self._statement(_CHARGE, params)
        return []

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        at = now_ms(now)
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._connection() as db:
            buckets = db.execute(
                "SELECT key, settled, limit_micros, window, ends_ms FROM ledger_buckets WHERE key LIKE ? ESCAPE '\\'",
                (like,),
            ).fetchall()
            held = self._figures(db, [b[0] for b in buckets], at)
            rows = [
                BucketRow(k, s, held.get(k, (0, 0))[1], lim, tuple(json.loads(w)) if w else (), e)
                for k, s, lim, w, e in buckets
            ]
            return summarize(rows, lambda keys: self._figures(db, keys, at), at)

    def close(self) -> None:
        with self._lock:
            if self._checkpoints is not None:
                self._checkpoints.stop()
                self._checkpoints = None
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _figures(db: sqlite3.Connection, keys: Sequence[str], now_ms: int) -> dict[str, tuple[int, int]]:
        """Settled and live-held micro-dollars per key, in one statement (one consistent snapshot)."""
        rows = db.execute(FIGURES, (now_ms, json.dumps(list(keys))))
        return {k: (settled, held) for k, settled, held in rows}

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if not self._lock.acquire(timeout=self.timeout_s):
            raise LedgerError(f"SQLite ledger {self.path}: busy for more than {self.timeout_s}s in this process")
        try:
            yield self._open()
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
        finally:
            self._lock.release()

    def _write(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(db, *args)`` in one ``BEGIN IMMEDIATE`` transaction (a plain try block rather
        than context managers: this is on every guarded call's path)."""
        if not self._lock.acquire(timeout=self.timeout_s):
            raise LedgerError(f"SQLite ledger {self.path}: busy for more than {self.timeout_s}s in this process")
        try:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db, *args)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._checkpoints is not None:
                self._checkpoints.committed(db)
            return result
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
        finally:
            self._lock.release()

    def _statement(self, sql: str, params: tuple[object, ...]) -> int:
        """One write statement in its own (autocommit) transaction, which takes the write lock as
        ``BEGIN IMMEDIATE`` does; the number of rows it changed (triggers' changes not counted)."""
        if not self._lock.acquire(timeout=self.timeout_s):
            raise LedgerError(f"SQLite ledger {self.path}: busy for more than {self.timeout_s}s in this process")
        try:
            db = self._open()
            changed = db.execute(sql, params).rowcount
            if self._checkpoints is not None:
                self._checkpoints.committed(db)
            return changed
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
        finally:
            self._lock.release()

    def _reserve(
        self, db: sqlite3.Connection, reservation_id: str, specs: Sequence[HoldSpec], at: int, ttl: int, grace: int
    ) -> tuple[Reservation, bool]:
        self._purge(db, at)
        return _reserve(db, reservation_id, specs, at, ttl, grace)

    def _open(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a forked child must not touch its parent's connection (nor its thread)
        self._checkpoints = None
        deadline = time.monotonic() + self.timeout_s
        while True:
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            try:
                wal = _prepare(db)
                break
            except sqlite3.OperationalError as exc:
                db.close()
                # Processes opening a new file at once: switching it to WAL can answer "locked"
                # without waiting on the busy timeout. Try again until the timeout is spent.
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            except sqlite3.Error:
                db.close()
                raise
        if wal:
            self._checkpoints = Checkpointer.start(self, self.path, self.timeout_s, self._lock)
        self._db, self._pid = db, os.getpid()
        return db

    def _purge(self, db: sqlite3.Connection, now_ms: int) -> None:
        """Drop expired records, holds (of windows no longer reserved against), buckets and markers,
        at most once a minute per process."""
        if now_ms < self._next_purge:
            return
        self._next_purge = now_ms + PURGE_EVERY_MS
        for statement in PURGE:
            db.execute(statement, (now_ms,))


def _prepare(db: sqlite3.Connection) -> bool:
    """WAL, the schema and manual checkpoints on a new connection; whether the file is in WAL mode."""
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    wal = bool(db.execute("PRAGMA journal_mode").fetchone()[0] == "wal")
    if wal:  # checkpoints run in a thread of their own (Checkpointer), not after a commit
        db.execute("PRAGMA wal_autocheckpoint=0")
    return wal


__all__ = ["SqliteLedger"]
