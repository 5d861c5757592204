"""The ledger contract, run against every store (``conftest.py``): memory, SQLite, Redis, PostgreSQL.

The ledger's clock is the ``now`` its callers pass, so TTLs and windows are tested by moving
``now`` rather than by sleeping; ``NOW`` is near the real time because Redis expires keys by its
own clock.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from costwarden.adapters.ledger.status import BudgetStatus, budget_status
from costwarden.adapters.ledger.store import LedgerStore
from costwarden.engine.budget import current_window
from costwarden.engine.ledger import Alert, Hold, Ledger, Reservation
from costwarden.errors import LedgerError

from .conftest import OpenStore

NOW = datetime.now(UTC).replace(microsecond=0)
DAY_END = NOW + timedelta(hours=6)
TEAM = "budget:p/team-daily:team=growth:d1"
ALICE = "budget:p/user-daily:user=alice:d1"
BOB = "budget:p/user-daily:user=bob:d1"


def hold(
    key: str, amount: float, limit: float | None = 10.0, *, alert_at: tuple[float, ...] = (), **kw: object
) -> Hold:
    return Hold(key, amount, limit, expires_at=DAY_END, alert_at=alert_at, **kw)  # type: ignore[arg-type]


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_every_store_is_a_ledger(ledger: LedgerStore) -> None:
    assert isinstance(ledger, Ledger)


class TestReserve:
    def test_grants_within_the_limit_and_holds_the_amount(self, ledger: LedgerStore) -> None:
        assert ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW) == Reservation("r1", True)
        assert ledger.spent([ALICE, BOB], now=NOW) == [4.0, 0.0]

    def test_refuses_past_the_limit_naming_the_key_and_the_spend(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 7.5)], ttl_s=60, now=NOW)
        assert ledger.reserve("r2", [hold(ALICE, 3.0)], ttl_s=60, now=NOW) == Reservation("r2", False, ALICE, 7.5, 10.0)
        assert ledger.spent([ALICE], now=NOW) == [7.5]

    def test_exactly_the_limit_is_granted(self, ledger: LedgerStore) -> None:
        assert ledger.reserve("r1", [hold(ALICE, 6.0)], ttl_s=60, now=NOW).granted
        assert ledger.reserve("r2", [hold(ALICE, 4.0)], ttl_s=60, now=NOW).granted
        assert not ledger.reserve("r3", [hold(ALICE, 0.000001)], ttl_s=60, now=NOW).granted

    def test_all_or_nothing_across_keys(self, ledger: LedgerStore) -> None:
        ledger.reserve("bob", [hold(BOB, 9.0)], ttl_s=60, now=NOW)
        outcome = ledger.reserve("r", [hold(TEAM, 2.0, 50.0), hold(ALICE, 2.0), hold(BOB, 2.0)], ttl_s=60, now=NOW)
        assert (outcome.granted, outcome.refused_key) == (False, BOB)
        assert ledger.spent([TEAM, ALICE, BOB], now=NOW) == [0.0, 0.0, 9.0]
        assert ledger.reserve("r2", [hold(TEAM, 2.0, 50.0), hold(ALICE, 2.0)], ttl_s=60, now=NOW).granted
        assert ledger.spent([TEAM, ALICE, BOB], now=NOW) == [2.0, 2.0, 9.0]

    def test_the_limit_applies_to_the_sum_over_the_window(self, ledger: LedgerStore) -> None:
        window = ("budget:p/roll:user=a:h1", "budget:p/roll:user=a:h2", "budget:p/roll:user=a:h3")
        for i, key in enumerate(window[:2]):
            assert ledger.reserve(f"old{i}", [hold(key, 4.0, window=(key,))], ttl_s=60, now=NOW).granted
            ledger.settle(f"old{i}", 4.0, now=NOW)
        newest = hold(window[2], 2.5, window=window)
        assert ledger.reserve("new", [newest], ttl_s=60, now=NOW) == Reservation("new", False, window[2], 8.0, 10.0)
        assert ledger.reserve("fits", [hold(window[2], 2.0, window=window)], ttl_s=60, now=NOW).granted
        assert ledger.spent(list(window), now=NOW) == [4.0, 4.0, 2.0]

    def test_a_hold_without_a_limit_is_held_but_never_refused(self, ledger: LedgerStore) -> None:
        assert ledger.reserve("r1", [hold(ALICE, 1e6, None)], ttl_s=60, now=NOW).granted
        assert ledger.spent([ALICE], now=NOW) == [1e6]

    def test_an_unchecked_hold_is_never_refused_and_counts_against_checked_ones(self, ledger: LedgerStore) -> None:
        assert ledger.reserve("over", [hold(ALICE, 12.0, check=False)], ttl_s=60, now=NOW).granted
        assert ledger.spent([ALICE], now=NOW) == [12.0]
        refused = Reservation("next", False, ALICE, 12.0, 10.0)
        assert ledger.reserve("next", [hold(ALICE, 0.5)], ttl_s=60, now=NOW) == refused
        mixed = [hold(TEAM, 1.0, 0.5, check=False), hold(BOB, 1.0)]  # only the checked hold may refuse
        assert ledger.reserve("mixed", mixed, ttl_s=60, now=NOW).granted

    def test_an_unchecked_hold_keeps_its_limit_for_status_and_alerts(self, ledger: LedgerStore) -> None:
        ledger.reserve("a", [hold(ALICE, 6.0, alert_at=(0.5,), check=False)], ttl_s=60, now=NOW)
        assert ledger.status(now=NOW) == [BudgetStatus(ALICE, 0.0, 6.0, 10.0, DAY_END)]
        assert ledger.settle("a", 6.0, now=NOW) == [Alert(ALICE, 0.5, 6.0, 10.0)]

    def test_no_holds_is_granted(self, ledger: LedgerStore) -> None:
        assert ledger.reserve("r1", [], ttl_s=60, now=NOW).granted
        assert ledger.settle("r1", 0.5, now=NOW) == []

    def test_micro_dollars_do_not_drift(self, ledger: LedgerStore) -> None:
        assert 0.1 + 0.2 > 0.3  # what float dollars would get wrong
        assert ledger.reserve("a", [hold(ALICE, 0.1, 0.3)], ttl_s=60, now=NOW).granted
        assert ledger.reserve("b", [hold(ALICE, 0.2, 0.3)], ttl_s=60, now=NOW).granted
        for i in range(10):
            ledger.reserve(f"c{i}", [hold(BOB, 0.1, None)], ttl_s=60, now=NOW)
            ledger.settle(f"c{i}", 0.1, now=NOW)
        assert ledger.spent([BOB], now=NOW) == [1.0]

    @pytest.mark.parametrize("amount", [-1.0, float("nan"), float("inf")])
    def test_refuses_bad_amounts(self, ledger: LedgerStore, amount: float) -> None:
        with pytest.raises(LedgerError, match="finite, non-negative"):
            ledger.reserve("r1", [hold(ALICE, amount)], ttl_s=60, now=NOW)

    def test_refuses_amounts_no_store_keeps_exactly_with_a_ledger_error(self, ledger: LedgerStore) -> None:
        """Past 2**53 micro-dollars Redis would round and SQLite (past 2**63) would raise
        OverflowError: every store refuses the amount as a LedgerError instead."""
        for holds in ([hold(ALICE, 1e10, None)], [hold(ALICE, 1.0, 1e13)]):
            with pytest.raises(LedgerError, match="at most"):
                ledger.reserve("big", holds, ttl_s=60, now=NOW)
        assert ledger.reserve("r1", [hold(ALICE, 1.0, 9e9)], ttl_s=60, now=NOW).granted
        with pytest.raises(LedgerError, match="at most"):
            ledger.settle("r1", 1e13, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [1.0]

    @pytest.mark.parametrize("ttl", [0, -5, float("nan"), 1e20])  # 1e20: OverflowError in SQLite
    def test_refuses_bad_ttls(self, ledger: LedgerStore, ttl: float) -> None:
        with pytest.raises(LedgerError, match="ttl_s"):
            ledger.reserve("r1", [hold(ALICE, 1.0)], ttl_s=ttl, now=NOW)
        with pytest.raises(LedgerError, match="ttl_s"):
            ledger.reserve("r1", [hold(ALICE, 1.0)], ttl_s=60, now=NOW, keep_s=ttl)


class TestIdempotency:
    def test_a_repeated_reserve_returns_the_first_outcome_and_holds_once(self, ledger: LedgerStore) -> None:
        first = ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW)
        assert ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW) == first
        assert ledger.spent([ALICE], now=NOW) == [4.0]

    def test_a_refusal_is_repeated_even_after_room_frees_up(self, ledger: LedgerStore) -> None:
        ledger.reserve("big", [hold(ALICE, 9.0)], ttl_s=60, now=NOW)
        refused = ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW)
        ledger.release("big", now=NOW)
        assert ledger.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW) == refused

    def test_across_instances_as_across_processes(self, open_store: OpenStore) -> None:
        one, two = open_store(), open_store()
        assert one.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW).granted
        assert two.reserve("r1", [hold(ALICE, 4.0)], ttl_s=60, now=NOW).granted
        assert two.spent([ALICE], now=NOW) == [4.0]
        two.settle("r1", 1.0, now=NOW)
        one.settle("r1", 1.0, now=NOW)
        assert one.spent([ALICE], now=NOW) == [1.0]

    def test_concurrent_repeats_of_one_reservation_hold_once(self, open_store: OpenStore) -> None:
        stores = [open_store() for _ in range(4)]
        outcomes: list[Reservation] = []
        threads = [
            threading.Thread(
                target=lambda s=s: outcomes.append(s.reserve("same", [hold(ALICE, 3.0)], ttl_s=60, now=NOW))
            )
            for s in stores * 2
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(o.granted for o in outcomes) and len(outcomes) == 8
        assert stores[0].spent([ALICE], now=NOW) == [3.0]


class TestSettleAndRelease:
    def test_settle_replaces_the_holds_by_the_cost_on_every_key(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(TEAM, 5.0, 50.0), hold(ALICE, 5.0)], ttl_s=60, now=NOW)
        assert ledger.settle("r1", 1.25, now=NOW) == []
        assert ledger.spent([TEAM, ALICE], now=NOW) == [1.25, 1.25]

    def test_settle_is_idempotent(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 5.0)], ttl_s=60, now=NOW)
        ledger.settle("r1", 2.0, now=NOW)
        assert ledger.settle("r1", 3.0, now=NOW) == []
        assert ledger.spent([ALICE], now=NOW) == [2.0]

    def test_settle_may_charge_more_than_was_held(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        ledger.settle("r1", 12.0, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [12.0]
        assert not ledger.reserve("r2", [hold(ALICE, 0.01)], ttl_s=60, now=NOW).granted

    def test_settling_a_refusal_charges_nothing(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 11.0)], ttl_s=60, now=NOW)
        assert ledger.settle("r1", 5.0, now=NOW) == []
        assert ledger.spent([ALICE], now=NOW) == [0.0]

    def test_settling_an_unknown_reservation_is_an_error_not_a_silent_zero(self, ledger: LedgerStore) -> None:
        with pytest.raises(LedgerError, match="unknown reservation 'nope'"):
            ledger.settle("nope", 1.0, now=NOW)

    def test_settle_refuses_a_negative_cost(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        with pytest.raises(LedgerError, match="cost_usd"):
            ledger.settle("r1", -1.0, now=NOW)

    def test_release_drops_the_holds_and_is_idempotent(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(TEAM, 5.0, 50.0), hold(ALICE, 5.0)], ttl_s=60, now=NOW)
        ledger.release("r1", now=NOW)
        ledger.release("r1", now=NOW)
        ledger.release("never-reserved", now=NOW)
        assert ledger.spent([TEAM, ALICE], now=NOW) == [0.0, 0.0]

    def test_the_first_of_settle_and_release_wins(self, ledger: LedgerStore) -> None:
        ledger.reserve("s", [hold(ALICE, 5.0)], ttl_s=60, now=NOW)
        ledger.reserve("x", [hold(BOB, 5.0)], ttl_s=60, now=NOW)
        ledger.settle("s", 2.0, now=NOW)
        ledger.release("s", now=NOW)
        ledger.release("x", now=NOW)
        ledger.settle("x", 2.0, now=NOW)
        assert ledger.spent([ALICE, BOB], now=NOW) == [2.0, 0.0]


class TestZeroHolds:
    """A hold of $0 (a batch's record, a batch whose worst case has no price) is an ordinary hold."""

    def test_settle_charges_a_zero_hold_the_cost(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 0.0), hold(BOB, 0.0, None)], ttl_s=60, now=NOW)
        assert ledger.spent([ALICE, BOB], now=NOW) == [0.0, 0.0]
        assert ledger.settle("r1", 0.5, now=NOW) == []
        assert ledger.spent([ALICE, BOB], now=NOW) == [0.5, 0.5]

    def test_release_and_expiry_of_a_zero_hold(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 0.0)], ttl_s=60, now=NOW)
        ledger.release("r1", now=NOW)
        ledger.reserve("r2", [hold(ALICE, 0.0), hold(BOB, 1.0)], ttl_s=30, now=NOW)
        assert ledger.spent([ALICE, BOB], now=later(31)) == [0.0, 0.0]  # expired: dropped from the sums
        assert ledger.reserve("r3", [hold(ALICE, 10.0)], ttl_s=30, now=later(32)).granted
        ledger.settle("r2", 0.25, now=later(40))
        assert ledger.spent([ALICE, BOB], now=later(40)) == [10.25, 0.25]


