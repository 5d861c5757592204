"""The ledger stores against a reference model, under random sequences of operations.

A hypothesis state machine reserves, settles, releases and charges on a few budgets and moves the
callers' clock past TTLs; after every step the store must agree with a small model of the ledger
contract (``engine/ledger.py``, ``adapters/ledger/store.py``), to the micro-dollar:

* **nothing lost, nothing double-counted** — ``spent`` is the model's settled spend plus its live
  holds on every key, and ``status`` shows the same figures;
* **no overspend** — a reserve is granted iff its worst case fits every window (all or nothing,
  exactly the limit allowed), so settled spend plus live holds never pass a limit by more than
  what the contract lets through unchecked: a settle above its hold (the excess), a settle after
  the hold lapsed (its whole cost) and a charge;
* settles, releases, charges and repeated reserves are idempotent; alerts fire once per threshold.

Every store runs it: memory, SQLite, the real Redis and PostgreSQL, and the leased ledger over
SQLite. Records are kept only ``RECORD_GRACE_S`` after their TTL, so the clock reaches them: a
store may drop a record once its time is past (lazily, so the model accepts both answers until an
operation shows which), and Redis drops it by its own clock (never within a run). The leased ledger
judges its slices by the real monotonic clock, so its machine never moves the clock; it may refuse
a call the budget has room for beside its slices (``leased.py``), so a refusal is checked against
what its store holds, and a grant by the bound above.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from ledger_backends import REDIS_URL
from unit.adapters.ledger.test_contract import hold

from costwarden.adapters.ledger import open_ledger
from costwarden.adapters.ledger.leased import LeasedLedger
from costwarden.adapters.ledger.store import LedgerStore
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import UnknownReservation

A = "budget:p/team-daily:team=growth:d1"
B = "budget:p/user-daily:user=alice:d1"
R0 = "budget:p/roll:user=a:h0"  # the previous hour of R1's rolling window: only charges reach it
R1 = "budget:p/roll:user=a:h1"
U = "budget:p/spend-log:user=a:d1"  # held and charged, never limited
LIMITS: dict[str, int | None] = {A: 10_000_000, B: 4_000_000, R1: 8_000_000, U: None, R0: 8_000_000}
WINDOWS = {A: (A,), B: (B,), R1: (R0, R1), U: (U,), R0: (R0,)}
KEYS = (A, B, R0, R1, U)
RESERVABLE = (A, B, R1, U)
THRESHOLDS = (0.5, 0.9)
RECORD_GRACE_S = 120
TTLS = (30, 60, 120)

SETTINGS = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def usd(micros: int) -> float:
    return micros / 1_000_000


def budget_hold(key: str, micros: int) -> Hold:
    limit = LIMITS[key]
    return hold(key, usd(micros), None if limit is None else usd(limit), alert_at=THRESHOLDS, window=WINDOWS[key])


@dataclass
class Rec:
    """The model's reservation record: state ``g`` holding, ``r`` refused, ``s`` settled, ``x`` released."""

    state: str
    outcome: Reservation
    holds: dict[str, int]
    expires_ms: int
    purge_ms: int


