"""Finishing guarded calls off the caller's path: one worker thread per guard, in call order.

With ``CallGuard(..., settle_in_background=True)`` the work that follows a response — reading its
usage, pricing it, settling the reservation, the post-call rules and the cost event — runs on a
:class:`Settler` thread instead of in the application's thread, so a call returns as soon as its
response is there. What it changes, and what it does not:

* **No overspend.** Until its settlement runs, a call's reservation keeps holding its worst case,
  so budgets only look fuller for that moment, never emptier.
* **Nothing lost on a clean exit.** ``CallGuard.flush()`` waits for the queue; ``CallGuard.close()``
  flushes; an ``atexit`` hook flushes every settler (up to ``EXIT_FLUSH_S``). A process killed with
  SIGKILL loses what was queued, as it loses a call in flight: the reservation is released at its
  TTL; so does one ended by a signal Python leaves to its default action (SIGTERM: no ``atexit``),
  unless the program handles it (gunicorn and uvicorn do; else call ``CallGuard.close()`` from the
  handler). The queue stays short — past ``max_pending`` queued calls, callers settle inline.
* **Latency and time are the call's.** A call's end time and latency are taken when its response
  (or failure) arrives, not when the settlement runs.
* A fork starts the child with an empty settler: the parent settles what it queued.
* **It keeps out of the way.** While a call is being judged and reserved in this process
  (:meth:`Settler.busy`), the settler waits (up to ``MAX_HOLD_OFF_S``) before its next step, so it
  does not take the ledger or the GIL from a call about to be sent; it works while calls wait on
  the network. With more than ``HOLD_OFF_BACKLOG`` steps queued it no longer waits, so a busy
  process cannot starve it.
* **Handing a step over costs the caller no system call.** Waking a sleeping thread is a futex
  system call, and on a virtual machine it can cost more than the rest of the hand-over (~10 µs
  measured on the caller's path). So while steps keep coming the settler polls the queue every
  ``POLL_S`` instead of blocking on it, and waits for a busy caller the same way; only after
  ``PARK_AFTER_S`` without work does it park on an event, which the next submission sets.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("costwarden.callguard")

EXIT_FLUSH_S = 30.0
DEFAULT_MAX_PENDING = 1_000
MAX_HOLD_OFF_S = 0.05
HOLD_OFF_BACKLOG = 16  # with more steps queued than this, the settler runs flat out
POLL_S = 0.001  # how often an active settler looks for new steps
BUSY_POLL_S = 0.0001  # how often it looks whether the calls being prepared are done
PARK_AFTER_S = 0.05  # without work for this long, it blocks until the next submission

_Step = tuple[Callable[..., Any], tuple[Any, ...]]


class Settler:
    """Runs submitted finishing steps on one daemon thread, in submission order."""

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING, name: str = "costwarden-settler") -> None:
        self.max_pending = max_pending
        self.name = name
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: collections.deque[_Step | None] = collections.deque()  # appends and pops are atomic
        self._parked = False
        self._wake = threading.Event()
        self._pending = 0
        self._busy = 0
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Steps submitted and not yet finished."""
        return self._pending

    def run(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` on the settler thread; inline when called from it, when the queue is
        full or once the settler is closed. Exceptions from ``fn`` are logged, never raised."""
        if threading.get_ident() == self._ident:
            fn(*args)
            return
        with self._lock:
            inline = self._closed or self._pending >= self.max_pending
            if not inline:
                self._pending += 1
                if self._thread is None:
                    self._start()
        if inline:
            fn(*args)
            return
        self._submit((fn, args))

    def _submit(self, item: _Step | None) -> None:
        self._queue.append(item)
        if self._parked:  # read after the append: a settler parking meanwhile sees the item (_next)
            self._wake.set()

    def busy(self) -> _Busy:
        """``with settler.busy():`` marks a call being prepared (judged and reserved): the settler
        holds off meanwhile. (A plain context manager: a generator-based one costs a few µs a call;
        the call-guard's own path calls :meth:`enter_busy` / :meth:`leave_busy` directly.)"""
        return _Busy(self)

    def enter_busy(self) -> None:
        with self._lock:
            self._busy += 1

    def leave_busy(self) -> None:
        with self._lock:
            self._busy -= 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted step has run; False if ``timeout`` passed first. From the
        settler thread itself it cannot wait for the step it is running, and returns at once."""
        if threading.get_ident() == self._ident:
            return self._pending <= 1
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread; later submissions run inline. False if the flush timed out."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._submit(None)
            if thread is not threading.current_thread():
                thread.join(timeout)
        return flushed

    def _start(self) -> None:
        thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread = thread
        thread.start()

    def _work(self) -> None:
        self._ident = threading.get_ident()
        while True:
            item = self._next()
            if item is None:
                break
            fn, args = item
            if self._busy and self._pending <= HOLD_OFF_BACKLOG:
                self._hold_off()
            try:
                fn(*args)
            except Exception:
                log.exception("call-guard: a background settlement step failed")
            finally:
                # not kept while waiting for the next step: the call (and its prompt) can go now
                item = fn = args = None  # type: ignore[assignment]
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
        self._ident = None

    def _next(self) -> _Step | None:
        """The next step (None: stop): polled while work keeps coming, else parked on ``_wake``."""
        idle_since = time.monotonic()
        while True:
            if self._queue:
                return self._queue.popleft()
            if time.monotonic() - idle_since < PARK_AFTER_S:
                time.sleep(POLL_S)
                continue
            self._parked = True  # set before the queue is read again: a submitter then wakes us
            if not self._queue:
                self._wake.wait()
            self._wake.clear()
            self._parked = False
            idle_since = time.monotonic()

    def _hold_off(self) -> None:
        """Wait while calls are being prepared in this process, up to ``MAX_HOLD_OFF_S``."""
        deadline = time.monotonic() + MAX_HOLD_OFF_S
        while self._busy and time.monotonic() < deadline:
            time.sleep(BUSY_POLL_S)


class _Busy:
    __slots__ = ("settler",)

    def __init__(self, settler: Settler) -> None:
        self.settler = settler

    def __enter__(self) -> None:
        self.settler.enter_busy()

    def __exit__(self, *exc: object) -> None:
        self.settler.leave_busy()


_LIVE: weakref.WeakSet[Settler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The child has none of the parent's threads: give every settler a fresh, empty state (what
    was queued before the fork belongs to the parent, which settles it)."""
    for settler in list(_LIVE):
        settler._reset()


def flush_all(timeout: float | None = None) -> bool:
    """Flush every live settler in this process (tests and shutdown hooks); False if one timed out."""
    return all([settler.flush(timeout) for settler in list(_LIVE)])


def _flush_all_at_exit() -> None:
    for settler in list(_LIVE):
        if settler.pending and not settler.flush(EXIT_FLUSH_S):
            log.error("call-guard: %d settlements still queued at exit after %.0f s; their reservations are "
                      "released at their TTL", settler.pending, EXIT_FLUSH_S)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)

__all__ = ["DEFAULT_MAX_PENDING", "EXIT_FLUSH_S", "Settler", "flush_all"]
