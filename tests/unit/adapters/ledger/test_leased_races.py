"""Spend reads of the leased ledger racing a slice's return or a call's charge (``leased.py``):
a read cached while the store still held what this process was returning must not be reused."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from costwarden.adapters.ledger.leased import LeasedLedger
from costwarden.engine.ledger import Alert, Hold

from .test_leased import KEY, NOW, Counting, hold


class Paused(Counting):
    """The store, with one operation held at its start (another thread's round trip in flight)."""

    def __init__(self, inner: Any, op: str) -> None:
        super().__init__(inner)
        self.op, self.started, self.go = op, threading.Event(), threading.Event()

    def _pause(self, op: str, rid: str) -> None:
        if op == self.op and rid.startswith("cw-lease-") == (op == "release") and not self.started.is_set():
            self.started.set()
            assert self.go.wait(10)

    def release(self, rid: str, *, now: datetime) -> None:
        self._pause("release", rid)
        super().release(rid, now=now)

    def charge(self, rid: str, holds: Sequence[Hold], cost: float, **kw: Any) -> list[Alert]:
        out: list[Alert] = super().charge(rid, holds, cost, **kw)  # in the store; this process not told yet
        self._pause("charge", rid)
        return out


def _in_thread(work: Any) -> threading.Thread:
    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_read_while_a_slice_is_returned_is_not_reused_once_it_is_back(open_store: Any) -> None:
    store = Paused(open_store(), "release")
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=30, spent_s=30)  # type: ignore[arg-type]
    assert leased.reserve("c1", [hold(1.0)], ttl_s=60, now=NOW).granted  # a $5 slice
    leased.settle("c1", 0.5, now=NOW)
    returning = _in_thread(lambda: leased.return_slices(everything=True))
    assert store.started.wait(10)
    leased.spent([KEY], now=NOW)  # the store still holds the slice
    store.go.set()
    returning.join(10)
    assert store.inner.spent([KEY], now=NOW) == [pytest.approx(0.5)]
    assert leased.spent([KEY], now=NOW) == [pytest.approx(0.5)]  # not the slice's $5 again


def test_a_read_while_a_charge_is_in_flight_counts_it_once(open_store: Any) -> None:
    store = Paused(open_store(), "charge")
    leased = LeasedLedger(store, calls=8, share=0.5, admit_s=30, spent_s=30)  # type: ignore[arg-type]
    assert leased.reserve("c1", [hold(1.0)], ttl_s=60, now=NOW).granted
    assert leased.reserve("c2", [hold(1.0)], ttl_s=60, now=NOW).granted
    settling = _in_thread(lambda: leased.settle("c1", 0.5, now=NOW))
    assert store.started.wait(10)
    leased.spent([KEY], now=NOW)  # the store has the charge; this process does not know yet
    store.go.set()
    settling.join(10)
    assert leased.spent([KEY], now=NOW) == [pytest.approx(1.5)]  # c2's $1 held and c1's $0.50, once
    leased.release("c2", now=NOW)
    leased.return_slices(everything=True)
