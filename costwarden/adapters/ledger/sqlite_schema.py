"""The SQLite ledger's tables and triggers, and how a new connection is prepared (``sqlite.py``)."""

from __future__ import annotations

import sqlite3

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


def prepare(db: sqlite3.Connection) -> bool:
    """WAL, the schema and manual checkpoints on a new connection; whether the file is in WAL mode."""
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    wal = bool(db.execute("PRAGMA journal_mode").fetchone()[0] == "wal")
    if wal:  # checkpoints run in a thread of their own (Checkpointer), not after a commit
        db.execute("PRAGMA wal_autocheckpoint=0")
    return wal


__all__ = ["FIGURES", "PURGE", "SCHEMA", "prepare"]