@dataclass
class Model:
    """The ledger contract in integer micro-dollars and epoch milliseconds."""

    now_ms: int
    settled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    held: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (rid, key) -> (micros, expiry)
    records: dict[str, Rec] = field(default_factory=dict)
    markers: set[tuple[str, float]] = field(default_factory=set)
    excess: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    shaped: set[str] = field(default_factory=set)  # keys a granted hold gave their limit and window

    def live(self, key: str) -> int:
        return sum(a for (_, k), (a, exp) in self.held.items() if k == key and exp > self.now_ms)

    def total(self, key: str) -> int:
        return self.settled[key] + self.live(key)

    def present(self, rid: str) -> bool:
        """Whether the store must still have the record (past ``purge_ms`` it may or may not)."""
        return rid in self.records and self.now_ms < self.records[rid].purge_ms

    def decide(self, rid: str, amounts: dict[str, int], totals: Callable[[str], int]) -> Reservation:
        pending: dict[str, int] = {}
        for key, amount in amounts.items():
            limit = LIMITS[key]
            if limit is not None:
                total = sum(totals(k) + pending.get(k, 0) for k in WINDOWS[key])
                if total + amount > limit:
                    return Reservation(rid, False, key, usd(total), usd(limit))
            pending[key] = pending.get(key, 0) + amount
        return Reservation(rid, True)

    def reserve(self, rid: str, amounts: dict[str, int], outcome: Reservation, ttl_s: int) -> None:
        expires = self.now_ms + ttl_s * 1000
        holds = amounts if outcome.granted else {}
        for key, amount in holds.items():
            self.held[(rid, key)] = (amount, expires)
            self.shaped.add(key)
        state = "g" if outcome.granted else "r"
        self.records[rid] = Rec(state, outcome, dict(holds), expires, expires + RECORD_GRACE_S * 1000)

    def settle(self, rid: str, cost: int) -> list[Alert]:
        rec = self.records[rid]
        if rec.state != "g":
            return []
        for key in rec.holds:
            amount, expiry = self.held.pop((rid, key))
            self.excess[key] += max(0, cost - (amount if expiry > self.now_ms else 0))
        rec.state = "s"
        return self._charge(list(rec.holds), cost)

    def release(self, rid: str) -> None:
        rec = self.records[rid]
        if rec.state == "g":
            for key in rec.holds:
                del self.held[(rid, key)]
            rec.state = "x"

    def charge(self, rid: str, keys: Sequence[str], cost: int, ttl_s: int) -> list[Alert]:
        for key in keys:
            self.excess[key] += cost
        expires = self.now_ms + ttl_s * 1000
        self.records[rid] = Rec("s", Reservation(rid, True), {}, expires, expires + RECORD_GRACE_S * 1000)
        return self._charge(keys, cost)

    def _charge(self, keys: Sequence[str], cost: int) -> list[Alert]:
        """Add the cost to each key and return the alerts it fires (``store.crossed``)."""
        for key in keys:
            self.settled[key] += cost
        alerts = []
        for key in keys:
            limit = LIMITS[key]
            if limit is None:
                continue
            window = WINDOWS[key]
            total = sum(self.settled[k] for k in window)
            before = total - cost if len(window) > 1 else -1
            for t in THRESHOLDS:
                if before < math.floor(t * limit + 0.5) <= total and (key, t) not in self.markers:
                    self.markers.add((key, t))
                    alerts.append(Alert(key, t, usd(total), usd(limit)))
        return alerts


amounts_st = st.one_of(
    st.sampled_from([0, 1, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000, 10_000_000]),
    st.integers(0, 12_000_000),
)
picks = st.integers(0, 63)


