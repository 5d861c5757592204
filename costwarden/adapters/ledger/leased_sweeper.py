"""The leased ledger's work outside any call (``leased.py``): the background thread that returns
idle slices as they stop admitting, and the process-wide hooks — a forked child forgets its
parent's slices, and at exit every slice whose calls have finished is returned.

It is separate from ``leased.py`` because it is about threads and the process's lifetime, not
about budgets: it holds the ledgers only weakly (so a ledger nobody uses is collected and its
thread exits), and it registers the fork and exit hooks once, when it is first imported.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costwarden.adapters.ledger.leased import LeasedLedger

log = logging.getLogger("costwarden.ledger")


def sweep_later(ledger: LeasedLedger) -> None:
    """Start the ledger's sweeper thread unless one is running (the ledger's lock is held)."""
    if ledger._sweeper is None or not ledger._sweeper.is_alive():
        ledger._sweeper = threading.Thread(target=sweep, args=(weakref.ref(ledger),), name="costwarden-slices",
                                           daemon=True)
        ledger._sweeper.start()


def sweep(ref: weakref.ref[LeasedLedger]) -> None:
    """Return idle slices as they stop admitting; exits when none are left."""
    while True:
        ledger = ref()
        if ledger is None:
            return
        closed, pause = ledger._closed, min(0.5, ledger.admit_s / 2)
        ledger.return_slices()
        with ledger._lock:
            idle = not ledger._open and not ledger._retired
            if idle:
                ledger._sweeper = None
        del ledger
        if idle or closed.wait(pause):
            return


_LEDGERS: weakref.WeakSet[LeasedLedger] = weakref.WeakSet()


def track(ledger: LeasedLedger) -> None:
    """Have the fork and exit hooks look after ``ledger`` (held weakly)."""
    _LEDGERS.add(ledger)


def forget_all() -> None:
    """In a forked child: every ledger forgets its parent's slices."""
    for ledger in list(_LEDGERS):
        ledger._forget()


def return_all() -> None:
    """At exit: retire every slice and return those whose calls have finished (the rest are returned
    as their calls settle, or lapse at their TTL)."""
    for ledger in list(_LEDGERS):
        try:
            ledger.return_slices(everything=True)
        except Exception:  # the store may be closed already
            log.debug("slices of %r not returned at exit", ledger, exc_info=True)


os.register_at_fork(after_in_child=forget_all)
atexit.register(return_all)


__all__ = ["forget_all", "return_all", "sweep", "sweep_later", "track"]
