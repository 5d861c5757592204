"""One ledger fixture, four stores: every contract test runs against memory, a SQLite file, the
real Redis and the real PostgreSQL (``tests/ledger_backends.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from ledger_backends import REDIS_URL

from costwarden.adapters.ledger import open_ledger
from costwarden.adapters.ledger.store import LedgerStore

STORES = ("memory", "sqlite", "redis", "postgres")
OpenStore = Callable[[], LedgerStore]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL for a fresh, empty ledger of each kind."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('ledger')}/ledger.db"
    if request.param == "redis":
        return f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=2"
    return f"{request.getfixturevalue('postgres_db')}?table_prefix=t{unique}_&timeout=5"


@pytest.fixture
def open_store(store_url: str) -> Iterator[OpenStore]:
    """Opens instances of one store (another process's view of it); memory has only one instance."""
    opened: list[LedgerStore] = []

    def open_one() -> LedgerStore:
        if store_url == "memory://" and opened:
            return opened[0]
        opened.append(open_ledger(store_url))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def ledger(open_store: OpenStore) -> LedgerStore:
    return open_store()
