"""Leased budget slices (``adapters/ledger/leased.py``) over every store: most reserves answered in
memory, the real cost charged to the store, slices returned, never an overspend."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from costwarden.adapters.ledger import open_ledger
from costwarden.adapters.ledger.leased import LeasedLedger
from costwarden.adapters.ledger.store import LedgerStore
from costwarden.engine.ledger import Hold, Reservation
from costwarden.errors import LedgerError, UnknownReservation

NOW = datetime.now(UTC)  # Redis and PostgreSQL expire records by the real clock
KEY = "budget:p/r:user=alice:2026-11-30"
TEAM = "budget:p/t:team=web:2026-11-30"


def hold(amount: float, limit: float | None = 10.0, key: str = KEY, **kw: Any) -> Hold:
    return Hold(key, amount, limit, (key,), **kw)


class Counting:
    """The store, with its reserve / settle / release / charge calls counted (slices apart from calls)."""

    def __init__(self, inner: LedgerStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reserve(self, rid: str, holds: Sequence[Hold], **kw: Any) -> Reservation:
        self.calls.append(("reserve", rid))
        return self.inner.reserve(rid, holds, **kw)

    def settle(self, rid: str, cost: float, *, now: datetime) -> Any:
        self.calls.append(("settle", rid))
        return self.inner.settle(rid, cost, now=now)

    def release(self, rid: str, *, now: datetime) -> None:
        self.inner.release(rid, now=now)
        self.calls.append(("release", rid))  # once done: tests wait for a background return by it

    def charge(self, rid: str, holds: Sequence[Hold], cost: float, **kw: Any) -> Any:
        self.calls.append(("charge", rid))
        return self.inner.charge(rid, holds, cost, **kw)

    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        self.calls.append(("spent", ",".join(keys)))
        return self.inner.spent(keys, now=now)

    def slices(self, op: str = "reserve") -> list[str]:
        return [rid for kind, rid in self.calls if kind == op and rid.startswith("cw-lease-")]

    def of(self, rid: str) -> list[str]:
        return [kind for kind, r in self.calls if r == rid]


@pytest.fixture
def store(open_store: Any) -> Counting:
    return Counting(open_store())


@pytest.fixture
def leased(store: Counting) -> Iterator[LeasedLedger]:
    ledger = LeasedLedger(store, calls=8, share=0.5, admit_s=30)  # type: ignore[arg-type]
    yield ledger
    ledger.return_slices(everything=True)


def test_one_store_reserve_takes_a_slice_for_many_calls(leased: LeasedLedger, store: Counting) -> None:
    for i in range(8):
        assert leased.reserve(f"c{i}", [hold(0.01)], ttl_s=60, now=NOW).granted
    assert len(store.slices()) == 1
    assert [kind for kind, rid in store.calls if not rid.startswith("cw-lease-")] == []
    assert leased.reserve("c8", [hold(0.01)], ttl_s=60, now=NOW).granted  # the slice is full: a new one
    assert len(store.slices()) == 2
    # this process reports what its calls hold; the store (another process) sees both slices whole
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.09)]
    assert store.inner.spent([KEY], now=NOW) == [pytest.approx(0.16)]


def test_spend_reads_are_reused_for_spent_s_with_this_process_always_current(open_store: Any) -> None:
    store = Counting(open_store())
    other = LeasedLedger(open_store(), calls=8, share=0.5, admit_s=30)  # another process
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=30, spent_s=0.3)  # type: ignore[arg-type]
    reads = lambda: sum(kind == "spent" for kind, _ in store.calls)  # noqa: E731
    assert leased.spent([KEY], now=NOW) == [0.0] and reads() == 1
    leased.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW)  # takes a slice: the next read goes to the store
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.01)] and reads() == 2
    leased.reserve("c2", [hold(0.01)], ttl_s=60, now=NOW)
    leased.settle("c1", 0.004, now=NOW)
    other.reserve("o1", [hold(0.02)], ttl_s=60, now=NOW)  # the other process's slice: $0.16
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.014)] and reads() == 2  # own changes, no read
    time.sleep(0.35)
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.174)] and reads() == 3  # the others', once stale
    leased.reserve("direct", [hold(0.01, check=False)], ttl_s=60, now=NOW)  # a store reservation of its own
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.184)] and reads() == 4  # shows at once
    other.return_slices(everything=True)


def test_settle_charges_the_real_cost_to_the_store_once(leased: LeasedLedger, store: Counting) -> None:
    leased.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW)
    assert leased.settle("c1", 0.004, now=NOW) == []
    assert leased.settle("c1", 0.004, now=NOW) == []  # idempotent
    assert leased.release("c1", now=NOW) is None  # the settle came first
    assert store.of("c1") == ["charge"]  # one store operation, under the call's own id
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.004)]
    leased.return_slices(everything=True)
    assert store.slices("release") == store.slices()
    assert store.inner.spent([KEY], now=NOW) == [pytest.approx(0.004)]


def test_release_frees_the_room_without_a_round_trip(leased: LeasedLedger, store: Counting) -> None:
    for i in range(20):
        assert leased.reserve(f"c{i}", [hold(0.01)], ttl_s=60, now=NOW).granted
        leased.release(f"c{i}", now=NOW)
    assert len(store.slices()) == 1 and store.of("c3") == []
    leased.settle("c3", 0.5, now=NOW)  # released first: the settle is a no-op
    assert leased.spent([KEY], now=NOW) == [0.0]


def test_a_repeated_reserve_returns_the_first_outcome_and_holds_once(leased: LeasedLedger) -> None:
    first = leased.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW)
    assert leased.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW) == first
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.01)]


def test_settling_an_unknown_reservation_is_an_error(leased: LeasedLedger) -> None:
    with pytest.raises(LedgerError):
        leased.settle("never-made", 0.01, now=NOW)
    with pytest.raises(LedgerError):
        leased.reserve("bad", [hold(-1.0)], ttl_s=60, now=NOW)


def test_near_the_limit_a_call_is_judged_by_the_store_with_exact_figures(leased: LeasedLedger, store: Counting) -> None:
    # $10 limit, slices of at most $5: past $5 spent, a slice of $0.8 no longer fits beside ...
    leased.reserve("big", [hold(9.5)], ttl_s=60, now=NOW)  # too big to lease: reserved in the store
    assert store.of("big") == ["reserve"]
    leased.settle("big", 9.5, now=NOW)
    refused = leased.reserve("c1", [hold(0.6)], ttl_s=60, now=NOW)  # a $4.8 slice is refused, then the call
    assert not refused.granted
    assert refused.refused_key == KEY and refused.spent_usd == pytest.approx(9.5) and refused.limit_usd == 10.0
    assert leased.reserve("c2", [hold(0.5)], ttl_s=60, now=NOW).granted  # exactly the limit, in the store
    assert store.of("c2") == ["reserve"]
    assert leased.spent([KEY], now=NOW) == [pytest.approx(10.0)]


def test_all_or_nothing_across_budgets(leased: LeasedLedger, store: Counting) -> None:
    both = [hold(0.01), hold(0.01, limit=0.05, key=TEAM)]
    assert leased.reserve("c1", both, ttl_s=60, now=NOW).granted  # one store reserve: both slices
    assert len(store.slices()) == 1
    outcomes = [leased.reserve(f"c{i}", both, ttl_s=60, now=NOW) for i in range(2, 8)]
    granted = 1 + sum(r.granted for r in outcomes)
    # the team's $0.05 runs out first; a refused call holds nothing for alice either. (Slices
    # replaced while their calls run keep their unused room — under one call each — until those end.)
    assert 3 <= granted <= 5 and [r.granted for r in outcomes] == sorted((r.granted for r in outcomes), reverse=True)
    assert {r.refused_key for r in outcomes if not r.granted} == {TEAM}
    assert leased.spent([KEY, TEAM], now=NOW) == [pytest.approx(0.01 * granted), pytest.approx(0.01 * granted)]
    assert store.inner.spent([TEAM], now=NOW)[0] <= 0.05 + 1e-9


def test_what_it_does_not_lease_goes_to_the_store(leased: LeasedLedger, store: Counting) -> None:
    leased.reserve("unchecked", [hold(0.01, check=False)], ttl_s=60, now=NOW)
    leased.reserve("no-limit", [hold(0.01, limit=None)], ttl_s=60, now=NOW)
    leased.reserve("batch", [hold(0.01)], ttl_s=60, now=NOW, keep_s=3600)
    assert [store.of(r) for r in ("unchecked", "no-limit", "batch")] == [["reserve"]] * 3
    leased.settle("batch", 0.002, now=NOW)
    leased.release("no-limit", now=NOW)
    assert store.of("batch") == ["reserve", "settle"] and store.of("no-limit") == ["reserve", "release"]
    assert store.slices() == []


def test_a_call_outliving_the_slice_takes_a_new_one(leased: LeasedLedger, store: Counting) -> None:
    leased.reserve("short", [hold(0.01)], ttl_s=60, now=NOW)
    leased.reserve("long", [hold(0.01)], ttl_s=600, now=NOW)  # the first slice lapses before this call could end
    assert len(store.slices()) == 2
    later = NOW + timedelta(seconds=31)  # past admitting (admit_s=30): a new slice
    leased.reserve("later", [hold(0.01)], ttl_s=60, now=later)
    assert len(store.slices()) == 3


def test_spend_reads_stop_discounting_a_slice_the_store_let_lapse(open_store: Any) -> None:
    """A call never settled keeps its slice here; once the slice's hold lapsed in the store (at its
    TTL), this process must read the store's spend as it is, not minus the slice it no longer holds."""
    store = open_store()
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=30, spent_s=0)
    assert leased.reserve("abandoned", [hold(0.1)], ttl_s=60, now=NOW).granted  # a $0.80 slice
    store.charge("elsewhere", [hold(5.0)], 5.0, ttl_s=60, now=NOW)  # another process's call
    assert leased.spent([KEY], now=NOW) == [pytest.approx(5.1)]
    lapsed = NOW + timedelta(seconds=30 + 60 + 1)
    assert store.spent([KEY], now=lapsed) == [pytest.approx(5.0)]
    assert leased.spent([KEY], now=lapsed) == [pytest.approx(5.0)]  # was $4.30: the lapsed slice taken off
    leased.release("abandoned", now=lapsed)
    leased.return_slices(everything=True)