class LedgerMachine(RuleBasedStateMachine):
    """One fresh store per example; ``open`` and ``leased`` are set per store by the test."""

    open: Callable[[], LedgerStore]
    leased = False

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).open()
        self.start = datetime.now(UTC).replace(microsecond=0)  # Redis expires records by its own clock
        self.model = Model(int(self.start.timestamp() * 1000))
        self.ids = 0

    def teardown(self) -> None:
        self.store.close()

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.model.now_ms / 1000, UTC)

    def new_id(self) -> str:
        self.ids += 1
        return f"call-{self.ids}"

    def pick(self, pick: int, ids: Sequence[str]) -> str:
        return sorted(ids, key=lambda r: int(r.split("-")[1]))[pick % len(ids)]

    # -- rules ---------------------------------------------------------------------------------
    @rule(keys=st.lists(st.sampled_from(RESERVABLE), min_size=1, max_size=3, unique=True),
          amounts=st.lists(amounts_st, min_size=3, max_size=3), ttl=st.sampled_from(TTLS))
    def reserve(self, keys: list[str], amounts: list[int], ttl: int) -> None:
        self._reserve(self.new_id(), dict(zip(keys, amounts, strict=False)), ttl)

    @rule(key=st.sampled_from(RESERVABLE), over=st.sampled_from([0, 1]), ttl=st.sampled_from(TTLS))
    def reserve_the_headroom(self, key: str, over: int, ttl: int) -> None:
        """Exactly what is left of a window (granted) or a micro-dollar more (refused)."""
        limit = LIMITS[key] or 1_000_000
        left = limit - sum(self.model.total(k) for k in WINDOWS[key])
        self._reserve(self.new_id(), {key: max(0, left) + over}, ttl)

    @precondition(lambda self: any(self.model.present(r) for r in self.model.records))
    @rule(pick=picks, ttl=st.sampled_from(TTLS))
    def reserve_again(self, pick: int, ttl: int) -> None:
        """A retry under the same id returns the first outcome and holds nothing more."""
        rid = self.pick(pick, [r for r in self.model.records if self.model.present(r)])
        rec = self.model.records[rid]
        before = self.store.spent(KEYS, now=self.now)
        again = {k: amount + 1 for k, amount in rec.holds.items()} or {A: 1}
        assert self.store.reserve(rid, [budget_hold(k, a) for k, a in again.items()], ttl_s=ttl, now=self.now) == (
            rec.outcome
        )
        assert self.store.spent(KEYS, now=self.now) == before

    @precondition(lambda self: bool(self.model.records))
    @rule(pick=picks, how=st.sampled_from(["zero", "below", "equal", "above"]), extra=st.integers(1, 3_000_000))
    def settle(self, pick: int, how: str, extra: int) -> None:
        rid = self.pick(pick, list(self.model.records))
        held = max(self.model.records[rid].holds.values(), default=0)
        cost = {"zero": 0, "below": held // 2, "equal": held, "above": held + extra}[how]
        present = self.model.present(rid)
        try:
            alerts = self.store.settle(rid, usd(cost), now=self.now)
        except UnknownReservation:
            assert not present, f"{rid} was dropped before its record's time"
            event("settle: the record was purged")
            del self.model.records[rid]  # purged: the caller charges it (the charge rule)
            return
        assert alerts == self.model.settle(rid, cost)

    @rule(cost=amounts_st)
    def settle_unknown(self, cost: int) -> None:
        with pytest.raises(UnknownReservation):
            self.store.settle("never-reserved", usd(cost), now=self.now)

    @precondition(lambda self: bool(self.model.records))
    @rule(pick=picks)
    def release(self, pick: int) -> None:
        rid = self.pick(pick, list(self.model.records))
        self.store.release(rid, now=self.now)
        self.model.release(rid)  # past its time the record may be gone: then its holds had lapsed anyway

    @rule()
    def release_unknown(self) -> None:
        self.store.release("never-reserved", now=self.now)

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True), cost=st.integers(1, 6_000_000),
          pick=st.one_of(st.none(), picks))
    def charge(self, keys: list[str], cost: int, pick: int | None) -> None:
        """Under a new id (it charges), or under an id with a record — a reservation, lapsed or not,
        or a charge — which charges nothing; past its record's time the store may have dropped it."""
        known = list(self.model.records)
        rid = self.new_id() if pick is None or not known else self.pick(pick, known)
        holds = [budget_hold(k, 1_000_000) for k in keys]
        ttl = 60
        before = self.store.spent(KEYS, now=self.now)
        alerts = self.store.charge(rid, holds, usd(cost), ttl_s=ttl, now=self.now)
        if rid in self.model.records and self.model.present(rid):
            assert alerts == []
            return
        if rid in self.model.records and self.store.spent(KEYS, now=self.now) == before:
            event("charge: a record past its time was still there")
            assert alerts == []
            return
        event(f"charge: {'a purged id' if rid in self.model.records else 'a new id'}")
        assert alerts == self.model.charge(rid, keys, cost, ttl)

    @precondition(lambda self: not self.leased)
    @rule(seconds=st.sampled_from([1, 29, 30, 31, 59, 61, 119, 121, 240, 300]))
    def advance_clock(self, seconds: int) -> None:
        self.model.now_ms += seconds * 1000

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def spent_is_settled_plus_live_holds(self) -> None:
        assert self.store.spent(KEYS, now=self.now) == [usd(self.model.total(k)) for k in KEYS]

    @invariant()
    def no_window_passes_its_limit_beyond_the_unchecked_spend(self) -> None:
        spent = dict(zip(KEYS, (round(x * 1e6) for x in self.store.spent(KEYS, now=self.now)), strict=True))
        for key, limit in LIMITS.items():
            if limit is not None and key != R0:  # R0 only takes charges (all excess)
                window = WINDOWS[key]
                assert sum(spent[k] for k in window) <= limit + sum(self.model.excess[k] for k in window), key

    @invariant()
    def status_agrees_with_spent(self) -> None:
        rows = {r.key: r for r in self.store.status("budget:", now=self.now)}
        assert rows.keys() <= set(KEYS)
        for key, row in rows.items():
            window = WINDOWS[key] if key in self.model.shaped else (key,)
            assert row.spent_usd == usd(sum(self.model.settled[k] for k in window)), key
            held = usd(sum(self.model.live(k) for k in window))
            if self.leased:  # the store holds this process's slices whole
                assert row.held_usd >= held, key
            else:
                assert row.held_usd == held, key
            limit = LIMITS[key] if key in self.model.shaped else None
            assert row.limit_usd == (None if limit is None else usd(limit)), key
        for key in KEYS:
            part_of_r1 = key == R0 and R1 in self.model.shaped
            if part_of_r1:
                assert key not in rows
            elif self.model.total(key):
                assert key in rows, f"{key} has spend but no status row"

    @invariant()
    def a_leased_store_holds_at_least_what_its_calls_may_spend(self) -> None:
        if isinstance(self.store, LeasedLedger):
            inner, own = self.store.inner.spent(KEYS, now=self.now), self.store.spent(KEYS, now=self.now)
            assert all(i >= o for i, o in zip(inner, own, strict=True))
            if inner != own:
                event("leased: slices held in the store")

    # -- helpers -------------------------------------------------------------------------------
    def _reserve(self, rid: str, amounts: dict[str, int], ttl: int) -> None:
        holds = [budget_hold(k, a) for k, a in amounts.items()]
        outcome = self.store.reserve(rid, holds, ttl_s=ttl, now=self.now)
        expected = self.model.decide(rid, amounts, self.model.total)
        event(f"reserve: {'granted' if outcome.granted else 'refused'}")
        if isinstance(self.store, LeasedLedger) and outcome != expected:
            if outcome.granted:  # from a slice: judged by the no-overspend invariant
                event("leased: granted from a slice past the model's room")
                self.model.reserve(rid, amounts, outcome, ttl)
                return
            event("leased: refused beside its slices")
            # refused beside this process's slices: what the store holds must not fit it
            inner = dict(zip(KEYS, (round(x * 1e6) for x in self.store.inner.spent(KEYS, now=self.now)), strict=True))
            assert outcome == self.model.decide(rid, amounts, inner.__getitem__)
        else:
            assert outcome == expected
        self.model.reserve(rid, amounts, outcome, ttl)


