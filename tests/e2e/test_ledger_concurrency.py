"""The ledger under real concurrency, crashes and outages — SQLite files, the real Redis and PostgreSQL.

* 8 processes × 20 threads reserve → settle random amounts against one team budget and per-user
  budgets: the settled total never passes a limit, every attempt is granted-and-settled or
  refused, and the ledger's totals equal the sum of what the workers settled.
* A process holding reservations is killed with SIGKILL (possibly mid-transaction): once the
  TTL passes its holds no longer count and the store is still usable.
* A private Redis hangs (SIGSTOP), then is shut down, under a live ledger: every operation
  raises ``LedgerError`` (the caller fails closed) within the timeout, and the ledger recovers
  when Redis returns.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ledger_backends import REDIS_URL

from costwarden.adapters.ledger import open_ledger
from costwarden.engine.ledger import Hold
from costwarden.errors import LedgerError

PROCESSES, THREADS, ATTEMPTS = 8, 20, 3
USERS = 10
TEAM_LIMIT, USER_LIMIT = 30.0, 4.0
TEAM = "budget:e2e/team-daily:team=growth:today"
KILLED = "budget:e2e/killed:user=doomed:today"
SPAWN = mp.get_context("spawn")


def user_key(n: int) -> str:
    return f"budget:e2e/user-daily:user=u{n}:today"


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared store for many processes; generous timeouts, since a 2-core CI box is slow under 160 threads."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db?timeout=30"
    if request.param == "redis":
        return f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=10"
    return f"{request.getfixturevalue('postgres_db')}?table_prefix=c{unique}_&timeout=30&pool_size=2"


# -- worker processes (module level so that spawned children can import them) -------------------
def spend_worker(url: str, proc: int, ready: Any, go: Any, results: Any) -> None:
    """20 threads, each making ATTEMPTS reserve → settle attempts; reports every outcome."""
    ledger = open_ledger(url)
    outcomes: list[tuple[str, int, str, float]] = []
    lock = threading.Lock()
    ends = datetime.now(UTC) + timedelta(hours=1)

    def attempt(thread: int) -> None:
        rng = random.Random(proc * 1000 + thread)
        user = (proc * THREADS + thread) % USERS
        for a in range(ATTEMPTS):
            rid = f"p{proc}-t{thread}-a{a}"
            amount = round(rng.uniform(0.05, 0.6), 6)
            holds = [
                Hold(TEAM, amount, TEAM_LIMIT, expires_at=ends),
                Hold(user_key(user), amount, USER_LIMIT, expires_at=ends),
            ]
            try:
                granted = ledger.reserve(rid, holds, ttl_s=120, now=datetime.now(UTC)).granted
            except LedgerError:
                outcome = (rid, user, "reserve-error", 0.0)
            else:
                outcome = (rid, user, "refused", 0.0)
                if granted:
                    cost = round(amount * rng.uniform(0.2, 1.0), 6)
                    try:
                        ledger.settle(rid, cost, now=datetime.now(UTC))
                        outcome = (rid, user, "settled", cost)
                    except LedgerError:
                        outcome = (rid, user, "settle-error", cost)
            with lock:
                outcomes.append(outcome)

    ready.put(proc)
    go.wait()
    threads = [threading.Thread(target=attempt, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    results.put(outcomes)


def doomed_worker(url: str, ready: Any) -> None:
    """Hold $5 with a short TTL, report it, then keep reserving and releasing until killed."""
    ledger = open_ledger(url)
    for i in range(5):
        assert ledger.reserve(f"doomed-{i}", [Hold(KILLED, 1.0, 10.0)], ttl_s=1.5, now=datetime.now(UTC)).granted
    ready.put(time.time())
    for i in range(1_000_000):  # so that the kill may land inside a transaction or script
        rid = f"churn-{i}"
        ledger.reserve(rid, [Hold(KILLED, 0.01, 10.0)], ttl_s=1.5, now=datetime.now(UTC))
        ledger.release(rid, now=datetime.now(UTC))


# -- the proofs ----------------------------------------------------------------------------------
def test_many_processes_never_overspend(store_url: str) -> None:
    ready, results, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [SPAWN.Process(target=spend_worker, args=(store_url, p, ready, go, results)) for p in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        outcomes = [o for _ in procs for o in results.get(timeout=60)]
    finally:
        for p in procs:
            p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    kinds: defaultdict[str, int] = defaultdict(int)
    for _, _, kind, _ in outcomes:
        kinds[kind] += 1
    assert len({o[0] for o in outcomes}) == len(outcomes) == PROCESSES * THREADS * ATTEMPTS
    assert set(kinds) == {"settled", "refused"}, kinds  # no errors, nothing in between
    assert kinds["settled"] > 20 and kinds["refused"] > 20

    settled: defaultdict[int, int] = defaultdict(int)
    for _, user, kind, cost in outcomes:
        if kind == "settled":
            settled[user] += round(cost * 1e6)
    with open_ledger(store_url) as ledger:
        now = datetime.now(UTC)
        [team] = ledger.spent([TEAM], now=now)
        users = ledger.spent([user_key(u) for u in range(USERS)], now=now)
        rows = {r.key: r for r in ledger.status("budget:e2e/", now=now)}
    assert round(team * 1e6) == sum(settled.values())  # nothing lost, nothing counted twice
    assert team <= TEAM_LIMIT
    for u, spent in enumerate(users):
        assert round(spent * 1e6) == settled[u]
        assert spent <= USER_LIMIT
    assert rows[TEAM].held_usd == 0.0 and rows[TEAM].limit_usd == TEAM_LIMIT


def test_a_killed_process_releases_its_holds_after_the_ttl(store_url: str) -> None:
    ready = SPAWN.Queue()
    proc = SPAWN.Process(target=doomed_worker, args=(store_url, ready))
    proc.start()
    held_at = ready.get(timeout=60)
    time.sleep(0.05)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    proc.join(timeout=10)
    assert proc.exitcode == -signal.SIGKILL
    with open_ledger(store_url) as ledger:
        [spent] = ledger.spent([KILLED], now=datetime.fromtimestamp(held_at, UTC))
        assert spent >= 5.0  # the dead process's holds still count until their TTL
        assert not ledger.reserve("too-soon", [Hold(KILLED, 6.0, 10.0)], ttl_s=5, now=datetime.now(UTC)).granted
        time.sleep(max(0.0, killed_at + 1.6 - time.time()))  # past every hold taken before the kill
        after = datetime.now(UTC)
        assert ledger.spent([KILLED], now=after) == [0.0]
        assert ledger.reserve("after-ttl", [Hold(KILLED, 10.0, 10.0)], ttl_s=5, now=after).granted


# -- Redis outage ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required on PATH for the Redis outage test (CI installs it)", pytrace=False)
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.02)
    server.kill()
    server.wait()
    pytest.fail(f"private redis-server did not start on port {port}", pytrace=False)


def test_redis_outage_fails_closed_and_recovers() -> None:
    port = free_port()
    server = start_redis(port)
    ledger = open_ledger(f"redis://127.0.0.1:{port}/0?timeout=0.25")
    now = datetime.now(UTC)
    hold = Hold(TEAM, 1.0, 10.0, expires_at=now + timedelta(hours=1))
    try:
        assert ledger.reserve("before", [hold], ttl_s=60, now=now).granted
        server.send_signal(signal.SIGSTOP)  # a hung server: the timeout, not the server, ends the wait
        started = time.monotonic()
        with pytest.raises(LedgerError, match="Timeout"):
            ledger.reserve("hung", [hold], ttl_s=60, now=now)
        assert time.monotonic() - started < 0.75
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)
        for call in (
            lambda: ledger.reserve("during", [hold], ttl_s=60, now=now),
            lambda: ledger.settle("before", 1.0, now=now),
            lambda: ledger.release("before", now=now),
            lambda: ledger.spent([TEAM], now=now),
        ):
            started = time.monotonic()
            with pytest.raises(LedgerError, match=rf"Redis ledger redis://127.0.0.1:{port}/0.*failed"):
                call()
            assert time.monotonic() - started < 1.0
        server = start_redis(port)  # an empty Redis: the ledger reconnects without being reopened
        assert ledger.reserve("after", [hold], ttl_s=60, now=now).granted
    finally:
        ledger.close()
        server.terminate()
        server.wait(timeout=10)
