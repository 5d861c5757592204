"""Call-guard benchmark: the latency the guard adds to one LLM call, per ledger store.

Run: ``.venv/bin/python benchmarks/callguard.py [--calls 2000] [--stores memory,sqlite,redis,postgres]
[--settle inline,background] [--rounds 3] [--pause-ms 5]``

``--pause-ms``: idle time after each timed call, as an application's own work or a real API's
latency leaves between its calls; calls are back to back without it. Idle time is where a
background settler's work fits, and it also leaves the CPU caches colder for the next call.

Real SDK clients call the local fake API (``tests/e2e/fake_llm_server.py``, in its own process) on
loopback. The number
that matters is the guard's own time per call, measured inside the client: for the Anthropic
middleware, a timing middleware outside the guard and one inside it (around the HTTP attempt)
give ``guard time = outer − inner``, which covers judging, the reservation, pricing, the settlement,
post-call rules and the cost event (the guards here have no event sink, and post-call findings only
go into cost events, so neither is produced: this is what an application without sinks pays; a
sink adds its ``emit`` and the post-call judgement). For the OpenAI transport it is the transport's time minus the
inner transport's, plus what runs when the client has read the body (reading its usage, pricing,
the settlement). End-to-end p50 of unguarded and guarded calls is shown for scale (loopback HTTP
dominates it).

``settle``: ``inline`` is the default guard; ``background`` is ``settle_in_background=True``, where
reading the response's usage, pricing, the settlement and the cost event run on the guard's
settler thread — the guard time then covers only what the caller waits for, and the end-to-end
column shows whether the moved work really found idle time (on a 2-core machine it competes with
the caller and the server for the CPU and the GIL).

Policy sets: ``budget`` — one per-user daily budget; ``library`` — the built-in library (six LLM
policies, two of them budgets). A budget that only denies leaves its check to the reservation; any
other reads the ledger once (``spent``) while judging; then one ``reserve`` and one ``settle`` per
call: the ``ledger ops`` column.

``<store>-leased`` (``--stores sqlite-leased``) opens the store with ``lease_calls=16``: budget
slices (``adapters/ledger/leased.py``), so most reserves are answered in memory and each settle is
a charge in the store (its ``ledger ops`` are counted at the leased ledger, not the store).

Redis and PostgreSQL are the machine's own (``redis://127.0.0.1:6379/0``,
``postgresql://postgres@127.0.0.1:5432``); a store that cannot be reached is reported, not timed.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from fake_llm_server import FakeLlmServer, budget_policy, compile_policies  # noqa: E402

import costwarden  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
MESSAGES = [{"role": "user", "content": "Classify this ticket: my invoice is wrong. " * 4}]


class CountingLedger:
    """Counts ledger operations per call (spent, reserve, settle, release)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ops = 0

    def spent(self, keys: Any, *, now: Any) -> Any:
        self.ops += 1
        return self.inner.spent(keys, now=now)

    def reserve(self, rid: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        self.ops += 1
        return self.inner.reserve(rid, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, rid: str, cost: float, *, now: Any) -> Any:
        self.ops += 1
        return self.inner.settle(rid, cost, now=now)

    def release(self, rid: str, *, now: Any) -> None:
        self.ops += 1
        self.inner.release(rid, now=now)


@contextmanager
def store(name: str, tmp: Path) -> Iterator[str]:
    """The URL of a fresh ledger; ``<store>-leased`` adds ``lease_calls=16`` (budget slices)."""
    name, _, leased = name.partition("-")
    if leased:
        with store(name, tmp) as url:
            yield url + ("&" if "?" in url else "?") + "lease_calls=16"
        return
    if name == "memory":
        yield "memory://"
    elif name == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db"
    elif name == "redis":
        yield f"{REDIS_URL}?prefix=cwbench-{uuid.uuid4().hex[:8]}"
    else:
        import psycopg

        db = f"cwbench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{db}"')
            try:
                yield f"{POSTGRES_URL}/{db}"
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    samples = sorted(samples_ns)
    p99 = samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)]
    return statistics.median(samples) / 1000, p99 / 1000


