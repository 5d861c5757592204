"""What is particular to the Redis store: one slot per namespace, one round trip per operation,
keys that expire with their windows, expired holds purged inside the scripts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ledger_backends import REDIS_URL
from redis.crc import key_slot

from costwarden.adapters.ledger.hold_specs import BUCKET_GRACE_MS, epoch_ms
from costwarden.adapters.ledger.redis import RedisLedger
from costwarden.adapters.ledger.store import RECORD_GRACE_S

from .test_contract import ALICE, DAY_END, NOW, TEAM, hold, later

pytestmark = pytest.mark.parametrize("store_url", ["redis"], indirect=True)
ROLLING = tuple(f"budget:p/roll:user=alice:h{i}" for i in range(3))


@pytest.fixture
def redis_ledger(store_url: str) -> Iterator[RedisLedger]:
    with RedisLedger.from_url(store_url) as ledger:
        yield ledger


def keys(ledger: RedisLedger) -> list[str]:
    return sorted(ledger._client.scan_iter(match=ledger.tag + "*"))


def test_every_key_of_a_namespace_shares_one_cluster_slot(redis_ledger: RedisLedger) -> None:
    holds = [hold(TEAM, 1.0, 50.0, alert_at=(0.01,)), hold(ALICE, 1.0), hold(ROLLING[2], 1.0, window=ROLLING)]
    redis_ledger.reserve("r1", holds, ttl_s=60, now=NOW)
    redis_ledger.settle("r1", 1.0, now=NOW)
    names = keys(redis_ledger)  # three buckets, the record, the marker (emptied sets vanish)
    assert len(names) == 5 and all(n.startswith(redis_ledger.tag + ":") for n in names)
    assert len({key_slot(n.encode()) for n in names}) == 1


def test_one_round_trip_per_operation(redis_ledger: RedisLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis_ledger._client
    redis_ledger.reserve("warm", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)  # loads the scripts once
    redis_ledger.settle("warm", 1.0, now=NOW)
    redis_ledger.spent([ALICE], now=NOW)
    sent: list[Any] = []
    original: Any = client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", counting)
    holds = [hold(TEAM, 1.0, 50.0, alert_at=(0.01,)), hold(ALICE, 1.0), hold(ROLLING[2], 1.0, window=ROLLING)]
    for call in (
        lambda: redis_ledger.reserve("r1", holds, ttl_s=60, now=NOW),
        lambda: redis_ledger.settle("r1", 1.0, now=NOW),
        lambda: redis_ledger.reserve("r2", holds, ttl_s=60, now=NOW),
        lambda: redis_ledger.release("r2", now=NOW),
        lambda: redis_ledger.spent([TEAM, ALICE, *ROLLING], now=NOW),
    ):
        sent.clear()
        call()
        assert sent == ["EVALSHA"]


def test_keys_expire_with_their_windows_and_records_after_the_grace(redis_ledger: RedisLedger) -> None:
    client, tag = redis_ledger._client, redis_ledger.tag
    redis_ledger.reserve("r1", [hold(ALICE, 1.0, alert_at=(0.05,))], ttl_s=60, now=NOW)
    keep = epoch_ms(DAY_END) + BUCKET_GRACE_MS
    assert client.pexpiretime(f"{tag}:b:{ALICE}") == keep
    assert client.pexpiretime(f"{tag}:z:{ALICE}") == keep
    assert client.pexpiretime(f"{tag}:r:r1") == epoch_ms(NOW) + 60_000 + int(RECORD_GRACE_S * 1000)
    redis_ledger.settle("r1", 1.0, now=NOW)
    assert client.pexpiretime(f"{tag}:a:{ALICE}|0.05") == keep
    redis_ledger.reserve("batch", [hold(ALICE, 1.0)], ttl_s=60, now=NOW, keep_s=86_400)
    assert client.pexpiretime(f"{tag}:r:batch") == epoch_ms(NOW) + 60_000 + 86_400_000


def test_expired_holds_are_purged_inside_the_scripts(redis_ledger: RedisLedger) -> None:
    client, tag = redis_ledger._client, redis_ledger.tag
    redis_ledger.reserve("r1", [hold(ALICE, 3.0)], ttl_s=30, now=NOW)
    assert client.zcard(f"{tag}:z:{ALICE}") == 1
    assert client.hget(f"{tag}:b:{ALICE}", "h") == "3000000"
    assert redis_ledger.spent([ALICE], now=later(31)) == [0.0]
    assert client.zcard(f"{tag}:z:{ALICE}") == 0
    assert client.hget(f"{tag}:b:{ALICE}", "h") == "0"
    redis_ledger.settle("r1", 2.0, now=later(40))  # a late settle charges once, subtracts nothing twice
    assert client.hmget(f"{tag}:b:{ALICE}", "s", "h") == ["2000000", "0"]


def test_a_ready_client_may_be_given_even_one_that_returns_bytes(redis_ledger: RedisLedger) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    with RedisLedger(client, prefix=redis_ledger.tag.strip("{}")) as ledger:
        assert ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW).granted
        assert ledger.reserve("r2", [hold(ALICE, 7.0)], ttl_s=60, now=NOW).refused_key == ALICE
        ledger.settle("r1", 1.0, now=NOW)
        assert [(r.key, r.spent_usd) for r in ledger.status(now=NOW)] == [(ALICE, 1.0)]


def test_status_keeps_to_its_namespace_whatever_the_prefix_holds(redis_ledger: RedisLedger) -> None:
    """A namespace's tag is matched literally: ``*``, ``?`` and ``[`` in a prefix are not globs
    reaching into (and garbling the keys of) another namespace."""
    base = redis_ledger.tag.strip("{}")
    with RedisLedger(REDIS_URL, prefix=f"{base}x1", timeout_s=2) as other:
        other.reserve("r1", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        for prefix in (f"{base}[x]1", f"{base}?1", f"{base}*"):
            with RedisLedger(REDIS_URL, prefix=prefix, timeout_s=2) as ledger:
                assert ledger.status(now=NOW) == []
                ledger.reserve("r1", [hold(TEAM, 2.0)], ttl_s=60, now=NOW)
                assert [(r.key, r.held_usd) for r in ledger.status(now=NOW)] == [(TEAM, 2.0)]