def test_idle_slices_are_returned_and_busy_ones_when_their_last_call_ends(store: Counting) -> None:
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=0.2)  # type: ignore[arg-type]
    leased.reserve("idle", [hold(0.01)], ttl_s=60, now=NOW)
    leased.settle("idle", 0.01, now=NOW)
    leased.reserve("busy", [hold(0.01, key=TEAM)], ttl_s=60, now=NOW)
    deadline = time.monotonic() + 5
    while len(store.slices("release")) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.slices("release") == store.slices()[:1]  # the background thread returned the idle one
    assert store.inner.spent([KEY, TEAM], now=NOW)[0] == pytest.approx(0.01)
    time.sleep(0.5)  # the busy slice stops admitting too, but is kept while its call runs
    assert len(store.slices("release")) == 1
    leased.settle("busy", 0.003, now=NOW)  # its slice stopped admitting: returned with its last call
    assert store.slices("release") == store.slices()
    assert store.inner.spent([KEY, TEAM], now=NOW) == [pytest.approx(0.01), pytest.approx(0.003)]


def test_a_call_never_settled_is_forgotten_when_its_slice_lapses_and_a_late_settle_is_still_charged(
    store: Counting,
) -> None:
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=0.1)  # type: ignore[arg-type]
    leased.reserve("lost", [hold(0.01)], ttl_s=0.3, now=NOW)  # the application never settles it
    (slice_id,) = store.slices()
    deadline = time.monotonic() + 5
    while not store.slices("release") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.slices("release") == [slice_id]  # returned once the slice lapsed, not kept forever
    assert not leased._held and not leased._retired and not leased._slices
    sweeper = leased._sweeper
    assert sweeper is None or not sweeper.is_alive() or sweeper.join(2) is None and not sweeper.is_alive()
    with pytest.raises(UnknownReservation):  # the caller charges it (CallGuard does): nothing is lost
        leased.settle("lost", 0.004, now=NOW)
    leased.charge("lost", [hold(0.01)], 0.004, ttl_s=60, now=NOW)
    assert store.inner.spent([KEY], now=NOW) == [pytest.approx(0.004)]