PAUSE_S = 0.0
"""Idle time after each timed call (``--pause-ms``): an application's own work or a real API's
latency, in which a background settler finds the CPU free."""


def timed(n: int, fn: Callable[[], None], warmed: Callable[[], None] = lambda: None) -> list[int]:
    """``n`` timed calls of ``fn`` after a warm-up; ``warmed`` runs between the two."""
    for _ in range(max(20, n // 10)):
        fn()
    warmed()
    out = []
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            out.append(time.perf_counter_ns() - t0)
            if PAUSE_S:
                time.sleep(PAUSE_S)
    finally:
        gc.enable()
    return out


def _serve(urls: Any, stop: Any) -> None:
    with FakeLlmServer() as server:
        urls.put(server.url)
        stop.wait()


class Server:
    """The fake API in a process of its own, so its threads do not share the GIL with the client."""

    def __enter__(self) -> Server:
        ctx = multiprocessing.get_context("spawn")
        urls = ctx.Queue()
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_serve, args=(urls, self._stop), daemon=True)
        self._process.start()
        self.url = urls.get(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(10)


def bench_anthropic(server: Any, policies: Any, ledger_url: str, n: int, background: bool) -> dict[str, Any]:
    import anthropic

    inner_ns: list[int] = []
    outer_ns: list[int] = []

    def outer(request: Any, call_next: Any) -> Any:
        t0 = time.perf_counter_ns()
        response = call_next(request)
        outer_ns.append(time.perf_counter_ns() - t0)
        return response

    def inner(request: Any, call_next: Any) -> Any:
        t0 = time.perf_counter_ns()
        response = call_next(request)
        inner_ns.append(time.perf_counter_ns() - t0)
        return response

    ledger = CountingLedger(open_ledger(ledger_url))
    guard = CallGuard(policies, ledger=ledger, settle_in_background=background)
    guarded = anthropic.Anthropic(base_url=server.url, api_key="x", middleware=[outer, guard, inner])
    plain = anthropic.Anthropic(base_url=server.url, api_key="x")
    try:
        with attribution(feature="classify", user="bench-user", team="bench"):
            def guarded_call() -> None:
                guarded.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)

            def plain_call() -> None:
                plain.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)

            e2e_plain = timed(n, plain_call)
            outer_ns.clear()
            inner_ns.clear()
            start = {"ops": 0}

            def warmed() -> None:  # count the timed calls' ledger operations, not the warm-up's
                guard.flush()
                start["ops"] = ledger.ops

            e2e_guarded = timed(n, guarded_call, warmed)
            guard.flush()
            ops = (ledger.ops - start["ops"]) / n
            added = [o - i for o, i in zip(outer_ns[-n:], inner_ns[-n:], strict=True)]
    finally:
        guard.close()
        guarded.close()
        plain.close()
        ledger.inner.close()
    return {"added": percentiles(added), "plain": percentiles(e2e_plain)[0],
            "guarded": percentiles(e2e_guarded)[0], "ops": ops}


