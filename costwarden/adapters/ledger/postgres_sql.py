"""The PostgreSQL ledger's tables and statements (``postgres.py`` holds the connections): ``Sql``
fills the schema and table prefix into every statement once; ``Txn`` runs the shared algorithm's
steps (``store.py``) inside one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from costwarden.adapters.ledger.hold_specs import HoldSpec, dump_specs, load_specs, to_micros, to_usd
from costwarden.adapters.ledger.store import Record
from costwarden.engine.ledger import Reservation

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


class Sql:
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


class Txn:
    """The shared algorithm's view of one PostgreSQL transaction."""

    def __init__(self, conn: psycopg.Connection[Any], sql: Sql) -> None:
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
    """A window's keys as the ``window_keys`` column keeps them: a JSON array, as SQLite does (keys
    may hold any character, a newline included)."""
    return json.dumps(list(window))


def load_window(text: str | None) -> tuple[str, ...]:
    """The keys :func:`dump_window` wrote; rows written before it wrote JSON hold them joined by
    newlines (a key starting with ``["`` was never written by the budget rule)."""
    if not text:
        return ()
    if text.startswith('["'):
        return tuple(json.loads(text))
    return tuple(text.split("\n"))


__all__ = ["DDL", "FIGURES", "Sql", "Txn", "dump_window", "load_window"]
