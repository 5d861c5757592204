"""What is particular to the PostgreSQL store: where its tables go, and surviving dropped sessions."""

from __future__ import annotations

import uuid

import psycopg

from costwarden.adapters.ledger.postgres import PostgresLedger

from .test_contract import ALICE, NOW, hold


def test_tables_go_in_the_configured_schema_with_the_prefix(postgres_db: str) -> None:
    schema = f"cw_{uuid.uuid4().hex[:6]}"
    with PostgresLedger.from_url(f"{postgres_db}?schema={schema}&table_prefix=spend_&timeout=5") as ledger:
        ledger.reserve("r", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
    with psycopg.connect(postgres_db) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        assert sorted(r[0] for r in rows) == ["spend_alerts", "spend_buckets", "spend_holds", "spend_reservations"]


def test_a_pooled_session_the_server_ended_is_replaced_transparently(postgres_db: str) -> None:
    url = f"{postgres_db}?table_prefix=t{uuid.uuid4().hex[:6]}_&timeout=5&pool_size=1"
    with PostgresLedger.from_url(url) as ledger:
        assert ledger.reserve("r1", [hold(ALICE, 1.0)], ttl_s=60, now=NOW).granted
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            [pid] = [
                p
                for (p,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert ledger.reserve("r2", [hold(ALICE, 1.0)], ttl_s=60, now=NOW).granted
        assert ledger.spent([ALICE], now=NOW) == [2.0]


def test_reads_on_a_database_without_the_tables_create_nothing_and_see_nothing(postgres_db: str) -> None:
    """A read-only role (a dashboard, ``costwarden status``) may read before anything was reserved:
    no spend, no budgets — not a permission error from creating the tables; the first reserve still
    creates them."""
    schema, role = f"cw_{uuid.uuid4().hex[:6]}", f"cw_ro_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(postgres_db, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        reader_url = postgres_db.replace("//postgres@", f"//{role}@", 1)
        assert reader_url != postgres_db
        with PostgresLedger.from_url(f"{reader_url}?schema={schema}&timeout=5") as reader:
            assert reader.status(now=NOW) == []
            assert reader.spent([ALICE], now=NOW) == [0.0]
        with PostgresLedger.from_url(f"{postgres_db}?schema={schema}&timeout=5") as writer:
            assert writer.status(now=NOW) == [] and writer.spent([ALICE], now=NOW) == [0.0]
            with psycopg.connect(postgres_db) as conn:
                assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None
            assert writer.reserve("r", [hold(ALICE, 1.0)], ttl_s=60, now=NOW).granted
            assert writer.spent([ALICE], now=NOW) == [1.0]
            assert [s.key for s in writer.status(now=NOW)] == [ALICE]
    finally:
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