def bench_openai(server: Any, policies: Any, ledger_url: str, n: int, background: bool) -> dict[str, Any]:
    import httpx2
    import openai

    from costwarden.enforcers import openai_guard
    from costwarden.enforcers.openai_guard import GuardedTransport

    inner_ns: list[int] = []
    pre_ns: list[int] = []
    finish_ns: list[int] = []

    class Timed(httpx2.HTTPTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            t0 = time.perf_counter_ns()
            response = super().handle_request(request)
            inner_ns.append(time.perf_counter_ns() - t0)
            return response

    class Outer(httpx2.BaseTransport):
        def __init__(self, wrapped: httpx2.BaseTransport) -> None:
            self.wrapped = wrapped

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            t0 = time.perf_counter_ns()
            response = self.wrapped.handle_request(request)
            pre_ns.append(time.perf_counter_ns() - t0)
            return response

        def close(self) -> None:
            self.wrapped.close()

    original = openai_guard.stream_end

    def finish(*args: Any, **kwargs: Any) -> None:  # the body's end: read usage, price, settle, report
        t0 = time.perf_counter_ns()
        original(*args, **kwargs)
        finish_ns.append(time.perf_counter_ns() - t0)

    ledger = CountingLedger(open_ledger(ledger_url))
    guard = CallGuard(policies, ledger=ledger, settle_in_background=background)
    transport = Outer(GuardedTransport(guard, Timed()))
    guarded = openai.OpenAI(base_url=server.url + "/v1", api_key="x", http_client=httpx2.Client(transport=transport))
    plain = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    openai_guard.stream_end = finish
    try:
        with attribution(feature="classify", user="bench-user", team="bench"):
            def guarded_fn() -> None:
                guarded.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=MESSAGES)

            def plain_fn() -> None:
                plain.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=MESSAGES)

            e2e_plain = timed(n, plain_fn)
            for samples in (inner_ns, pre_ns, finish_ns):
                samples.clear()
            start = {"ops": 0}

            def warmed() -> None:  # count the timed calls' ledger operations, not the warm-up's
                guard.flush()
                start["ops"] = ledger.ops

            e2e_guarded = timed(n, guarded_fn, warmed)
            guard.flush()
            ops = (ledger.ops - start["ops"]) / n
            added = [p - i + f for p, i, f in zip(pre_ns[-n:], inner_ns[-n:], finish_ns[-n:], strict=True)]
    finally:
        openai_guard.stream_end = original
        guard.close()
        guarded.close()
        plain.close()
        ledger.inner.close()
    return {"added": percentiles(added), "plain": percentiles(e2e_plain)[0],
            "guarded": percentiles(e2e_guarded)[0], "ops": ops}


def _print_row(row: tuple[str, str, str, str], runs: list[dict[str, Any]], error: str | None) -> None:
    provider, name, settle, label = row
    if error is not None:
        print(f"| {provider} | {name} | {settle} | {label} | not run: {error} |||||", flush=True)
        return

    def median(pick: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(pick(run) for run in runs)

    print(f"| {provider} | {name} | {settle} | {label} | {median(lambda r: r['added'][0]):.0f} | "
          f"{median(lambda r: r['added'][1]):.0f} | {median(lambda r: r['ops']):.0f} | "
          f"{median(lambda r: r['plain']):.0f} | {median(lambda r: r['guarded']):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres")
    parser.add_argument("--providers", default="anthropic,openai")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, interleaved; each figure is the median of its rounds")
    parser.add_argument("--settle", default="inline,background",
                        help="inline (the default guard) and/or background (settle_in_background=True)")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle time after each timed call (0: back to back, the default)")
    args = parser.parse_args()
    global PAUSE_S
    PAUSE_S = args.pause_ms / 1000
    sets = {"budget": compile_policies(budget_policy(1e9)), "library": costwarden.load_policies()}
    benches = {"anthropic": bench_anthropic, "openai": bench_openai}
    tmp = Path("/tmp") / f"cw-bench-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    pause = f", {args.pause_ms:g} ms idle after each call" if args.pause_ms else ""
    print(f"# call-guard added latency — {args.calls} calls each{pause}, Python {platform.python_version()}, "
          f"{platform.machine()}\n", flush=True)
    print("| SDK | ledger | settle | policies | guard p50 µs | guard p99 µs | ledger ops/call | "
          "unguarded p50 µs | guarded p50 µs |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|", flush=True)
    rows = [(provider, name, settle, label)
            for provider in args.providers.split(",")
            for name in args.stores.split(",")
            for settle in args.settle.split(",")
            for label in sets]
    runs: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {row: [] for row in rows}
    failed: dict[tuple[str, str, str, str], str] = {}
    with Server() as server:
        for _ in range(args.rounds):  # interleaved: a burst of noise on a shared machine spoils one round of a row
            for row in rows:
                provider, name, settle, label = row
                if row in failed:
                    continue
                background = settle == "background"
                try:
                    with store(name, tmp) as url:
                        runs[row].append(benches[provider](server, sets[label], url, args.calls, background))
                except Exception as exc:
                    failed[row] = f"{type(exc).__name__}: {exc}"
                if args.rounds == 1:
                    _print_row(row, runs[row], failed.get(row))
    if args.rounds > 1:
        for row in rows:
            _print_row(row, runs[row], failed.get(row))
    with suppress(OSError):
        for path in tmp.iterdir():
            path.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