# -- one machine per store ----------------------------------------------------------------------
STORES = ("memory", "sqlite", "redis", "postgres", "leased-sqlite")


def opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], LedgerStore]:
    """Fresh, empty stores of one kind: a new file, Redis prefix or PostgreSQL table prefix each."""
    grace = f"record_grace={RECORD_GRACE_S}"

    def url() -> str:
        unique = uuid.uuid4().hex[:8]
        if kind == "memory":
            return f"memory://?{grace}"
        if kind == "sqlite":
            return f"sqlite:///{tmp_path}/{unique}.db?{grace}"
        if kind == "leased-sqlite":  # slices of half a limit, admitting for the whole example
            return f"sqlite:///{tmp_path}/{unique}.db?{grace}&lease_calls=4&lease_share=0.5&lease_s=600"
        if kind == "redis":
            return f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=2&{grace}"
        return f"{request.getfixturevalue('postgres_db')}?table_prefix=t{unique}_&timeout=5&{grace}"

    return lambda: open_ledger(url())


@pytest.mark.parametrize("kind", STORES)
def test_every_store_keeps_the_ledger_contract(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    machine = type(f"LedgerMachine_{kind}", (LedgerMachine,), {
        "open": staticmethod(opener(kind, request, tmp_path)),
        "leased": kind.startswith("leased"),
    })
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- what the machine found -----------------------------------------------------------------------
def leased(tmp_path: Path) -> LedgerStore:
    return open_ledger(f"sqlite:///{tmp_path}/leased.db?lease_calls=4&lease_share=0.5&lease_s=600")


def test_a_leased_reserve_under_a_charged_id_repeats_the_charge_and_holds_nothing(tmp_path: Path) -> None:
    """The machine's minimal case: a charge's id, reserved again, was admitted from a new slice and
    held a second time (a store's reserve returns the charge's outcome and holds nothing)."""
    now = datetime.now(UTC)
    with leased(tmp_path) as ledger:
        ledger.charge("c1", [budget_hold(A, 1_000_000)], usd(1), ttl_s=60, now=now)
        assert ledger.reserve("c1", [budget_hold(A, 2)], ttl_s=30, now=now) == Reservation("c1", True)
        assert ledger.spent([A], now=now) == [usd(1)]


def test_a_leased_charge_under_a_reserved_id_charges_nothing(tmp_path: Path) -> None:
    """An id this ledger reserved (admitted from a slice, held or released) has a record: a charge
    under it charges nothing, as a store's does; the reservation's own settle charges the call."""
    now = datetime.now(UTC)
    with leased(tmp_path) as ledger:
        for rid in ("held", "released"):
            assert ledger.reserve(rid, [budget_hold(A, 1_000_000)], ttl_s=60, now=now).granted
        ledger.release("released", now=now)
        for rid in ("held", "released"):
            assert ledger.charge(rid, [budget_hold(A, 1_000_000)], 3.0, ttl_s=60, now=now) == []
        assert ledger.spent([A], now=now) == [1.0]
        ledger.settle("held", 0.5, now=now)
        assert ledger.spent([A], now=now) == [0.5]
