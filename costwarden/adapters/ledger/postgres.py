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
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import errors as pg_errors

from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import (
    PURGE_EVERY_MS,
    RECORD_GRACE_S,
    HoldSpec,
    Record,
    charge_in,
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

T = TypeVar("T")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
DDL_TIMEOUT_MS = 30_000
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

DDL = """
CREATE TABLE IF NOT EXISTS {buckets} (
    key text PRIMARY KEY, settled bigint NOT NULL DEFAULT 0, limit_micros bigint,
    window_keys text, ends_ms bigint, keep_until_ms bigint);
CREATE TABLE IF NOT EXISTS {holds} (
    key text NOT NULL, reservation_id text NOT NULL, amount bigint NOT NULL, expires_ms bigint NOT NULL,
    PRIMARY KEY (key, reservation_id));
CREATE INDEX IF NOT EXISTS {p}holds_expiry ON {holds} (key, expires_ms) INCLUDE (amount);
CREATE TABLE IF NOT EXISTS {reservations} (
    id text PRIMARY KEY, state text NOT NULL, refused_key text, spent bigint, limit_micros bigint,
    specs text NOT NULL, expires_ms bigint NOT NULL, purge_ms bigint NOT NULL);
CREATE INDEX IF NOT EXISTS {p}reservations_purge ON {reservations} (purge_ms);
CREATE TABLE IF NOT EXISTS {alerts} (
    key text NOT NULL, threshold text NOT NULL, keep_until_ms bigint, PRIMARY KEY (key, threshold));
"""

FIGURES = """
SELECT k, coalesce(b.settled, 0),
       coalesce((SELECT sum(h.amount) FROM {holds} h WHERE h.key = k AND h.expires_ms > %(now)s), 0)::bigint
FROM unnest(%(k)s::text[]) AS k LEFT JOIN {buckets} b ON b.key = k
"""


class _Sql:
    """Every statement, with the configured schema and table prefix filled in once."""

    def __init__(self, schema: str, prefix: str) -> None:
        names = {n: f'"{schema}"."{prefix}{n}"' for n in ("buckets", "holds", "reservations", "alerts")}
        self.ddl = DDL.format(p=prefix, **names)
        self.tables = list(names.values())
        self.figures = FIGURES.format(**names)
        b, h, r, a = names["buckets"], names["holds"], names["reservations"], names["alerts"]
        self.claim = (
            f"INSERT INTO {r} VALUES (%s, 'p', NULL, NULL, NULL, '[]', 0, 0) ON CONFLICT (id) DO NOTHING RETURNING 1"
        )
        self.load = (
            f"SELECT state, refused_key, spent, limit_micros, specs, expires_ms, purge_ms FROM {r} WHERE id = %s"
        )
        self.lock = (
            f"INSERT INTO {b} AS b (key, keep_until_ms) SELECT k, e FROM unnest(%s::text[], %s::bigint[]) AS u(k, e)"
            ' ORDER BY k COLLATE "C" ON CONFLICT (key) DO UPDATE'
            " SET keep_until_ms = greatest(b.keep_until_ms, excluded.keep_until_ms)"
        )
        self.totals = (
            f"WITH gone AS (DELETE FROM {h} WHERE key = ANY(%(k)s) AND expires_ms <= %(now)s)"
            f" SELECT b.key, b.settled + coalesce((SELECT sum(x.amount) FROM {h} x"
            f" WHERE x.key = b.key AND x.expires_ms > %(now)s), 0)::bigint FROM {b} b WHERE b.key = ANY(%(k)s)"
        )
        self.settled = f"SELECT key, settled FROM {b} WHERE key = ANY(%s)"
        self.hold = (
            f"WITH ins AS (INSERT INTO {h} SELECT k, %(rid)s::text, a, %(exp)s::bigint"
            " FROM unnest(%(k)s::text[], %(a)s::bigint[]) AS u(k, a))"
            f" UPDATE {b} b SET limit_micros = u.l, window_keys = u.w, ends_ms = u.n"
            " FROM unnest(%(k)s::text[], %(l)s::bigint[], %(w)s::text[], %(n)s::bigint[]) AS u(k, l, w, n)"
            " WHERE b.key = u.k"
        )
        self.unhold = f"DELETE FROM {h} WHERE reservation_id = %(rid)s AND key = ANY(%(k)s)"
        self.charge = (
            f"WITH gone AS (DELETE FROM {h} WHERE reservation_id = %(rid)s AND key = ANY(%(k)s))"
            f" UPDATE {b} SET settled = settled + %(cost)s WHERE key = ANY(%(k)s)"
        )
        self.put = (
            f"INSERT INTO {r} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " state = excluded.state, refused_key = excluded.refused_key, spent = excluded.spent,"
            " limit_micros = excluded.limit_micros, specs = excluded.specs, expires_ms = excluded.expires_ms,"
            " purge_ms = excluded.purge_ms"
        )
        self.mark = f"INSERT INTO {a} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1"
        self.status = f"SELECT key, settled, limit_micros, window_keys, ends_ms FROM {b} WHERE key LIKE %s ESCAPE '\\'"
        # SKIP LOCKED: a sweep never waits on (or deadlocks with) a row an operation holds
        self.purge = tuple(
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {c} <= %(now)s FOR UPDATE SKIP LOCKED))"
            for t, c in ((r, "purge_ms"), (h, "expires_ms"), (b, "keep_until_ms"), (a, "keep_until_ms"))
        )


