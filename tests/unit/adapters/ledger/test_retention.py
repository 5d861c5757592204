"""Nothing grows forever: expired records, buckets, holds and markers are swept by the stores whose
clock is the callers' ``now`` (Redis expires keys by its own clock: ``test_redis.py``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from costwarden.adapters.ledger.store import LedgerStore
from costwarden.errors import LedgerError

from .test_contract import ALICE, BOB, DAY_END, NOW, hold

pytestmark = pytest.mark.parametrize("store_url", ["memory", "sqlite", "postgres"], indirect=True)


def test_records_and_buckets_are_dropped_after_their_windows(ledger: LedgerStore) -> None:
    ledger.reserve("old", [hold(ALICE, 4.0, alert_at=(0.1,))], ttl_s=60, now=NOW)
    assert len(ledger.settle("old", 2.0, now=NOW)) == 1
    ledger.reserve("open", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
    ledger.settle("open", 0.5, now=NOW + timedelta(minutes=10))  # late, but within the grace
    ledger.reserve("never-settled", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)

    after_grace = NOW + timedelta(minutes=20)
    ledger.reserve("sweep-1", [hold(BOB, 1.0)], ttl_s=60, now=after_grace)
    with pytest.raises(LedgerError, match="unknown reservation 'never-settled'"):
        ledger.settle("never-settled", 1.0, now=after_grace)
    assert ledger.spent([ALICE], now=after_grace) == [2.5]  # the window is still open: spend stays

    past_window = DAY_END + timedelta(days=1, minutes=1)
    ledger.reserve("sweep-2", [hold(BOB, 1.0)], ttl_s=60, now=past_window)
    assert ledger.spent([ALICE], now=past_window) == [0.0]
    assert ledger.status(now=past_window) == []
