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

Here: the connection, its locks and transactions. The tables and triggers are in
``sqlite_schema.py``, the algorithm's statements in ``sqlite_steps.py``, checkpoints in
``sqlite_checkpoints.py``.
"""

from __future__ import annotations

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

from costwarden.adapters.ledger import sqlite_steps as steps
from costwarden.adapters.ledger.hold_specs import HoldSpec, dump_specs, epoch_ms, specs_from, to_micros, to_usd, ttl_ms
from costwarden.adapters.ledger.sqlite_checkpoints import Checkpointer
from costwarden.adapters.ledger.sqlite_schema import FIGURES, PURGE, prepare
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import PURGE_EVERY_MS, RECORD_GRACE_S
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError

_T = TypeVar("_T")

_QUIET_MAX = 65_536
"""Reservation ids remembered for the one-statement settle (forgetting one only costs the long path)."""


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
        folder = os.path.dirname(os.path.abspath(self.path))
        if self.path != ":memory:" and not os.path.isdir(folder):
            raise LedgerError(
                f"SQLite ledger {self.path}: the folder {folder} does not exist (create it first; in a URL, "
                "sqlite:///name.db is relative to the working directory and sqlite:////name.db is absolute)"
            )
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
            rows = self._open().execute(steps.in_marks(steps.SPENT, len(keys)), (*keys, *keys, at)).fetchall()
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
        # pop: one atomic step, as two threads may settle one id at once
        quiet = self._quiet.pop(reservation_id, False) is None
        if quiet and self._statement(steps.MOVE, ("s", cost, reservation_id)) == 1:
            return []
        return self._write(steps.settle, reservation_id, cost)

    def release(self, reservation_id: str, *, now: datetime) -> None:
        """One ``UPDATE``: a granted record becomes released (the trigger drops its holds); any
        other record, or none, is left as it is (release is idempotent)."""
        self._quiet.pop(reservation_id, None)
        self._statement(steps.MOVE, ("x", None, reservation_id))

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
            return self._write(steps.charge, params, specs)
        self._statement(steps.CHARGE, params)
        return []

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        with self._connection() as db:
            return _status(db, prefix, now_ms(now))

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
        return steps.reserve(db, reservation_id, specs, at, ttl, grace)

    def _open(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a forked child must not touch its parent's connection (nor its thread)
        self._checkpoints = None
        deadline = time.monotonic() + self.timeout_s
        while True:
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            try:
                wal = prepare(db)
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


def read_status(
    path: str | Path, prefix: str = "budget:", *, now: datetime | None = None, timeout_s: float = 2.0
) -> list[BudgetStatus]:
    """:meth:`SqliteLedger.status` of a ledger file, read without changing it: a file that holds
    no ledger (a path given by mistake, another program's database) gains no tables, keeps its
    journal mode, and shows no budgets."""
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)
    except sqlite3.Error as exc:
        raise LedgerError(f"SQLite ledger {path}: {exc}") from exc
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"ledger_buckets", "ledger_holds"} <= tables:
            return []
        return _status(db, prefix, now_ms(now))
    except sqlite3.Error as exc:
        raise LedgerError(f"SQLite ledger {path}: {exc}") from exc
    finally:
        db.close()


def _status(db: sqlite3.Connection, prefix: str, at: int) -> list[BudgetStatus]:
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    buckets = db.execute(
        "SELECT key, settled, limit_micros, window, ends_ms FROM ledger_buckets WHERE key LIKE ? ESCAPE '\\'",
        (like,),
    ).fetchall()
    buckets = [b for b in buckets if b[0].startswith(prefix)]  # SQLite's LIKE ignores ASCII case
    held = SqliteLedger._figures(db, [b[0] for b in buckets], at)
    rows = [
        BucketRow(k, s, held.get(k, (0, 0))[1], lim, tuple(json.loads(w)) if w else (), e)
        for k, s, lim, w, e in buckets
    ]
    return summarize(rows, lambda keys: SqliteLedger._figures(db, keys, at), at)


__all__ = ["SqliteLedger", "read_status"]