class TestCharge:
    """``charge``: an unchecked reserve of the real cost and its settle, as one atomic step."""

    def test_adds_the_cost_to_every_key_and_holds_nothing(self, ledger: LedgerStore) -> None:
        assert ledger.charge("c1", [hold(TEAM, 5.0, 50.0), hold(ALICE, 5.0)], 1.25, ttl_s=60, now=NOW) == []
        assert ledger.spent([TEAM, ALICE], now=NOW) == [1.25, 1.25]
        assert [(r.key, r.spent_usd, r.held_usd) for r in ledger.status(now=NOW)] == [
            (TEAM, 1.25, 0.0),
            (ALICE, 1.25, 0.0),
        ]

    def test_is_never_refused(self, ledger: LedgerStore) -> None:
        ledger.charge("c1", [hold(ALICE, 1.0)], 12.0, ttl_s=60, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [12.0]
        assert not ledger.reserve("r2", [hold(ALICE, 0.01)], ttl_s=60, now=NOW).granted

    def test_a_repeat_charges_once(self, ledger: LedgerStore) -> None:
        ledger.charge("c1", [hold(ALICE, 1.0)], 2.0, ttl_s=60, now=NOW)
        assert ledger.charge("c1", [hold(ALICE, 1.0)], 2.0, ttl_s=60, now=NOW) == []
        assert ledger.spent([ALICE], now=NOW) == [2.0]

    def test_a_charged_call_is_settled_so_settle_and_release_change_nothing(self, ledger: LedgerStore) -> None:
        ledger.charge("c1", [hold(ALICE, 1.0)], 2.0, ttl_s=60, now=NOW)
        assert ledger.settle("c1", 5.0, now=NOW) == []
        ledger.release("c1", now=NOW)
        assert ledger.reserve("c1", [hold(ALICE, 9.0)], ttl_s=60, now=NOW).granted  # the first outcome again
        assert ledger.spent([ALICE], now=NOW) == [2.0]

    def test_an_id_reserved_before_is_not_charged_again(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 3.0)], ttl_s=60, now=NOW)
        assert ledger.charge("r1", [hold(ALICE, 3.0)], 1.0, ttl_s=60, now=NOW) == []
        assert ledger.spent([ALICE], now=NOW) == [3.0]  # still the hold
        ledger.settle("r1", 1.5, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [1.5]

    def test_counts_against_reservations_in_the_window(self, ledger: LedgerStore) -> None:
        ledger.charge("c1", [hold(ALICE, 1.0)], 7.0, ttl_s=60, now=NOW)
        assert not ledger.reserve("r1", [hold(ALICE, 3.5)], ttl_s=60, now=NOW).granted
        assert ledger.reserve("r2", [hold(ALICE, 3.0)], ttl_s=60, now=NOW).granted

    def test_alerts_as_a_settle_would_once_per_threshold(self, ledger: LedgerStore) -> None:
        thresholds = (0.5, 0.8)
        fired = [
            ledger.charge(f"c{i}", [hold(ALICE, 1.0, alert_at=thresholds)], cost, ttl_s=60, now=NOW)
            for i, cost in enumerate([4.0, 2.0, 1.0, 2.0])
        ]
        fired.append(ledger.charge("c3", [hold(ALICE, 1.0, alert_at=thresholds)], 2.0, ttl_s=60, now=NOW))
        assert fired == [[], [Alert(ALICE, 0.5, 6.0, 10.0)], [], [Alert(ALICE, 0.8, 9.0, 10.0)], []]

    def test_refuses_a_negative_cost(self, ledger: LedgerStore) -> None:
        with pytest.raises(LedgerError, match="cost_usd"):
            ledger.charge("c1", [hold(ALICE, 1.0)], -1.0, ttl_s=60, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [0.0]

    def test_concurrent_charges_of_one_id_count_once(self, open_store: OpenStore) -> None:
        stores = [open_store() for _ in range(4)]
        threads = [
            threading.Thread(target=stores[i % 4].charge, args=(f"c{i // 4}", [hold(TEAM, 1.0, 50.0)], 0.5),
                             kwargs={"ttl_s": 60, "now": NOW})
            for i in range(24)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stores[0].spent([TEAM], now=NOW) == [3.0]  # six ids × $0.50


class TestExpiry:
    def test_an_unsettled_reservation_stops_counting_after_its_ttl(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 8.0)], ttl_s=30, now=NOW)
        assert not ledger.reserve("r2", [hold(ALICE, 8.0)], ttl_s=30, now=later(29)).granted
        assert ledger.spent([ALICE], now=later(29.9)) == [8.0]
        assert ledger.spent([ALICE], now=later(30)) == [0.0]
        assert ledger.reserve("r3", [hold(ALICE, 8.0)], ttl_s=30, now=later(31)).granted

    def test_a_late_settle_still_charges_the_call(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 8.0)], ttl_s=30, now=NOW)
        ledger.reserve("r2", [hold(ALICE, 1.0)], ttl_s=600, now=later(40))  # purges r1's expired hold
        ledger.settle("r1", 3.0, now=later(60))
        assert ledger.spent([ALICE], now=later(60)) == [4.0]

    def test_a_purged_reservation_is_charged_once_under_its_own_id(self, ledger: LedgerStore) -> None:
        """A call that outlives its reservation's record (``ttl_s`` + ``record_grace_s``): settle says
        the id is unknown, and the call-guard charges the cost under that id instead — once, however
        often it is retried, and a later settle or release of the id changes nothing."""
        long_ago = NOW - timedelta(hours=1)  # Redis expires the record by its own clock: an hour ago
        ledger.reserve("r1", [hold(ALICE, 8.0)], ttl_s=30, now=long_ago)
        ledger.reserve("sweep", [hold(BOB, 1.0)], ttl_s=30, now=NOW)  # purges r1's lapsed record
        with pytest.raises(LedgerError, match="unknown reservation 'r1'"):
            ledger.settle("r1", 3.0, now=NOW)
        assert ledger.charge("r1", [hold(ALICE, 8.0)], 3.0, ttl_s=30, now=NOW) == []
        assert ledger.charge("r1", [hold(ALICE, 8.0)], 3.0, ttl_s=30, now=NOW) == []  # a retry counts once
        assert ledger.settle("r1", 3.0, now=NOW) == []
        ledger.release("r1", now=NOW)
        assert ledger.spent([ALICE, BOB], now=NOW) == [3.0, 1.0]

    def test_holds_expire_one_by_one_among_many(self, ledger: LedgerStore) -> None:
        """Holds of different TTLs on one key drop out of the sums each at its own expiry, including
        one made after an earlier expiry that expires before the holds left (stores may keep a
        running total and only look through the holds when one may have expired)."""
        ledger.reserve("r30", [hold(ALICE, 1.0)], ttl_s=30, now=NOW)
        ledger.reserve("r600", [hold(ALICE, 2.0)], ttl_s=600, now=NOW)
        ledger.reserve("r60", [hold(ALICE, 4.0)], ttl_s=60, now=NOW)
        assert ledger.spent([ALICE], now=later(29)) == [7.0]
        assert ledger.spent([ALICE], now=later(31)) == [6.0]
        ledger.settle("r60", 0.5, now=later(40))
        assert ledger.spent([ALICE], now=later(40)) == [2.5]
        ledger.reserve("r10", [hold(ALICE, 3.0)], ttl_s=10, now=later(45))  # expires before r600
        assert ledger.spent([ALICE], now=later(54)) == [5.5]
        assert ledger.spent([ALICE], now=later(56)) == [2.5]
        assert ledger.spent([ALICE], now=later(601)) == [0.5]
        assert ledger.reserve("r-all", [hold(ALICE, 9.5)], ttl_s=30, now=later(602)).granted

    def test_release_after_expiry_is_harmless(self, ledger: LedgerStore) -> None:
        ledger.reserve("r1", [hold(ALICE, 8.0)], ttl_s=30, now=NOW)
        ledger.spent([ALICE], now=later(31))
        ledger.release("r1", now=later(31))
        assert ledger.reserve("r2", [hold(ALICE, 10.0)], ttl_s=30, now=later(32)).granted


