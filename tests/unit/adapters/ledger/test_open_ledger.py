"""Opening ledgers by URL, and failing loudly — never allowing silently — when a store is unreachable."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from costwarden.adapters.ledger import open_ledger, sqlite_path
from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.adapters.ledger.sqlite import SqliteLedger
from costwarden.engine.ledger import Hold
from costwarden.errors import LedgerError

NOW = datetime.now(UTC)
HOLD = Hold("budget:p/r:user=a:d", 1.0, 10.0, expires_at=NOW + timedelta(hours=1))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_memory() -> None:
    assert isinstance(open_ledger("memory://"), MemoryLedger)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///ledger.db", "ledger.db"),
        ("sqlite:///data/ledger.db", "data/ledger.db"),
        ("sqlite:////var/lib/cw/ledger.db", "/var/lib/cw/ledger.db"),
        ("sqlite:////tmp/x.db?timeout=1", "/tmp/x.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_paths_follow_sqlalchemy(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_sqlite_options(tmp_path: object) -> None:
    with open_ledger(f"sqlite:///{tmp_path}/l.db?timeout=0.5&record_grace=60") as store:
        assert isinstance(store, SqliteLedger) and store.timeout_s == 0.5


def test_in_memory_sqlite_works() -> None:
    with open_ledger("sqlite://") as store:
        assert store.reserve("r", [HOLD], ttl_s=5, now=NOW).granted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://root:hunter2@db/costs",
            "supported schemes: memory://, sqlite://, redis://, rediss://, postgresql://",
        ),
        ("ledger.db", "unsupported ledger URL 'ledger.db'"),
        ("sqlite:relative.db", "unsupported ledger URL"),
        ("sqlite://host/x.db", "must look like sqlite:///relative.db"),
        ("sqlite:///x.db?timout=1", "unknown option 'timout' in sqlite ledger URL; options: record_grace, timeout"),
        ("memory://?timeout=1", "unknown option 'timeout' in memory ledger URL"),
        ("sqlite:///x.db?timeout=-1", "timeout='-1' must be a positive number of seconds"),
        ("sqlite:///x.db?timeout=inf", "timeout='inf' must be a positive number of seconds"),
        ("memory://?lease_calls=16&lease_s=inf", "lease_s='inf' must be a number, and finite"),
        ("redis://127.0.0.1:6379/0?prefix=a{b}", "prefix 'a{b}' must be non-empty and hold no braces"),
        ("postgresql://postgres@127.0.0.1/x?schema=Bad-Name", "schema 'Bad-Name' must be lower-case"),
        ("postgresql://postgres@127.0.0.1/x?timeout=abc", "timeout='abc' must be a positive number"),
        ("redis://127.0.0.1:6379/ledger", "the database after the port must be a number, not 'ledger'"),
        ("redis://u:hunter2@127.0.0.1:abc/0", "Redis ledger URL 'redis://u:\\*\\*\\*@127.0.0.1:abc/0': "),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message.replace("{", r"\{").replace("}", r"\}").replace("?", r"\?")) as exc:
        open_ledger(url)
    assert "hunter2" not in str(exc.value)


def test_an_unwritable_sqlite_path_fails_at_open(tmp_path: object) -> None:
    with pytest.raises(LedgerError, match="SQLite ledger .*no-such-dir") as exc:
        open_ledger(f"sqlite:///{tmp_path}/no-such-dir/ledger.db")
    assert f"the folder {tmp_path}/no-such-dir does not exist" in str(exc.value)
    assert "sqlite:////name.db is absolute" in str(exc.value)  # the usual slip: three slashes, not four


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_an_unreachable_server_raises_within_the_timeout(scheme: str) -> None:
    port = closed_port()
    suffix = "/0?timeout=0.2" if scheme == "redis" else "/db?timeout=0.2"
    store = open_ledger(f"{scheme}://postgres:s3cret@127.0.0.1:{port}{suffix}")
    try:
        for call in (
            lambda: store.reserve("r", [HOLD], ttl_s=5, now=NOW),
            lambda: store.settle("r", 1.0, now=NOW),
            lambda: store.release("r", now=NOW),
            lambda: store.spent([HOLD.key], now=NOW),
            lambda: store.status(now=NOW),
        ):
            started = time.monotonic()
            with pytest.raises(LedgerError, match=f"127.0.0.1:{port}") as exc:
                call()
            assert time.monotonic() - started < 2.5  # libpq's connect floor is 2 s; refusal is immediate
            assert "s3cret" not in str(exc.value)
    finally:
        store.close()


def test_postgres_scheme_alias_and_a_new_schema(postgres_db: str) -> None:
    url = postgres_db.replace("postgresql://", "postgres://") + f"?schema=cw_{uuid.uuid4().hex[:6]}&timeout=5"
    with open_ledger(url) as store:
        assert store.reserve("r", [HOLD], ttl_s=5, now=NOW).granted
        assert store.spent([HOLD.key], now=NOW) == [1.0]