def test_each_replaced_slice_is_returned_once_when_its_last_call_ends_in_any_order(store: Counting) -> None:
    """Many slices wait for their calls at once (long calls, each slice replaced after ``calls``
    admissions); a slice held for two budgets goes back only when both parts' calls have ended.
    Only the slices a finishing call touches are looked at, so this also holds with thousands."""
    import random

    leased = LeasedLedger(store, calls=4, share=0.5, admit_s=30)  # type: ignore[arg-type]
    both = [hold(0.01), hold(0.01, key=TEAM)]
    ids = [f"c{i}" for i in range(40)]
    for rid in ids:
        assert leased.reserve(rid, both, ttl_s=60, now=NOW).granted
    taken = store.slices()
    assert len(taken) >= 10  # every 4 calls (or fewer, as rooms round down) a new slice for both budgets
    calls_of: dict[str, set[str]] = {}  # the slices each call was admitted from, as the store saw it
    for rid, local in leased._held.items():
        calls_of.setdefault(local.leases[0].rid, set()).add(rid)
    assert set(calls_of) == set(taken)
    random.Random(7).shuffle(ids)
    finished: set[str] = set()
    for rid in ids:
        leased.settle(rid, 0.001, now=NOW)
        finished.add(rid)
        returned = store.slices("release")
        assert len(returned) == len(set(returned))  # never twice
        # a replaced slice is back exactly when all its calls ended; the open one stays
        expected = {s for s, calls in calls_of.items() if calls <= finished and s != taken[-1]}
        assert set(returned) == expected
    leased.return_slices(everything=True)
    assert sorted(store.slices("release")) == sorted(taken)
    assert store.inner.spent([KEY, TEAM], now=NOW) == [pytest.approx(0.04), pytest.approx(0.04)]


