"""The call-guard under crashes and outages: the real ``anthropic`` SDK with the CallGuard middleware
against the local fake server, with SQLite files and the real Redis and PostgreSQL as ledgers.

* A process making guarded calls is killed with SIGKILL while its calls are in flight (the fake
  server holds their answers): right after the kill the ledger's status shows their reservations
  held and they block the budget; after the guard's reservation TTL they are released and the
  budget's spend is what the process settled before it died.
* A private Redis is killed mid-run under a live guard: every later guarded call is refused with
  ``PolicyViolation`` naming the ledger outage, and none of them reaches the server; the calls
  admitted before are all accounted for — settled in Redis (checked after it comes back from its
  append-only file), or, for the few whose settlement met the outage, reported uncharged with the
  ledger error.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
from fake_llm_server import LOAD_PROMPT, FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.anthropic import estimate_input_tokens  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded, PolicyViolation  # noqa: E402

SPAWN = mp.get_context("spawn")
PRICER = GenaiPricer()
MODEL, MAX_TOKENS = "claude-haiku-4-5", 50
MESSAGES = [{"role": "user", "content": LOAD_PROMPT}]
WORST = PRICER.cost(
    "anthropic",
    MODEL,
    TokenUsage(input_tokens=estimate_input_tokens({"model": MODEL, "messages": MESSAGES}), output_tokens=MAX_TOKENS),
)
"""What the guard reserves per call."""
BILLED = PRICER.cost("anthropic", MODEL, TokenUsage(input_tokens=42, output_tokens=10))
"""What the fake server's answer costs."""
SETTLED, IN_FLIGHT, TTL_S = 2, 4, 2.0


def user_key(user: str) -> str:
    return f"budget:user-budget/cap:user={user}:{datetime.now(UTC):%Y-%m-%d}"


def figures(ledger: Any, user: str) -> tuple[float, float]:
    """(settled, live held) of a user's budget, from the ledger's status API."""
    key = user_key(user)
    rows = {r.key: r for r in ledger.status(key, now=datetime.now(UTC))}
    return (rows[key].spent_usd, rows[key].held_usd) if key in rows else (0.0, 0.0)


def call(client: Any, user: str, **headers: str) -> None:
    with attribution(user=user):
        client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES, extra_headers=headers)


# --- kill -9 a guarded process ------------------------------------------------------------------


def guarded_worker(server_url: str, ledger_url: str, policy: str, user: str, ready: Any) -> None:
    """SETTLED calls answered at once, then IN_FLIGHT calls the server holds, until killed."""
    ledger = open_ledger(ledger_url)
    guard = CallGuard(compile_policies(policy), ledger=ledger, reservation_ttl_s=TTL_S)
    client = anthropic.Anthropic(base_url=server_url, api_key="test", middleware=[guard], max_retries=0, timeout=120)
    for _ in range(SETTLED):
        call(client, user)
    ready.put("settled")
    threads = [
        threading.Thread(target=call, args=(client, user), kwargs={"x-fake-delay-ms": "60000"}, daemon=True)
        for _ in range(IN_FLIGHT)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_killed_guarded_process_releases_its_reservations_after_the_ttl(
    server: FakeLlmServer, store_url: str
) -> None:
    user = f"doomed-{uuid.uuid4().hex[:6]}"
    limit = round(SETTLED * BILLED + IN_FLIGHT * WORST + WORST / 2, 6)  # no room for one more while held
    policy = budget_policy(limit)
    ready = SPAWN.Queue()
    proc = SPAWN.Process(target=guarded_worker, args=(server.url, store_url, policy, user, ready))
    proc.start()
    try:
        assert ready.get(timeout=60) == "settled"
        deadline = time.monotonic() + 30
        while len(server.posts("/v1/messages")) < SETTLED + IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.posts("/v1/messages")) == SETTLED + IN_FLIGHT  # every slow call reserved and sent
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.join(timeout=10)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)

    sink = ListSink()
    with open_ledger(store_url) as ledger:
        # right after the kill: the dead process's reservations are held and block the budget
        assert figures(ledger, user) == (
            pytest.approx(SETTLED * BILLED, abs=2e-6),
            pytest.approx(IN_FLIGHT * WORST, abs=5e-6),
        )
        guard = CallGuard(compile_policies(policy), ledger=ledger, sinks=[sink])
        with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client:
            with pytest.raises(BudgetExceeded):
                call(client, user)
            assert len(server.posts("/v1/messages")) == SETTLED + IN_FLIGHT
            # past the TTL: released, and the spend is what was settled before the kill
            time.sleep(max(0.0, killed + TTL_S + 0.2 - time.monotonic()))
            assert figures(ledger, user) == (pytest.approx(SETTLED * BILLED, abs=2e-6), 0.0)
            call(client, user)
        assert figures(ledger, user) == (pytest.approx((SETTLED + 1) * BILLED, abs=2e-6), 0.0)
    assert [e.outcome for e in sink.events] == ["denied", "ok"]


