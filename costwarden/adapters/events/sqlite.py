"""Cost events as rows of a SQLite table (``cost_events`` by default).

The file is opened in WAL mode with a busy timeout, so several processes can append to one file;
lists and maps (tags, rewrites, findings, alerts) are stored as JSON text. Text that is not valid
UTF-8 (a lone surrogate from a header decoded with ``surrogateescape``) is stored with backslash
escapes: SQLite cannot take it, and the whole row — the call's spend — was lost. Query it with SQL::

    SELECT feature, model, SUM(cost_usd) FROM cost_events GROUP BY feature, model;
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from costwarden.adapters.events.event import CostEvent

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("started_at", "TEXT NOT NULL"),
    ("finished_at", "TEXT NOT NULL"),
    ("provider", "TEXT NOT NULL"),
    ("api", "TEXT NOT NULL"),
    ("feature", "TEXT"),
    ("user", "TEXT"),
    ("team", "TEXT"),
    ("tags", "TEXT"),
    ("model_requested", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    ("model_served", "TEXT"),
    ("outcome", "TEXT NOT NULL"),
    ("verdict", "TEXT NOT NULL"),
    ("stream", "INTEGER NOT NULL"),
    ("batch", "INTEGER NOT NULL"),
    ("batch_requests", "INTEGER NOT NULL"),
    ("input_tokens", "INTEGER NOT NULL"),
    ("output_tokens", "INTEGER NOT NULL"),
    ("cache_read_tokens", "INTEGER NOT NULL"),
    ("cache_write_tokens", "INTEGER NOT NULL"),
    ("input_audio_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("output_audio_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("input_image_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("output_image_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("web_search_requests", "INTEGER NOT NULL DEFAULT 0"),
    ("audio_seconds", "INTEGER NOT NULL DEFAULT 0"),
    ("input_characters", "INTEGER NOT NULL DEFAULT 0"),
    ("cost_usd", "REAL NOT NULL"),
    ("estimated_cost_usd", "REAL"),
    ("charged", "INTEGER NOT NULL"),
    ("usage_source", "TEXT NOT NULL"),
    ("latency_ms", "REAL"),
    ("status_code", "INTEGER"),
    ("rewrites", "TEXT"),
    ("findings", "TEXT"),
    ("alerts", "TEXT"),
    ("reservation_id", "TEXT"),
    ("error", "TEXT"),
    ("prompt", "TEXT"),
    ("completion", "TEXT"),
)
_JSON_FIELDS = frozenset({"tags", "rewrites", "findings", "alerts", "prompt", "completion"})
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SqliteSink:
    """Inserts each event as a row of ``table`` in the SQLite file at ``path``.

    A process forked after the sink was made (gunicorn ``--preload``, multiprocessing) opens its
    own connection on its first event: SQLite forbids using a connection across ``fork()``."""

    def __init__(self, path: str | os.PathLike[str], *, table: str = "cost_events", timeout_s: float = 30.0) -> None:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        self.table = table
        self._path, self._timeout_s = os.fspath(path), timeout_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = self._connect()
        self._pid = os.getpid()
        columns = ", ".join(f'"{name}" {kind}' for name, kind in _COLUMNS)
        self._db.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (id INTEGER PRIMARY KEY, {columns})')
        _add_missing_columns(self._db, table)
        names = ", ".join(f'"{name}"' for name, _ in _COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        self._insert = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'

    def emit(self, event: CostEvent) -> None:
        row = [_column(name, getattr(event, name)) for name, _ in _COLUMNS]
        with self._lock:
            db = self._own()
            if db is not None:
                db.execute(self._insert, row)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on the events table's database (reports, tests)."""
        with self._lock:
            db = self._own()
            if db is None:
                raise ValueError("the sink is closed")
            return db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=self._timeout_s, check_same_thread=False, isolation_level=None)
        _use_wal(db, self._timeout_s)
        return db

    def _own(self) -> sqlite3.Connection | None:
        """This process's connection (the lock is held); a forked child leaves its parent's alone."""
        if self._db is not None and self._pid != os.getpid():
            self._db, self._pid = self._connect(), os.getpid()
        return self._db

    def __enter__(self) -> SqliteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _use_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL. The switch needs the file to itself and SQLite answers "database is
    locked" at once, without waiting out the busy timeout, when another process has it open (several
    workers starting on a new or older file): retry until the timeout, as a write would wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _add_missing_columns(db: sqlite3.Connection, table: str) -> None:
    """Columns added since a file was created (they all have defaults), so that inserting into an
    older file does not fail. Two processes may race to add one: the loser finds it there."""
    have = {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}
    for name, kind in _COLUMNS:
        if name not in have:
            try:
                db.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {kind}')
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise


def _column(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        if value is None or (not value and name != "tags"):
            return None
        if isinstance(value, Mapping):
            value = dict(value)
        return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


__all__ = ["SqliteSink"]