def test_a_failed_charge_keeps_the_worst_case_held_and_can_be_retried(leased: LeasedLedger, store: Counting) -> None:
    leased.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW)
    real = store.inner

    class Down:
        def charge(self, *a: Any, **kw: Any) -> Any:
            raise LedgerError("store unreachable")

    store.inner = Down()  # type: ignore[assignment]
    with pytest.raises(LedgerError, match="unreachable"):
        leased.settle("c1", 0.004, now=NOW)
    assert leased._held["c1"].settling is False
    store.inner = real
    leased.settle("c1", 0.004, now=NOW)
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.004)]


def test_an_unreachable_store_refuses_rather_than_allows() -> None:
    ledger = open_ledger("redis://127.0.0.1:1/0?timeout=0.2&lease_calls=8&lease_share=0.5")
    try:
        with pytest.raises(LedgerError):
            ledger.reserve("c1", [hold(0.01)], ttl_s=60, now=NOW)
    finally:
        ledger.close()


def test_threads_and_instances_never_overspend(open_store: Any) -> None:
    """Two instances (as two processes) × 8 threads reserve and settle against one $1 limit."""
    ledgers = [LeasedLedger(open_store(), calls=8, share=0.2, admit_s=0.3) for _ in range(2)]
    charged: list[float] = []
    lock = threading.Lock()

    def work(ledger: LeasedLedger, worker: int) -> None:
        for i in range(40):
            rid = f"w{id(ledger)}-{worker}-{i}"
            if ledger.reserve(rid, [hold(0.02, limit=1.0)], ttl_s=60, now=NOW).granted:
                ledger.settle(rid, 0.015, now=NOW)
                with lock:
                    charged.append(0.015)

    threads = [threading.Thread(target=work, args=(ledger, w)) for ledger in ledgers for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ledger in ledgers:
        ledger.return_slices(everything=True)
    total = open_store().spent([KEY], now=NOW)[0]
    assert total == pytest.approx(sum(charged), abs=1e-9)
    assert total <= 1.0
    assert total >= 1.0 - 0.02 - 2 * 0.2  # early refusals are bounded by the slices others held


def test_a_forked_child_starts_without_the_parents_slices(tmp_path: Any) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path}/fork.db?lease_calls=8&lease_share=0.5")
    assert isinstance(ledger, LeasedLedger)
    ledger.reserve("parent", [hold(0.01)], ttl_s=60, now=NOW)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its reserve must take its own slice, not use the parent's room
        try:
            child = ledger.reserve("child", [hold(0.01)], ttl_s=60, now=NOW)
            os.write(write, f"{child.granted},{len(ledger._open)},{set(ledger._held)}".encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100).decode() == "True,1,{'child'}"
    assert set(ledger._held) == {"parent"}
    assert ledger.inner.spent([KEY], now=NOW) == [pytest.approx(0.16)]  # two slices: the parent's, the child's
    ledger.close()