class TestAlerts:
    def test_each_threshold_fires_once_per_window(self, ledger: LedgerStore) -> None:
        thresholds = (0.5, 0.8, 0.95)
        fired: list[list[Alert]] = []
        for i, cost in enumerate([3.0, 2.5, 1.0, 2.0, 1.0]):
            ledger.reserve(f"r{i}", [hold(ALICE, cost, alert_at=thresholds)], ttl_s=60, now=NOW)
            fired.append(ledger.settle(f"r{i}", cost, now=NOW))
        assert fired == [
            [],
            [Alert(ALICE, 0.5, 5.5, 10.0)],
            [],
            [Alert(ALICE, 0.8, 8.5, 10.0)],
            [Alert(ALICE, 0.95, 9.5, 10.0)],
        ]

    def test_one_settle_can_cross_several_thresholds(self, ledger: LedgerStore) -> None:
        ledger.reserve("r", [hold(ALICE, 9.0, alert_at=(0.5, 0.8))], ttl_s=60, now=NOW)
        assert ledger.settle("r", 9.0, now=NOW) == [Alert(ALICE, 0.5, 9.0, 10.0), Alert(ALICE, 0.8, 9.0, 10.0)]

    def test_a_new_window_key_alerts_again(self, ledger: LedgerStore) -> None:
        tomorrow = "budget:p/user-daily:user=alice:d2"
        for key in (ALICE, tomorrow):
            ledger.reserve(key, [hold(key, 6.0, alert_at=(0.5,))], ttl_s=60, now=NOW)
            assert ledger.settle(key, 6.0, now=NOW) == [Alert(key, 0.5, 6.0, 10.0)]

    def test_alerts_fire_exactly_once_under_concurrency(self, open_store: OpenStore) -> None:
        stores = [open_store() for _ in range(4)]
        for i in range(20):
            stores[0].reserve(f"r{i}", [hold(ALICE, 0.5, alert_at=(0.25, 0.5, 0.75))], ttl_s=60, now=NOW)
        fired: list[Alert] = []
        threads = [
            threading.Thread(target=lambda i=i: fired.extend(stores[i % 4].settle(f"r{i}", 0.5, now=NOW)))
            for i in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a.threshold for a in fired) == [0.25, 0.5, 0.75]
        assert all(a.spent_usd >= a.threshold * 10.0 for a in fired)


