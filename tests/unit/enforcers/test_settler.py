"""The settler thread that finishes guarded calls off the caller's path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from costwarden.enforcers import settler as settler_module
from costwarden.enforcers.settler import Settler, flush_all


def test_steps_run_on_one_other_thread_in_submission_order() -> None:
    settler = Settler()
    seen: list[tuple[int, int]] = []
    for n in range(200):
        settler.run(lambda n=n: seen.append((n, threading.get_ident())))
    assert settler.flush(5)
    assert [n for n, _ in seen] == list(range(200))
    assert {ident for _, ident in seen} != {threading.get_ident()}
    assert len({ident for _, ident in seen}) == 1
    settler.close(5)


def test_run_returns_before_the_step_has_run_and_flush_waits_for_it() -> None:
    settler = Settler()
    gate, done = threading.Event(), threading.Event()
    settler.run(lambda: (gate.wait(5), done.set()))
    assert not done.is_set() and settler.pending == 1
    assert settler.flush(0.05) is False  # still blocked
    gate.set()
    assert settler.flush(5) and done.is_set() and settler.pending == 0
    settler.close(5)


def test_a_step_submitted_from_the_settler_thread_runs_inline() -> None:
    settler = Settler()
    order: list[str] = []

    def outer() -> None:
        settler.run(order.append, "inner")  # would deadlock a flush if it were queued behind this step
        order.append("outer")

    settler.run(outer)
    assert settler.flush(5)
    assert order == ["inner", "outer"]
    settler.close(5)


def test_an_active_settler_is_handed_steps_without_a_wake_up() -> None:
    settler = Settler()
    settler.run(lambda: None)
    assert settler.flush(5)
    settler._wake.set = lambda: pytest.fail("woke an active settler")  # type: ignore[method-assign]
    for _ in range(50):  # within PARK_AFTER_S of the last step: the settler is polling
        settler.run(lambda: None)
    assert settler.flush(5)
    del settler._wake.set
    settler.close(5)


def test_an_idle_settler_parks_and_the_next_step_wakes_it() -> None:
    settler = Settler()
    settler.run(lambda: None)
    assert settler.flush(5)
    deadline = time.monotonic() + 5
    while not settler._parked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert settler._parked, f"still polling {settler_module.PARK_AFTER_S * 100:.0f}x PARK_AFTER_S after its last step"
    ran = threading.Event()
    started = time.monotonic()
    settler.run(ran.set)
    assert ran.wait(1) and time.monotonic() - started < 0.5
    settler.close(5)


def test_a_full_queue_runs_the_step_in_the_caller() -> None:
    settler = Settler(max_pending=1)
    gate = threading.Event()
    settler.run(gate.wait, 5)
    ran_in: list[int] = []
    settler.run(lambda: ran_in.append(threading.get_ident()))
    assert ran_in == [threading.get_ident()]  # backpressure: the caller paid for it
    gate.set()
    settler.close(5)


def test_a_failing_step_is_logged_and_the_next_ones_still_run(caplog: pytest.LogCaptureFixture) -> None:
    settler = Settler()
    after: list[int] = []
    with caplog.at_level(logging.ERROR, logger="costwarden.callguard"):
        settler.run(lambda: 1 / 0)
        settler.run(after.append, 1)
        assert settler.flush(5)
    assert after == [1]
    assert "background settlement step failed" in caplog.text and "ZeroDivisionError" in caplog.text
    settler.close(5)


def test_after_close_steps_run_inline_and_nothing_is_left_queued() -> None:
    settler = Settler()
    ran: list[str] = []
    settler.run(lambda: (time.sleep(0.05), ran.append("queued")))
    assert settler.close(5)
    assert ran == ["queued"]
    settler.run(ran.append, "inline")
    assert ran == ["queued", "inline"] and settler.pending == 0


def test_while_a_call_is_prepared_the_settler_holds_off() -> None:
    settler = Settler()
    ran = threading.Event()
    with settler.busy():
        settler.run(ran.set)
        assert not ran.wait(0.02)  # held off: a call is being judged and reserved
    assert ran.wait(1)  # the call went out: the step runs at once, not after MAX_HOLD_OFF_S
    settler.close(5)


def test_a_backlog_is_worked_off_even_while_calls_keep_being_prepared() -> None:
    settler = Settler()
    entered, leave = threading.Event(), threading.Event()

    def preparing_forever() -> None:
        with settler.busy():
            entered.set()
            leave.wait(10)

    threading.Thread(target=preparing_forever, daemon=True).start()
    assert entered.wait(5)
    started = time.perf_counter()
    for _ in range(200):
        settler.run(time.sleep, 0)
    assert settler.flush(5)
    # only the last HOLD_OFF_BACKLOG steps may wait MAX_HOLD_OFF_S each: 16 × 50 ms, not 200 × 50 ms
    assert time.perf_counter() - started < 2.5
    leave.set()
    settler.close(5)


def test_flush_all_waits_for_every_settler() -> None:
    a, b = Settler(), Settler()
    ran: list[str] = []
    a.run(lambda: (time.sleep(0.05), ran.append("a")))
    b.run(lambda: (time.sleep(0.05), ran.append("b")))
    assert flush_all(5)
    assert sorted(ran) == ["a", "b"]
    a.close(5)
    b.close(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_starts_with_an_empty_settler_of_its_own() -> None:
    settler = Settler()
    gate = threading.Event()
    settler.run(gate.wait, 5)  # the parent's step, still queued at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's queued step is not its to run, and its own steps run
        try:
            ok = settler.pending == 0
            settler.run(os.write, write, b"ran" if ok else b"bad")
            settler.flush(5)
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ran" and status == 0
    os.close(read)
    assert settler.pending == 1  # the parent still owns its step
    gate.set()
    assert settler.close(5)


def test_queued_steps_are_run_at_interpreter_exit(tmp_path: Path) -> None:
    out = tmp_path / "settled.txt"
    script = (
        "import time\n"
        "from costwarden.enforcers.settler import Settler\n"
        "s = Settler()\n"
        f"s.run(lambda: (time.sleep(0.3), open({str(out)!r}, 'w').write('settled')))\n"
        "print('exiting', s.pending)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "exiting 1"  # still queued when the main module ended
    assert out.read_text() == "settled"
