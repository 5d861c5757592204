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


def test_a_record_kept_longer_settles_after_the_default_grace(ledger: LedgerStore) -> None:
    """``keep_s`` (a Message Batch's record, whose results may be read weeks later) outlives the
    store's ``record_grace_s``: a settle then still charges the hold's window."""
    ledger.reserve("batch", [hold(ALICE, 4.0)], ttl_s=60, now=NOW, keep_s=3 * 3600)
    ledger.reserve("call", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
    two_hours = NOW + timedelta(hours=2)
    ledger.reserve("sweep", [hold(BOB, 1.0)], ttl_s=60, now=two_hours)  # purges what has lapsed
    with pytest.raises(LedgerError, match="unknown reservation 'call'"):
        ledger.settle("call", 1.0, now=two_hours)
    assert ledger.settle("batch", 3.0, now=two_hours) == []
    assert ledger.spent([ALICE], now=two_hours) == [3.0]
    assert ledger.settle("batch", 3.0, now=two_hours) == []  # still idempotent
    assert ledger.spent([ALICE], now=two_hours) == [3.0]
