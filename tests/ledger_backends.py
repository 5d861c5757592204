"""The real Redis and PostgreSQL the ledger tests run against, on loopback.

CI starts both (``.ci/run``); a test that needs one and cannot reach it fails with a message
saying which server to start — it never skips, so a missing server cannot pass as green.
Each test run works in its own Redis key prefix and its own PostgreSQL database, removed at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"


@contextmanager
def redis_namespace() -> Iterator[str]:
    """A unique key prefix on the shared Redis for this run; its keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis is required at {REDIS_URL} for the ledger tests (CI starts it): {exc}", pytrace=False)
    run = f"cwtest-{uuid.uuid4().hex[:10]}"
    try:
        yield run
    finally:
        names = list(client.scan_iter(match="{" + run + "*", count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])
        client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL for this run, dropped afterwards; yields its URL."""
    import psycopg

    admin_url = f"{POSTGRES_URL}/postgres"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is required at {admin_url} (trust auth, user postgres) for the ledger tests "
            f"(CI starts it): {exc}",
            pytrace=False,
        )
    name = f"cwtest_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_URL}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
