"""Ledger edges a FinOps user hits in production: keys with characters a store mangles, a database
whose default isolation is not READ COMMITTED, and ``status`` over a large Redis namespace."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from ledger_backends import REDIS_URL

from costwarden.adapters.ledger import open_ledger
from costwarden.adapters.ledger.redis import RedisLedger
from costwarden.adapters.ledger.store import LedgerStore
from costwarden.errors import LedgerError

from .test_contract import NOW, hold


class TestKeyCharacters:
    def test_a_key_with_a_nul_is_refused_by_every_store_rather_than_mangled(self, ledger: LedgerStore) -> None:
        """SQLite's JSON functions cut a key at NUL: its settle charged a truncated key and left
        the hold, so the spend vanished at the TTL; PostgreSQL refused it. Every store now refuses
        it alike (the budget rule encodes NUL in attribution values, so it never sends one)."""
        key = "budget:p/r:user=a\x00b:d1"
        with pytest.raises(LedgerError, match="NUL"):
            ledger.reserve("r1", [hold(key, 1.0)], ttl_s=60, now=NOW)
        with pytest.raises(LedgerError, match="NUL"):
            ledger.charge("r2", [hold(key, 1.0)], 1.0, ttl_s=60, now=NOW)
        window = ("budget:p/r:user=a\x00b:h1", "budget:p/r:user=a:h2")
        with pytest.raises(LedgerError, match="NUL"):
            ledger.reserve("r3", [hold(window[1], 1.0, window=window)], ttl_s=60, now=NOW)

    def test_a_key_with_a_lone_surrogate_is_a_ledger_error_in_every_store(self, ledger: LedgerStore) -> None:
        """Not a raw UnicodeEncodeError (SQLite, Redis, PostgreSQL) nor a grant (memory)."""
        key = "budget:p/r:user=a\ud800:d1"
        with pytest.raises(LedgerError, match="surrogate"):
            ledger.reserve("r1", [hold(key, 1.0)], ttl_s=60, now=NOW)
        with pytest.raises(LedgerError, match="surrogate"):
            ledger.charge("r2", [hold(key, 1.0)], 1.0, ttl_s=60, now=NOW)

    def test_status_of_a_key_with_a_newline_shows_its_spend(self, ledger: LedgerStore) -> None:
        """PostgreSQL kept a window's keys joined by newlines, so a key holding one read back as
        two keys that do not exist: status showed $0 spent."""
        key = "budget:p/r:user=line\nbreak:d1"
        ledger.reserve("r1", [hold(key, 2.0)], ttl_s=60, now=NOW)
        ledger.settle("r1", 1.5, now=NOW)
        ledger.reserve("r2", [hold(key, 0.25)], ttl_s=60, now=NOW)
        [row] = [r for r in ledger.status(now=NOW) if r.key == key]
        assert (row.spent_usd, row.held_usd, row.limit_usd) == (1.5, 0.25, 10.0)

    def test_status_of_a_rolling_window_whose_keys_hold_newlines(self, ledger: LedgerStore) -> None:
        window = tuple(f"budget:p/roll:user=a\nb:h{i}" for i in range(3))
        ledger.charge("c0", [hold(window[0], 0.0, window=window[:1])], 1.0, ttl_s=60, now=NOW)
        ledger.reserve("r1", [hold(window[2], 0.5, window=window)], ttl_s=60, now=NOW)
        [row] = [r for r in ledger.status(now=NOW) if r.key.startswith("budget:p/roll:")]
        assert (row.key, row.spent_usd, row.held_usd) == (window[2], 1.0, 0.5)


@pytest.mark.parametrize("isolation", ["serializable", "repeatable%5C%20read"])
def test_postgres_under_a_stricter_default_isolation_neither_refuses_nor_loses_spend(
    postgres_db: str, isolation: str
) -> None:
    """A database (or role) whose ``default_transaction_isolation`` is stricter than READ COMMITTED
    made most concurrent reserves and settles on one budget fail twice with serialization
    failures: calls denied (fail closed) and settled spend lost. The ledger's transactions are
    READ COMMITTED whatever the default (its row locks serialise them)."""
    options = f"options=-c%20default_transaction_isolation%3D{isolation}"
    url = f"{postgres_db}?table_prefix=t{uuid.uuid4().hex[:8]}_&timeout=5&{options}"
    key = "budget:p/r:team=ml:d1"
    ledgers = [open_ledger(url) for _ in range(6)]
    errors: list[str] = []
    start = threading.Barrier(len(ledgers))

    def work(i: int, ledger: LedgerStore) -> None:
        start.wait()
        for j in range(8):
            try:
                assert ledger.reserve(f"r{i}-{j}", [hold(key, 1.0, 1000.0)], ttl_s=60, now=NOW).granted
                ledger.settle(f"r{i}-{j}", 0.5, now=NOW)
            except LedgerError as exc:
                errors.append(str(exc))

    try:
        ledgers[0].spent([key], now=NOW)
        ledgers[0].reserve("warm", [hold(key, 0.0, 1000.0)], ttl_s=60, now=NOW)  # tables and bucket row exist
        threads = [threading.Thread(target=work, args=(i, ledger)) for i, ledger in enumerate(ledgers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert ledgers[0].spent([key], now=NOW) == [len(ledgers) * 8 * 0.5]
    finally:
        for ledger in ledgers:
            ledger.close()


def test_redis_status_reads_a_large_namespace_in_bounded_scripts(redis_run: str) -> None:
    """Status summed every bucket of the namespace in one Lua script: on a namespace of tens of
    thousands of buckets it ran past the timeout, and blocked Redis — every guard's reserve
    behind it — while it ran. It now reads them in scripts of at most ``STATUS_BATCH`` buckets."""
    from costwarden.adapters.ledger import redis as redis_store

    ledger = RedisLedger.from_url(f"{REDIS_URL}?prefix={redis_run}-{uuid.uuid4().hex[:8]}&timeout=2")
    sizes: list[int] = []
    script = ledger._spent

    def spy(*, keys: list[str], args: list[Any]) -> Any:
        sizes.append(len(args) - 2)  # the logical keys after the tag and the clock
        return script(keys=keys, args=args)

    users = redis_store.STATUS_BATCH * 2 + 7
    try:
        for i in range(users):
            ledger.charge(f"c{i}", [hold(f"budget:p/r:user=u{i}:d1", 0.0)], 0.25, ttl_s=60, now=NOW)
        ledger.reserve("r1", [hold("budget:p/r:user=u0:d1", 1.0)], ttl_s=60, now=NOW)
        ledger._spent = spy
        rows = ledger.status(now=NOW)
        assert len(rows) == users
        assert all(r.spent_usd == 0.25 for r in rows)
        assert sum(r.held_usd for r in rows) == 1.0
        assert max(sizes) <= redis_store.STATUS_BATCH
    finally:
        ledger._client.delete(*ledger._client.scan_iter(match=ledger.tag + "*", count=1000))
        ledger.close()
