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


def test_a_rolling_window_alerts_when_spend_crosses_a_threshold_not_every_hour_above_it(
    ledger: LedgerStore,
) -> None:
    """Each hour of a rolling window is a bucket of its own, and alerts are marked per bucket; a
    budget that stays above a threshold must not alert again in every new hour it is settled in,
    but must alert again once its old spend has left the window and new spend crosses it again."""
    from costwarden.engine.budget import current_window

    base = "budget:p/roll:user=a"
    start = NOW  # near the real time: Redis expires records by its own clock
    hour = timedelta(hours=1)

    def settle(rid: str, cost: float, at: datetime) -> list[float]:
        keys, end = current_window("rolling:3h", at, UTC)
        window = tuple(f"{base}:{k}" for k in keys)
        ledger.reserve(rid, [Hold(window[-1], cost, 10.0, window, end, (0.5,))], ttl_s=60, now=at)
        return [a.threshold for a in ledger.settle(rid, cost, now=at)]

    assert settle("r1", 6.0, start) == [0.5]
    assert settle("r2", 0.5, start + hour) == []  # still above: before, a new hour's bucket alerted again
    assert settle("r3", 0.5, start + 2 * hour) == []
    # four hours on, the $6 has left the window ($1 is left): crossing again alerts again
    assert settle("r4", 1.0, start + 4 * hour) == []
    assert settle("r5", 3.5, start + 4 * hour + timedelta(minutes=5)) == [0.5]