class TestConcurrency:
    def test_threads_never_overspend_one_limit(self, open_store: OpenStore) -> None:
        stores = [open_store() for _ in range(4)]
        granted: list[str] = []

        def worker(n: int) -> None:
            store = stores[n % 4]
            for i in range(10):
                rid = f"t{n}-{i}"
                if store.reserve(rid, [hold(TEAM, 0.3, 5.0), hold(ALICE, 0.3, 100.0)], ttl_s=60, now=NOW).granted:
                    store.settle(rid, 0.3, now=NOW)
                    granted.append(rid)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(granted) == 16  # 16 × $0.30 = $4.80; a 17th would pass $5
        assert stores[0].spent([TEAM, ALICE], now=NOW) == [pytest.approx(4.8), pytest.approx(4.8)]


class TestStatus:
    def test_current_windows_with_spend_holds_and_limits(self, ledger: LedgerStore) -> None:
        ledger.reserve("a", [hold(ALICE, 4.0), hold(TEAM, 4.0, 50.0)], ttl_s=60, now=NOW)
        ledger.settle("a", 3.0, now=NOW)
        ledger.reserve("b", [hold(ALICE, 2.0)], ttl_s=60, now=NOW)
        ended = Hold("budget:p/user-daily:user=alice:d0", 1.0, 10.0, expires_at=NOW - timedelta(hours=1))
        ledger.reserve("c", [ended], ttl_s=60, now=NOW)
        rows = ledger.status(now=NOW)
        assert rows == [
            BudgetStatus(TEAM, 3.0, 0.0, 50.0, DAY_END),
            BudgetStatus(ALICE, 3.0, 2.0, 10.0, DAY_END),
        ]
        assert rows[1].used_fraction == 0.5
        assert ledger.status("budget:p/team-daily:", now=NOW) == rows[:1]
        assert ledger.status(now=later(61))[1].held_usd == 0.0

    def test_a_rolling_window_shows_its_newest_bucket_with_window_totals(self, ledger: LedgerStore) -> None:
        base = "budget:p/roll:user=a:"
        window = tuple(f"{base}h{i}" for i in range(3))
        ends = [NOW - timedelta(hours=2), NOW - timedelta(hours=1), NOW + timedelta(hours=1)]
        for i, key in enumerate(window):
            h = Hold(key, 1.0 + i, 20.0, window=window[: i + 1], expires_at=ends[i])
            ledger.reserve(key, [h], ttl_s=60, now=NOW)
            ledger.settle(key, 1.0 + i, now=NOW)
        assert ledger.status(base, now=NOW) == [BudgetStatus(window[2], 6.0, 0.0, 20.0, ends[2])]
        assert ledger.status(f"{base}h2", now=NOW) == [BudgetStatus(window[2], 6.0, 0.0, 20.0, ends[2])]

    def test_the_prefix_is_case_sensitive_as_keys_are(self, ledger: LedgerStore) -> None:
        """``alice`` and ``Alice`` are different users: a prefix naming one does not show the other
        (SQLite's LIKE ignores ASCII case)."""
        keys = [f"budget:p/user-daily:user={u}:d1" for u in ("alice", "Alice", "ALICE")]
        for i, key in enumerate(keys):
            ledger.reserve(f"r{i}", [hold(key, 1.0)], ttl_s=60, now=NOW)
        assert [r.key for r in ledger.status("budget:p/user-daily:user=Alice", now=NOW)] == [keys[1]]
        assert ledger.status("budget:P/", now=NOW) == []

    def test_a_rolling_window_is_one_row_while_its_spend_counts(self, ledger: LedgerStore) -> None:
        """Real rolling keys: the reserve names (and so creates) the window's older, empty hourly
        buckets, which are no budgets of their own; an hour with no call leaves the budget shown
        with the spend its window still reads, until that spend leaves the window."""
        at = NOW  # near the real time: Redis expires records by its own clock
        base = "budget:p/roll3:user=a"

        def window(when: datetime) -> tuple[tuple[str, ...], datetime]:
            keys, end = current_window("rolling:3h", when, UTC)
            return tuple(f"{base}:{k}" for k in keys), end

        keys, end = window(at)
        ledger.reserve("r", [Hold(keys[-1], 2.0, 10.0, keys, end)], ttl_s=60, now=at)
        ledger.settle("r", 2.0, now=at)
        assert ledger.status(base, now=at) == [BudgetStatus(keys[-1], 2.0, 0.0, 10.0, end)]
        hour = timedelta(hours=1)
        assert ledger.status(base, now=at + hour) == [BudgetStatus(keys[-1], 2.0, 0.0, 10.0, end + hour)]
        assert ledger.status(base, now=at + 2 * hour) == [BudgetStatus(keys[-1], 2.0, 0.0, 10.0, end + 2 * hour)]
        assert ledger.status(base, now=at + 3 * hour) == [BudgetStatus(keys[-1], 2.0, 0.0, 10.0, end + 3 * hour)]
        assert ledger.status(base, now=at + 4 * hour) == []

    def test_budget_status_by_url(self, ledger: LedgerStore, store_url: str) -> None:
        ledger.reserve("a", [hold(ALICE, 4.0)], ttl_s=60, now=NOW)
        rows = budget_status(ledger, now=NOW)
        assert rows == [BudgetStatus(ALICE, 0.0, 4.0, 10.0, DAY_END)]
        if store_url != "memory://":
            assert budget_status(store_url, now=NOW) == rows