# --- Redis stopped mid-run ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """A private redis-server that writes every command to its append-only file before answering."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required on PATH for the Redis outage test (CI installs it)", pytrace=False)
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(data_dir),
        ],
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


def test_redis_killed_mid_run_denies_every_later_call_before_sending(server: FakeLlmServer, tmp_path: Path) -> None:
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    ledger = open_ledger(f"redis://127.0.0.1:{port}/0?timeout=0.25&prefix=res-{uuid.uuid4().hex[:8]}")
    sink = ListSink()
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink], reservation_ttl_s=TTL_S)
    client = anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0)
    outcomes: list[tuple[float, str, BaseException | None]] = []
    lock, stop = threading.Lock(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                call(client, "r-1", **{"x-fake-delay-ms": "100"})
                kind, error = "admitted", None
            except PolicyViolation as exc:
                kind, error = "denied", exc
            except Exception as exc:  # anything else is a failure of the proof
                kind, error = "other", exc
            with lock:
                outcomes.append((started, kind, error))
            if kind != "admitted":
                time.sleep(0.01)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(sink.events) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        redis_proc.kill()  # SIGKILL, with calls in flight
        redis_proc.wait(timeout=10)
        down = time.monotonic()
        time.sleep(0.6)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        client.close()
        if redis_proc.poll() is None:
            redis_proc.kill()
            redis_proc.wait(timeout=10)

    kinds = [k for _, k, _ in outcomes]
    assert "other" not in kinds, [e for _, k, e in outcomes if k == "other"]
    admitted = kinds.count("admitted")
    after = [(k, e) for s, k, e in outcomes if s > down]
    assert admitted >= 12 and len(after) >= 8
    for kind, error in after:  # every call after the outage: refused, saying why, nothing sent
        assert kind == "denied" and not isinstance(error, BudgetExceeded)
        text = str(error)
        assert "budget ledger is unavailable" in text and "fail closed" in text and f"127.0.0.1:{port}" in text
    assert len(server.posts("/v1/messages")) == admitted  # no denied call reached the server

    # one event per call; every admitted call is accounted for: charged, or reported with the ledger error
    assert len(sink.events) == len(outcomes)
    denied_events = [e for e in sink.events if e.outcome == "denied"]
    assert len(denied_events) == kinds.count("denied")
    assert all("budget ledger is unavailable" in (e.error or "") for e in denied_events)
    answered = [e for e in sink.events if e.outcome != "denied"]
    assert len(answered) == admitted and all(e.outcome == "ok" and e.cost_usd > 0 for e in answered)
    charged = [e for e in answered if e.charged]
    uncharged = [e for e in answered if not e.charged]
    assert all((e.error or "").startswith("ledger:") for e in uncharged)
    assert len(charged) >= 12 - 4

    # Redis comes back from its append-only file: it holds exactly what the charged events say
    redis_proc = start_redis(port, tmp_path)
    try:
        time.sleep(max(0.0, down + TTL_S + 0.2 - time.monotonic()))  # in-flight holds of the uncharged expire
        assert figures(ledger, "r-1") == (pytest.approx(sum(e.cost_usd for e in charged), abs=1e-6 * len(charged)), 0.0)
        with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as again:
            call(again, "r-1")  # the guard recovers without being rebuilt
        assert sink.events[-1].charged
    finally:
        ledger.close()
        redis_proc.kill()
        redis_proc.wait(timeout=10)


def test_a_budget_with_on_error_allow_lets_calls_through_unreserved(server: FakeLlmServer) -> None:
    """DESIGN.md: when the ledger cannot be reached, the policy's onError decides."""
    lenient = budget_policy(5.0).replace("onError: deny", "onError: allow")
    sink = ListSink()
    with open_ledger("redis://127.0.0.1:1/0?timeout=0.25") as ledger:
        guard = CallGuard(compile_policies(lenient), ledger=ledger, sinks=[sink])
        with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client:
            call(client, "r-2")
            strict = CallGuard(
                compile_policies(
                    budget_policy(5.0) + "---" + lenient.replace("name: user-budget", "name: lenient-budget")
                ),
                ledger=ledger,
            )
            with (
                anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[strict], max_retries=0) as both,
                pytest.raises(PolicyViolation, match="fail closed"),
            ):
                call(both, "r-2")  # one enforced budget with onError: deny is enough to refuse
    assert len(server.posts("/v1/messages")) == 1
    (event,) = sink.events
    assert event.outcome == "ok" and not event.charged and event.reservation_id is None
