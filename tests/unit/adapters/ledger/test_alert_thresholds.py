"""Alert thresholds are reached at exactly their share of the limit, on every store.

``0.55 * 100_000_000`` micro-dollars is ``55000000.00000001`` in floating point: compared as a
float, spend of exactly 55 % of a $100 limit did not reach a 0.55 threshold, and the alert fired
only on the next micro-dollar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from costwarden.adapters.ledger.store import LedgerStore
from costwarden.engine.ledger import Hold

NOW = datetime.now(UTC).replace(microsecond=0)
KEY = "budget:p/team-daily:team=ml:d1"


def hold(amount: float, limit: float, thresholds: tuple[float, ...]) -> Hold:
    return Hold(KEY, amount, limit, expires_at=NOW + timedelta(hours=6), alert_at=thresholds)


@pytest.mark.parametrize(("limit", "threshold"), [(100.0, 0.55), (10.0, 0.7), (3.0, 0.1), (100.0, 0.29)])
def test_spend_of_exactly_the_threshold_alerts(ledger: LedgerStore, limit: float, threshold: float) -> None:
    exact = round(threshold * limit, 6)
    ledger.reserve("r", [hold(exact, limit, (threshold,))], ttl_s=60, now=NOW)
    alerts = ledger.settle("r", exact, now=NOW)
    assert [(a.key, a.threshold) for a in alerts] == [(KEY, threshold)]


def test_spend_a_micro_dollar_short_does_not_alert(ledger: LedgerStore) -> None:
    ledger.reserve("r", [hold(55.0, 100.0, (0.55,))], ttl_s=60, now=NOW)
    assert ledger.settle("r", 54.999999, now=NOW) == []
