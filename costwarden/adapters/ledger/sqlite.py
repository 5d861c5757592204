"""The embedded default ledger: one SQLite file, safe across threads and processes.

::

    ledger = SqliteLedger("/var/lib/costwarden/ledger.db")      # or open_ledger("sqlite:////var/lib/...")

Every write is one ``BEGIN IMMEDIATE`` transaction: SQLite takes the file's write lock up front,
so a reserve's read of the window and its write of the hold cannot interleave with another
process's. WAL mode lets readers (``spent``) run beside the writer; ``synchronous=NORMAL`` keeps a
commit durable across a process crash (a power loss may drop the last commits).

Threads of one process share one connection behind a lock — they queue fairly on it instead of
spinning in SQLite's busy handler — and processes wait on the file lock up to ``timeout_s``. An
operation therefore waits at most about ``timeout_s`` for the in-process lock plus ``timeout_s``
for the file lock, then raises :class:`~costwarden.errors.LedgerError`. A forked child reopens the
file instead of reusing its parent's connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import (
    PURGE_EVERY_MS,
    RECORD_GRACE_S,
    HoldSpec,
    Record,
    dump_specs,
    epoch_ms,
    load_specs,
    release_in,
    reserve_in,
    settle_in,
    specs_from,
    to_micros,
    to_usd,
    ttl_ms,
)
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_buckets (
    key TEXT PRIMARY KEY, settled INTEGER NOT NULL DEFAULT 0, limit_micros INTEGER,
    window TEXT, ends_ms INTEGER, keep_until_ms INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_holds (
    key TEXT NOT NULL, reservation_id TEXT NOT NULL, amount INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (key, reservation_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_holds_expiry ON ledger_holds (key, expires_ms, amount);
CREATE TABLE IF NOT EXISTS ledger_reservations (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, refused_key TEXT, spent INTEGER, limit_micros INTEGER,
    specs TEXT NOT NULL, expires_ms INTEGER NOT NULL, purge_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_reservations_purge ON ledger_reservations (purge_ms);
CREATE TABLE IF NOT EXISTS ledger_alerts (
    key TEXT NOT NULL, threshold TEXT NOT NULL, keep_until_ms INTEGER, PRIMARY KEY (key, threshold)) WITHOUT ROWID;
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


def _marks(n: int) -> str:
    return ",".join("?" * n)


class _Txn:
    """The shared algorithm's view of one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def claim(self, reservation_id: str) -> Record | None:
        return self.load(reservation_id)

    def load(self, reservation_id: str) -> Record | None:
        row = self.db.execute(
            "SELECT state, refused_key, spent, limit_micros, specs, expires_ms, purge_ms"
            " FROM ledger_reservations WHERE id = ?",
            (reservation_id,),
        ).fetchone()
        if row is None:
            return None
        state, key, spent, limit, specs, expires, purge = row
        outcome = Reservation(
            reservation_id,
            state != "r",
            key,
            None if spent is None else to_usd(spent),
            None if limit is None else to_usd(limit),
        )
        return Record(state, outcome, load_specs(specs), expires, purge)

    def lock(self, keys: Mapping[str, int | None]) -> None:
        self.db.executemany(
            "INSERT INTO ledger_buckets (key, keep_until_ms) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
            " keep_until_ms = max(coalesce(keep_until_ms, excluded.keep_until_ms), excluded.keep_until_ms)",
            keys.items(),
        )

    def totals(self, keys: Sequence[str], now_ms: int) -> dict[str, int]:
        marks = _marks(len(keys))
        self.db.execute(f"DELETE FROM ledger_holds WHERE key IN ({marks}) AND expires_ms <= ?", (*keys, now_ms))
        out = self.settled(keys)
        for key, held in self.db.execute(
            f"SELECT key, sum(amount) FROM ledger_holds WHERE key IN ({marks}) GROUP BY key", keys
        ):
            out[key] = out.get(key, 0) + held
        return out

    def settled(self, keys: Sequence[str]) -> dict[str, int]:
        rows = self.db.execute(f"SELECT key, settled FROM ledger_buckets WHERE key IN ({_marks(len(keys))})", keys)
        return dict(rows.fetchall())

    def hold(self, reservation_id: str, specs: Sequence[HoldSpec], expires_ms: int) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO ledger_holds (key, reservation_id, amount, expires_ms) VALUES (?, ?, ?, ?)",
            [(s.key, reservation_id, s.amount, expires_ms) for s in specs],
        )
        self.db.executemany(
            "UPDATE ledger_buckets SET limit_micros = ?, window = ?, ends_ms = ? WHERE key = ?",
            [(s.limit, json.dumps(s.window), s.ends_ms, s.key) for s in specs],
        )

    def unhold(self, reservation_id: str, specs: Sequence[HoldSpec], cost: int | None) -> None:
        keys = [s.key for s in specs]
        self.db.execute(
            f"DELETE FROM ledger_holds WHERE reservation_id = ? AND key IN ({_marks(len(keys))})",
            (reservation_id, *keys),
        )
        if cost is not None:
            self.db.execute(
                f"UPDATE ledger_buckets SET settled = settled + ? WHERE key IN ({_marks(len(keys))})", (cost, *keys)
            )

    def put(self, reservation_id: str, record: Record) -> None:
        o = record.outcome
        self.db.execute(
            "INSERT OR REPLACE INTO ledger_reservations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reservation_id,
                record.state,
                o.refused_key,
                None if o.spent_usd is None else to_micros(o.spent_usd),
                None if o.limit_usd is None else to_micros(o.limit_usd),
                dump_specs(record.specs),
                record.expires_ms,
                record.purge_ms,
            ),
        )

    def mark(self, key: str, threshold: float, keep_until_ms: int | None) -> bool:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO ledger_alerts VALUES (?, ?, ?)", (key, repr(threshold), keep_until_ms)
        )
        return cursor.rowcount == 1


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
        with self._connection():
            pass  # create the file and tables now, so a bad path fails at open time

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        at = epoch_ms(now)
        with self._connection() as db:
            figures = self._figures(db, keys, at)
        return [to_usd(sum(figures.get(k, (0, 0)))) for k in keys]

    def reserve(self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        with self._transaction() as db:
            self._purge(db, at)
            return reserve_in(_Txn(db), reservation_id, specs, now_ms=at, ttl=ttl, grace=self._grace)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        with self._transaction() as db:
            return settle_in(_Txn(db), reservation_id, cost)

    def release(self, reservation_id: str, *, now: datetime) -> None:
        with self._transaction() as db:
            release_in(_Txn(db), reservation_id)

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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _open(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a forked child must not touch its parent's connection
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
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


__all__ = ["SqliteLedger"]
