"""The async call-guard edges never block the event loop on the ledger: with a ledger whose every
operation takes a while (as a remote or busy store does), another coroutine keeps ticking while a
guarded call reserves, settles or releases, for both SDKs, plain and streamed."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.ledger.sqlite import SqliteLedger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]
DELAY_S = 0.5
LOOP_STALL_S = 0.25
"""Longest pause between two ticks that still proves the loop ran meanwhile: half a ledger call."""


class SlowLedger:
    """A ledger doing I/O: every operation blocks its thread for ``DELAY_S`` (a ``time.sleep``)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner if inner is not None else MemoryLedger()
        self.ops: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _slow(self, op: str, rid: str) -> None:
        time.sleep(DELAY_S)
        with self._lock:
            self.ops.append((op, rid))

    def spent(self, keys: Any, *, now: Any) -> Any:
        self._slow("spent", "")
        return self.inner.spent(keys, now=now)

    def reserve(self, reservation_id: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        self._slow("reserve", reservation_id)
        return self.inner.reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, reservation_id: str, cost_usd: float, *, now: Any) -> Any:
        self._slow("settle", reservation_id)
        return self.inner.settle(reservation_id, cost_usd, now=now)

    def release(self, reservation_id: str, *, now: Any) -> None:
        self._slow("release", reservation_id)
        self.inner.release(reservation_id, now=now)

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.ops if name == op)


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as srv:
        # One untimed call per SDK first: loading price data and SDK modules is CPU work that
        # holds the GIL wherever it runs, and is not what these tests are about.
        warm = CallGuard(compile_policies(budget_policy(100.0)), ledger=MemoryLedger())
        for calls in (anthropic_calls, openai_calls):
            asyncio.run(calls(srv, warm, stream=False)())
        yield srv


def make_guard(ledger: Any, sink: ListSink) -> CallGuard:
    return CallGuard(compile_policies(budget_policy(100.0)), ledger=ledger, sinks=[sink])


async def ticking(work: Callable[[], Awaitable[Any]]) -> tuple[Any, float, int]:
    """Run ``work`` while a ticker coroutine runs; (its result, the longest gap between ticks, ticks)."""
    stamps = [time.perf_counter()]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            await asyncio.sleep(0.005)
            stamps.append(time.perf_counter())

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        result = await work()
    finally:
        done.set()
        await task
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return result, max(gaps), len(gaps)


def anthropic_calls(server: FakeLlmServer, guard: CallGuard, *, stream: bool) -> Callable[[], Awaitable[Any]]:
    # The client is built before the loop is timed: its HTTP client loads the CA bundle into an
    # SSL context, CPU work of the SDK's that is not what these tests are about.
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard])

    async def work() -> Any:
        async with client:
            with attribution(user="loop-user"):
                if stream:
                    async with client.messages.stream(model="claude-haiku-4-5", max_tokens=32, messages=HI) as s:
                        return "".join([t async for t in s.text_stream])
                return await client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HI)

    return work


def openai_calls(server: FakeLlmServer, guard: CallGuard, *, stream: bool) -> Callable[[], Awaitable[Any]]:
    base = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test")  # built untimed, as above
    client = guard_openai(base, guard)

    async def work() -> Any:
        try:
            with attribution(user="loop-user"):
                if stream:
                    chunks = await client.chat.completions.create(
                        model="gpt-4.1-mini", max_tokens=32, messages=HI, stream=True
                    )
                    return [c async for c in chunks]
                return await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=32, messages=HI)
        finally:
            await client.close()
            await base.close()

    return work


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_the_loop_keeps_running_while_the_ledger_is_slow(server: FakeLlmServer, sdk: str, stream: bool) -> None:
    ledger, sink = SlowLedger(), ListSink()
    guard = make_guard(ledger, sink)
    calls = anthropic_calls if sdk == "anthropic" else openai_calls
    result, longest, ticks = asyncio.run(ticking(calls(server, guard, stream=stream)))
    assert result
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1  # 2 × DELAY_S of blocking ledger calls
    assert longest < LOOP_STALL_S, f"the event loop stalled {longest:.3f}s"
    assert ticks >= 2 * DELAY_S / 0.005 * 0.5  # it ticked through both ledger calls
    (event,) = sink.events
    assert event.charged and event.outcome == "ok"
    key = f"budget:user-budget/cap:user=loop-user:{event.started_at:%Y-%m-%d}"
    assert ledger.inner.spent([key], now=event.finished_at) == [pytest.approx(event.cost_usd, abs=2e-6)]