@pytest.mark.parametrize(("query", "message"), [
    ("lease_share=0.5", "need lease_calls"),
    ("lease_calls=1", "calls >= 2"),
    ("lease_calls=8&lease_share=2", "share <= 1"),
    ("lease_calls=8&lease_s=0", "admit_s > 0"),
    ("lease_calls=8&lease_spent_s=-1", "spent_s >= 0"),
    ("lease_calls=many", "must be a number"),
    ("lease_calls=8&lease_size=3", "unknown option 'lease_size'"),
])
def test_bad_lease_options_are_clear_errors(query: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        open_ledger(f"memory://?{query}")


def test_lease_options_leave_the_stores_own_options(tmp_path: Any) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.db?timeout=3&lease_calls=8&lease_s=1.5")
    assert isinstance(ledger, LeasedLedger) and ledger.admit_s == 1.5 and ledger.calls == 8
    assert ledger.inner.__class__.__name__ == "SqliteLedger"
    ledger.close()
    with pytest.raises(LedgerError, match="unknown option 'bogus'"):
        open_ledger(f"sqlite:///{tmp_path}/l.db?bogus=1&lease_calls=8")


@pytest.mark.parametrize("store_url", ["sqlite", "redis", "postgres"], indirect=True)
def test_a_killed_process_leaves_only_its_slice_which_lapses_at_its_ttl(store_url: str, open_store: Any) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a process of its own, with its own connection
        try:
            lease = "lease_calls=8&lease_share=0.5&lease_s=0.5"
            ledger = open_ledger(store_url + ("&" if "?" in store_url else "?") + lease)
            ledger.reserve("doomed", [hold(0.01)], ttl_s=0.5, now=datetime.now(UTC))
            os.write(write, b"held")
            time.sleep(60)
        finally:
            os._exit(0)
    assert os.read(read, 10) == b"held"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    killed = time.monotonic()
    store = open_store()
    assert store.spent([KEY], now=datetime.now(UTC))[0] == pytest.approx(0.08)  # the child's slice
    time.sleep(max(0.0, killed + 1.2 - time.monotonic()))  # admit_s + ttl_s after it was taken
    assert store.spent([KEY], now=datetime.now(UTC)) == [0.0]
