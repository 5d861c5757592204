"""SQLite specifics beyond the contract: the writes an operation makes, and WAL checkpoints that run
off the callers' path yet keep the WAL small."""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters.ledger import sqlite as sqlite_store
from costwarden.adapters.ledger import sqlite_checkpoints
from costwarden.adapters.ledger.sqlite import SqliteLedger
from costwarden.engine.ledger import Hold, Reservation
from costwarden.errors import LedgerError

from .test_contract import ALICE, BOB, DAY_END, NOW, hold


def checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "costwarden-sqlite-checkpoint"]


def test_a_reserve_rewrites_a_bucket_only_when_it_changes(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "l.db") as ledger:
        db = ledger._open()
        ledger.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        before = db.total_changes
        ledger.reserve("b", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        assert db.total_changes - before == 2  # the record and the hold; the bucket is as it was
        before = db.total_changes
        ledger.reserve("c", [hold(ALICE, 1.0, 20.0)], ttl_s=60, now=NOW)
        assert db.total_changes - before == 3  # a new limit is recorded for status
        assert [(r.key, r.limit_usd) for r in ledger.status(now=NOW)] == [(ALICE, 20.0)]


def test_a_bucket_without_a_window_end_is_kept_until_a_hold_with_one_arrives(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "l.db") as ledger:
        db = ledger._open()
        ledger.reserve("a", [Hold(ALICE, 1.0, 10.0)], ttl_s=60, now=NOW)
        assert db.execute("SELECT keep_until_ms FROM ledger_buckets").fetchall() == [(None,)]
        ledger.reserve("b", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        (keep,) = db.execute("SELECT keep_until_ms FROM ledger_buckets").fetchone()
        assert keep is not None and keep > DAY_END.timestamp() * 1000
        ledger.reserve("c", [Hold(ALICE, 1.0, 10.0)], ttl_s=60, now=NOW)  # as SQL's max(x, NULL): kept again
        assert db.execute("SELECT keep_until_ms FROM ledger_buckets").fetchall() == [(None,)]


def statements(ledger: SqliteLedger) -> list[str]:
    """Every SQL statement the ledger's connection runs from now on (a statement that fires a
    trigger is reported again for each of the trigger's steps)."""
    seen: list[str] = []
    ledger._open().set_trace_callback(seen.append)
    return seen


def test_settling_a_reservation_granted_here_is_one_statement(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "l.db") as ledger:
        ledger.reserve("a", [hold(ALICE, 1.0), hold(BOB, 2.0)], ttl_s=60, now=NOW)
        seen = statements(ledger)
        assert ledger.settle("a", 0.25, now=NOW) == []
        assert len(set(seen)) == 1 and seen[0].startswith("UPDATE")  # no BEGIN/COMMIT: its own transaction
        db = ledger._open()
        assert db.execute("SELECT count(*) FROM ledger_holds").fetchone() == (0,)  # the trigger dropped them
        assert ledger.spent([ALICE, BOB], now=NOW) == [0.25, 0.25]  # and charged every hold's bucket
        assert ledger.settle("a", 9.0, now=NOW) == []  # idempotent: the repeat takes the long path
        assert ledger.spent([ALICE, BOB], now=NOW) == [0.25, 0.25]
        assert ledger.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW) == Reservation("a", True)


def test_a_reservation_made_elsewhere_or_with_alerts_settles_in_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with SqliteLedger(path) as mine, SqliteLedger(path) as other:
        mine.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        mine.reserve("b", [hold(ALICE, 1.0, alert_at=(0.1,))], ttl_s=60, now=NOW)
        seen = statements(other)
        assert other.settle("a", 0.5, now=NOW) == []
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        seen = statements(mine)
        assert [a.threshold for a in mine.settle("b", 0.5, now=NOW)] == [0.1]
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        assert mine.spent([ALICE], now=NOW) == [1.0]
        with pytest.raises(LedgerError, match="unknown reservation"):
            mine.settle("never", 1.0, now=NOW)


def test_release_is_one_statement_and_idempotent(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "l.db") as ledger:
        ledger.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        seen = statements(ledger)
        ledger.release("a", now=NOW)
        ledger.release("a", now=NOW)
        ledger.release("never", now=NOW)
        assert {s.split()[0] for s in seen} == {"UPDATE"}
        assert ledger.spent([ALICE], now=NOW) == [0.0]
        assert ledger.settle("a", 1.0, now=NOW) == []  # released first: the settle is a no-op
        assert ledger.spent([ALICE], now=NOW) == [0.0]


def test_the_ids_remembered_for_one_statement_settles_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_QUIET_MAX", 2)
    with SqliteLedger(tmp_path / "l.db") as ledger:
        for rid in ("a", "b", "c"):
            ledger.reserve(rid, [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        assert len(ledger._quiet) <= 2
        for rid in ("a", "b", "c"):  # forgotten or not, each settles once
            ledger.settle(rid, 0.5, now=NOW)
        assert ledger.spent([ALICE], now=NOW) == [1.5]


def test_commits_do_not_checkpoint_and_the_wal_stays_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_checkpoints, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(sqlite_checkpoints, "CATCH_UP_FRAMES", 120)
    path = tmp_path / "l.db"
    with SqliteLedger(path) as ledger:
        assert ledger._open().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for i in range(1500):  # back to back: never idle, so the short pass is forced by the WAL's size
            ledger.reserve(f"r{i}", [hold(ALICE, 0.001)], ttl_s=60, now=NOW)
            ledger.settle(f"r{i}", 0.001, now=NOW)
        # 3,000 commits of ~3 pages make a ~37 MB WAL when it never restarts
        assert os.path.getsize(f"{path}-wal") < 12_000_000
        assert ledger.spent([ALICE], now=NOW) == [pytest.approx(1.5)]


def test_the_wal_stays_bounded_when_the_checkpoint_thread_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GIL or a slow disk can keep the thread from running for a long while: writers then run
    the short pass themselves once the commits since the last pass would fill CATCH_UP_FRAMES."""
    monkeypatch.setattr(sqlite_checkpoints, "CATCH_UP_FRAMES", 120)
    monkeypatch.setattr(sqlite_checkpoints.Checkpointer, "_run", lambda self: None)
    path = tmp_path / "l.db"
    with SqliteLedger(path) as ledger:
        for i in range(1500):
            ledger.reserve(f"r{i}", [hold(ALICE, 0.001)], ttl_s=60, now=NOW)
            ledger.settle(f"r{i}", 0.001, now=NOW)
        assert os.path.getsize(f"{path}-wal") < 2_000_000  # ~37 MB if it never restarted
        assert ledger.spent([ALICE], now=NOW) == [pytest.approx(1.5)]


def test_the_checkpoint_thread_ends_with_its_ledger(tmp_path: Path) -> None:
    before = set(checkpointers())
    closed = SqliteLedger(tmp_path / "closed.db")
    dropped = SqliteLedger(tmp_path / "dropped.db")
    for ledger in (closed, dropped):
        ledger.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
    started = set(checkpointers()) - before
    assert len(started) == 2
    closed.close()
    del dropped, ledger
    gc.collect()
    for thread in started:
        thread.join(5)
        assert not thread.is_alive()


def test_an_in_memory_ledger_has_no_checkpoint_thread() -> None:
    before = set(checkpointers())
    with SqliteLedger(":memory:") as ledger:
        ledger.reserve("a", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        assert set(checkpointers()) <= before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_checkpoints_on_its_own_connection(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with SqliteLedger(path) as ledger:
        ledger.reserve("parent", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            ok = False
            try:
                ledger.reserve("child", [hold(ALICE, 1.0)], ttl_s=60, now=NOW)
                alive = [t for t in checkpointers() if t.is_alive()]
                ok = len(alive) == 1 and ledger.spent([ALICE], now=NOW) == [2.0]
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ledger.spent([ALICE], now=NOW) == [2.0]


def _open_at_once(path: str, barrier: Any, errors: Any) -> None:
    from costwarden.adapters.ledger import open_ledger

    barrier.wait()
    try:
        with open_ledger(f"sqlite:///{path}") as ledger:  # and write at once, while others still open
            for i in range(20):
                ledger.reserve(f"{os.getpid()}-{i}", [hold(ALICE, 0.01)], ttl_s=60, now=NOW)
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_file_at_once_all_get_the_ledger(tmp_path: Path) -> None:
    """Switching a new file to WAL can answer 'database is locked' at once, without the busy
    timeout; the ledger retries it (the concurrency proof's 8 workers hit this now and then)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for attempt in range(10):
        barrier = ctx.Barrier(8)
        workers = [ctx.Process(target=_open_at_once, args=(str(tmp_path / f"new-{attempt}.db"), barrier, errors))
                   for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert [w.exitcode for w in workers] == [0] * 8
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []


def test_status_by_url_reads_a_file_that_holds_no_ledger_without_changing_it(tmp_path: Path) -> None:
    from costwarden.adapters.ledger.status import budget_status

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    db.close()
    before = other.read_bytes()
    assert budget_status(f"sqlite:///{other}", now=NOW) == []
    assert other.read_bytes() == before  # no ledger tables, no switch to WAL
    assert not (tmp_path / "app.db-wal").exists()


def test_status_by_url_equals_the_ledgers_own_status_lease_options_and_all(tmp_path: Path) -> None:
    from costwarden.adapters.ledger.status import budget_status

    path = tmp_path / "l.db"
    with SqliteLedger(path) as ledger:
        ledger.settle(ledger.reserve("a", [hold(ALICE, 2.0, 10.0)], ttl_s=60, now=NOW).reservation_id, 1.5, now=NOW)
        ledger.reserve("b", [hold(BOB, 0.5, 5.0)], ttl_s=60, now=NOW)
        expected = ledger.status(now=NOW)
        assert [(r.key, r.spent_usd, r.held_usd) for r in expected] == [(ALICE, 1.5, 0.0), (BOB, 0.0, 0.5)]
        for url in (f"sqlite:///{path}", f"sqlite:///{path}?timeout=1&lease_calls=50"):
            assert budget_status(url, now=NOW) == expected
        with pytest.raises(LedgerError, match="unknown option 'bogus'"):
            budget_status(f"sqlite:///{path}?bogus=1", now=NOW)