def test_a_failed_call_is_released_off_the_loop(server: FakeLlmServer) -> None:
    ledger, sink = SlowLedger(), ListSink()
    guard = make_guard(ledger, sink)

    async def work() -> Any:
        async with anthropic.AsyncAnthropic(
            base_url=server.url, api_key="test", middleware=[guard], max_retries=0
        ) as client:
            server.fail_next(400)
            with attribution(user="loop-user"), pytest.raises(anthropic.BadRequestError):
                await client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HI)
            return True

    _, longest, _ = asyncio.run(ticking(work))
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1
    assert longest < LOOP_STALL_S


def test_a_task_cancelled_while_reserving_has_its_hold_released(server: FakeLlmServer) -> None:
    ledger, sink = SlowLedger(), ListSink()
    guard = make_guard(ledger, sink)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            with attribution(user="loop-user"):
                task = asyncio.create_task(client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HI))
                await asyncio.sleep(DELAY_S / 2)  # the reservation is being made in a worker thread
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        deadline = time.monotonic() + 5
        while ledger.count("release") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1
    assert not server.requests  # nothing was sent


def test_a_real_sqlite_ledger_from_many_tasks(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger, sink = SqliteLedger(tmp_path / "l.db"), ListSink()
    guard = make_guard(ledger, sink)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:

            async def one(i: int) -> None:
                with attribution(user="loop-user"):
                    await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)

            await asyncio.gather(*(one(i) for i in range(20)))

    try:
        asyncio.run(main())
        assert len(sink.events) == 20 and all(e.charged for e in sink.events)
        day = sink.events[0].started_at
        key = f"budget:user-budget/cap:user=loop-user:{day:%Y-%m-%d}"
        assert ledger.spent([key], now=day) == [pytest.approx(sum(e.cost_usd for e in sink.events), abs=2e-5)]
    finally:
        ledger.close()


def test_an_in_process_ledger_stays_on_the_loop(server: FakeLlmServer) -> None:
    guard = CallGuard(compile_policies(budget_policy(100.0)), ledger=MemoryLedger())
    assert not guard.blocking_io
    threads: set[str] = set()
    inner = guard.ledger
    assert inner is not None
    original = inner.reserve

    def reserve(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    inner.reserve = reserve  # type: ignore[method-assign]
    asyncio.run(ticking(anthropic_calls(server, guard, stream=False)))
    assert threads == {threading.main_thread().name}


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_a_stream_dropped_unclosed_is_settled_off_the_loop(server: FakeLlmServer, sdk: str) -> None:
    """A stream read in part, then dropped without ``close()`` and collected: its settlement (a
    blocking ledger call) runs in a worker thread, not on the event loop's thread."""
    settled_on: list[str] = []

    class Recording(SlowLedger):
        def settle(self, reservation_id: str, cost_usd: float, *, now: Any) -> Any:
            settled_on.append(threading.current_thread().name)
            return super().settle(reservation_id, cost_usd, now=now)

    ledger, sink = Recording(), ListSink()
    guard = make_guard(ledger, sink)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as ac, \
                openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test") as base, \
                guard_openai(base, guard) as oc:
            with attribution(user="loop-user"):
                stream: Any
                if sdk == "anthropic":
                    stream = await ac.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HI,
                                                      stream=True)
                else:
                    stream = await oc.chat.completions.create(model="gpt-4.1-mini", max_tokens=32, messages=HI,
                                                              stream=True)
                async for _ in stream:
                    break
                del stream
            deadline = time.monotonic() + 5
            while not settled_on and time.monotonic() < deadline:
                gc.collect()
                await asyncio.sleep(0.05)
            while len(ledger.ops) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    asyncio.run(main())
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1
    assert settled_on and settled_on[0] != threading.main_thread().name
    (event,) = sink.events
    assert event.outcome == "partial" and event.charged
