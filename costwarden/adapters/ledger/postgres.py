"""The PostgreSQL ledger (psycopg 3): one READ COMMITTED transaction per operation, row locks
taken in one deterministic order.

::

    ledger = PostgresLedger.from_url("postgresql://app@db/costs?schema=public&table_prefix=costwarden_ledger_")

**Locking.** A reserve first claims its reservation id (``INSERT … ON CONFLICT DO NOTHING``: a
concurrent reserve of the same id waits for this one and then repeats its outcome), then locks
the bucket row of every key in every window it reads with one upsert whose rows are ordered by
key (``COLLATE "C"``), creating missing rows. Only then does it read the window sums — in a new
statement, so under READ COMMITTED it sees every hold committed by the transactions it waited
for. Settle and release lock their own record row (``FOR UPDATE``) and then their buckets the
same way. Every transaction therefore takes at most one record row and then bucket rows in key
order, so two ledger transactions cannot deadlock; a deadlock or serialization failure caused by
something else is retried once. SERIALIZABLE with retries would also be correct but retries
storm on a hot budget row, where queueing on a row lock does not.

Money is ``bigint`` micro-dollars like every store. Tables are created on first use (under an
advisory lock, so processes starting together do not race) in ``schema`` with ``table_prefix``.

**Timeouts.** ``timeout_s`` bounds each statement and lock wait on the server
(``statement_timeout``, ``lock_timeout``), a dead peer (``tcp_user_timeout``) and the wait for a
pooled connection; a new connection takes at most ``max(2, timeout_s)`` seconds (libpq's floor).
Any failure raises :class:`~costwarden.errors.LedgerError`.

Here: the connections, the pool and the retries; the tables and statements are in ``postgres_sql.py``.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import errors as pg_errors

from costwarden.adapters.ledger.hold_specs import epoch_ms, specs_from, to_micros, to_usd, ttl_ms
from costwarden.adapters.ledger.postgres_sql import Sql, Txn, load_window
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import (
    PURGE_EVERY_MS,
    RECORD_GRACE_S,
    charge_in,
    release_in,
    reserve_in,
    settle_in,
)
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError

T = TypeVar("T")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
DDL_TIMEOUT_MS = 30_000
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

class PostgresLedger:
    """A ledger in PostgreSQL tables, with a small connection pool shared by the process's threads."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        table_prefix: str = "costwarden_ledger_",
        timeout_s: float = 0.25,
        pool_size: int = 8,
        record_grace_s: float = RECORD_GRACE_S,
        where: str = "postgresql",
    ) -> None:
        for name, value in (("schema", schema), ("table_prefix", table_prefix)):
            if not _IDENT.match(value) and not (name == "table_prefix" and value == ""):
                raise LedgerError(f"PostgreSQL ledger {name} {value!r} must be lower-case letters, digits and _")
        if pool_size < 1:
            raise LedgerError(f"PostgreSQL ledger pool_size must be at least 1, got {pool_size}")
        self.schema, self.timeout_s, self.where = schema, timeout_s, where
        self._conninfo = conninfo
        self._sql = Sql(schema, table_prefix)
        self._grace = ttl_ms(record_grace_s)
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()
        self._ready = False
        self._ddl_lock = threading.Lock()
        self._next_purge = 0
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> PostgresLedger:
        """``postgresql://user@host:5432/db?schema=public&table_prefix=costwarden_ledger_&timeout=0.25&pool_size=8``
        (``record_grace`` too); every other query parameter goes to libpq."""
        from costwarden.adapters.ledger import number, redact

        parts = urlsplit(url)
        ours: dict[str, Any] = {}
        theirs = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("schema", "table_prefix"):
                ours[name] = value
            elif name in ("timeout", "record_grace"):
                ours[f"{name}_s"] = number(name, value)
            elif name == "pool_size":
                ours[name] = int(number(name, value))
            else:
                theirs.append((name, value))
        scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
        conninfo = parts._replace(scheme=scheme, query=urlencode(theirs, quote_via=quote)).geturl()
        return cls(conninfo, where=redact(url), **ours)

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        figures = self._run(
            "lookup",
            lambda conn: self._figures(conn, keys, epoch_ms(now)),
            transaction=False,
            missing=dict[str, tuple[int, int]],
        )
        return [to_usd(sum(figures.get(k, (0, 0)))) for k in keys]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        grace = self._grace if keep_s is None else ttl_ms(keep_s)
        outcome = self._run(
            "reserve",
            lambda conn: reserve_in(Txn(conn, self._sql), reservation_id, specs, now_ms=at, ttl=ttl, grace=grace),
        )
        self._purge(at)
        return outcome

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        return self._run("settle", lambda conn: settle_in(Txn(conn, self._sql), reservation_id, cost))

    def release(self, reservation_id: str, *, now: datetime) -> None:
        self._run("release", lambda conn: release_in(Txn(conn, self._sql), reservation_id))

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        specs, cost, at, ttl = specs_from(holds), to_micros(cost_usd, "cost_usd"), epoch_ms(now), ttl_ms(ttl_s)
        alerts = self._run(
            "charge",
            lambda conn: charge_in(
                Txn(conn, self._sql), reservation_id, specs, cost, now_ms=at, ttl=ttl, grace=self._grace
            ),
        )
        self._purge(at)
        return alerts

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        at = now_ms(now)
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        def read(conn: psycopg.Connection[Any]) -> list[BudgetStatus]:
            buckets = conn.execute(self._sql.status, (like,)).fetchall()
            held = self._figures(conn, [b[0] for b in buckets], at)
            rows = [
                BucketRow(k, s, held.get(k, (0, 0))[1], lim, load_window(w), e)
                for k, s, lim, w, e in buckets
            ]
            return summarize(rows, lambda keys: self._figures(conn, keys, at), at)

        return self._run("status", read, transaction=False, missing=list)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _figures(self, conn: psycopg.Connection[Any], keys: Sequence[str], at: int) -> dict[str, tuple[int, int]]:
        rows = conn.execute(self._sql.figures, {"k": list(keys), "now": at}).fetchall()
        return {k: (s, h) for k, s, h in rows}

    def _run(
        self,
        what: str,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        transaction: bool = True,
        missing: Callable[[], T] | None = None,
    ) -> T:
        """Run ``work`` in one transaction on a pooled connection. Every operation is idempotent, so
        it is retried once after a deadlock or on a pooled connection the server has since closed.
        A read (``missing``: its answer while no table exists) creates no tables."""
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    if not self._ready:
                        if missing is not None and not self._tables_exist(conn):
                            return missing()
                        self._create_tables(conn)
                    if not transaction:
                        return work(conn)
                    with conn.pipeline(), conn.transaction():
                        return work(conn)
            except (*_RETRYABLE, _StaleConnection) as exc:
                if attempt == 2:
                    cause = exc.__cause__ if isinstance(exc, _StaleConnection) else exc
                    raise LedgerError(f"PostgreSQL ledger {self.where}: {what} failed twice: {cause}") from exc
            except (pg_errors.QueryCanceled, pg_errors.LockNotAvailable) as exc:
                raise LedgerError(f"PostgreSQL ledger {self.where}: {what} timed out after {self.timeout_s}s") from exc
            except psycopg.Error as exc:
                raise LedgerError(f"PostgreSQL ledger {self.where}: {what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self.timeout_s):
            raise LedgerError(f"PostgreSQL ledger {self.where}: no pooled connection free within {self.timeout_s}s")
        try:
            conn, reused = self._checkout()
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if reused and conn.broken:
                    raise _StaleConnection() from exc
                raise
            finally:
                self._checkin(conn)
        finally:
            self._slots.release()

    def _checkout(self) -> tuple[psycopg.Connection[Any], bool]:
        with self._lock:
            if self._closed:
                raise LedgerError(f"PostgreSQL ledger {self.where} is closed")
            if self._pid != os.getpid():
                # a forked child must neither use nor close (which would end) its parent's sessions
                _ORPHANS.extend(self._idle)
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        healthy = not conn.closed and not conn.broken
        if healthy and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self._lock:
                if not self._closed and self._pid == os.getpid():
                    self._idle.append(conn)
                    return
        conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        ms = max(1, math.ceil(self.timeout_s * 1000))
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self.timeout_s)),
            tcp_user_timeout=max(ms, 1000),
        )
        # Every transaction READ COMMITTED, whatever the database's or role's default: the row
        # locks serialise the ledger's operations, and under a stricter default concurrent reserves
        # on one budget failed with serialization errors (calls denied, settled spend lost).
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        try:
            conn.execute(f"SET statement_timeout = {ms}")
            conn.execute(f"SET lock_timeout = {ms}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables once per process. ``CREATE … IF NOT EXISTS`` still locks existing
        tables, so it runs only when a table is missing, under a session advisory lock; the check
        after the lock runs in its own transaction so it sees a concurrent creator's tables."""
        with self._ddl_lock:
            if self._ready:
                return
            if not self._tables_exist(conn):
                conn.execute(f"SET statement_timeout = {DDL_TIMEOUT_MS}")
                conn.execute(f"SET lock_timeout = {DDL_TIMEOUT_MS}")
                conn.execute("SELECT pg_advisory_lock(hashtext('costwarden ledger tables'))")
                try:
                    if not self._tables_exist(conn):
                        with conn.transaction():
                            self._run_ddl(conn)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(hashtext('costwarden ledger tables'))")
                    ms = max(1, math.ceil(self.timeout_s * 1000))
                    conn.execute(f"SET statement_timeout = {ms}")
                    conn.execute(f"SET lock_timeout = {ms}")
            self._ready = True

    def _tables_exist(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT count(to_regclass(t)) FROM unnest(%s::text[]) AS t", (self._sql.tables,)).fetchone()
        return row is not None and row[0] == len(self._sql.tables)

    def _run_ddl(self, conn: psycopg.Connection[Any]) -> None:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        for statement in filter(str.strip, self._sql.ddl.split(";")):
            conn.execute(statement)

    def _purge(self, now_ms: int) -> None:
        """Drop expired records, holds, buckets and markers, at most once a minute per process."""
        if now_ms < self._next_purge:
            return
        self._next_purge = now_ms + PURGE_EVERY_MS

        def purge(conn: psycopg.Connection[Any]) -> None:
            for statement in self._sql.purge:
                conn.execute(statement, {"now": now_ms})

        try:
            self._run("purge", purge, transaction=False)
        except LedgerError:
            self._next_purge = 0  # try again next time; a missed sweep loses nothing


class _StaleConnection(LedgerError):
    """A pooled connection broke on first use (the server restarted or dropped it): retry afresh."""


_ORPHANS: list[psycopg.Connection[Any]] = []
"""Connections inherited across fork: kept referenced so they are never closed or collected here."""

__all__ = ["PostgresLedger"]