class _Txn:
    """The shared algorithm's view of one PostgreSQL transaction."""

    def __init__(self, conn: psycopg.Connection[Any], sql: _Sql) -> None:
        self.conn, self.sql = conn, sql

    def claim(self, reservation_id: str) -> Record | None:
        if self.conn.execute(self.sql.claim, (reservation_id,)).fetchone() is not None:
            return None
        return self.load(reservation_id, lock=False)

    def load(self, reservation_id: str, *, lock: bool = True) -> Record | None:
        row = self.conn.execute(self.sql.load + (" FOR UPDATE" if lock else ""), (reservation_id,)).fetchone()
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
        self.conn.execute(self.sql.lock, (list(keys), list(keys.values())))

    def totals(self, keys: Sequence[str], now_ms: int) -> dict[str, int]:
        return dict(self.conn.execute(self.sql.totals, {"k": list(keys), "now": now_ms}).fetchall())

    def settled(self, keys: Sequence[str]) -> dict[str, int]:
        return dict(self.conn.execute(self.sql.settled, (list(keys),)).fetchall())

    def hold(self, reservation_id: str, specs: Sequence[HoldSpec], expires_ms: int) -> None:
        self.conn.execute(
            self.sql.hold,
            {
                "rid": reservation_id,
                "exp": expires_ms,
                "k": [s.key for s in specs],
                "a": [s.amount for s in specs],
                "l": [s.limit for s in specs],
                "w": [dump_window(s.window) for s in specs],
                "n": [s.ends_ms for s in specs],
            },
        )

    def unhold(self, reservation_id: str, specs: Sequence[HoldSpec], cost: int | None) -> None:
        params = {"rid": reservation_id, "k": [s.key for s in specs], "cost": cost}
        self.conn.execute(self.sql.unhold if cost is None else self.sql.charge, params)

    def put(self, reservation_id: str, record: Record) -> None:
        o = record.outcome
        self.conn.execute(
            self.sql.put,
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
        return self.conn.execute(self.sql.mark, (key, repr(threshold), keep_until_ms)).fetchone() is not None


def dump_window(window: Sequence[str]) -> str:
    return "\n".join(window)


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
        self._sql = _Sql(schema, table_prefix)
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
        figures = self._run("lookup", lambda conn: self._figures(conn, keys, epoch_ms(now)), transaction=False)
        return [to_usd(sum(figures.get(k, (0, 0)))) for k in keys]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        grace = self._grace if keep_s is None else ttl_ms(keep_s)
        outcome = self._run(
            "reserve",
            lambda conn: reserve_in(_Txn(conn, self._sql), reservation_id, specs, now_ms=at, ttl=ttl, grace=grace),
        )
        self._purge(at)
        return outcome

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        return self._run("settle", lambda conn: settle_in(_Txn(conn, self._sql), reservation_id, cost))

    def release(self, reservation_id: str, *, now: datetime) -> None:
        self._run("release", lambda conn: release_in(_Txn(conn, self._sql), reservation_id))

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        specs, cost, at, ttl = specs_from(holds), to_micros(cost_usd, "cost_usd"), epoch_ms(now), ttl_ms(ttl_s)
        alerts = self._run(
            "charge",
            lambda conn: charge_in(
                _Txn(conn, self._sql), reservation_id, specs, cost, now_ms=at, ttl=ttl, grace=self._grace
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
                BucketRow(k, s, held.get(k, (0, 0))[1], lim, tuple(w.split("\n")) if w else (), e)
                for k, s, lim, w, e in buckets
            ]
            return summarize(rows, lambda keys: self._figures(conn, keys, at), at)

        return self._run("status", read, transaction=False)

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

    def _run(self, what: str, work: Callable[[psycopg.Connection[Any]], T], *, transaction: bool = True) -> T:
        """Run ``work`` in one transaction on a pooled connection. Every operation is idempotent, so
        it is retried once after a deadlock or on a pooled connection the server has since closed."""
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
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
        try:
            if not self._ready:
                self._create_tables(conn)
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
                conn.execute("SELECT pg_advisory_lock(hashtext('costwarden ledger tables'))")
                try:
                    if not self._tables_exist(conn):
                        with conn.transaction():
                            self._run_ddl(conn)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(hashtext('costwarden ledger tables'))")
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
