"""Ledger benchmark: reserve+settle pairs per second per store, one process and many, with latencies.

Run: ``.venv/bin/python benchmarks/ledger.py`` (Redis at 127.0.0.1:6379 and PostgreSQL at
127.0.0.1:5432, user postgres, trust auth — the same servers the tests use; ``--stores`` picks
from memory, sqlite, redis, postgres and postgres-async, which is PostgreSQL with
``synchronous_commit=off``: a commit does not wait for the WAL flush; any of them ``-leased``,
which reserves from budget slices: ``adapters/ledger/leased.py``).

Each pair reserves $0.001 against two budgets (a team shared by every worker, and a user) and
settles it — the call-guard's path. Limits are high, so nothing is refused: this times the
ledger, not refusals. The shared team row is the worst case for contention, as in production.
Works in a temporary SQLite file, a fresh Redis key prefix and a fresh PostgreSQL database,
all removed afterwards. Prints a markdown table.

``--in-flight 0,100,1000`` times pairs in one process while that many other calls hold on the
shared team budget (calls in flight: reserved, not yet settled; each pair settles the oldest), to
show how a store's reserve grows with them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from costwarden.adapters.ledger import open_ledger
from costwarden.engine.ledger import Hold

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def run(url: str, seconds: float, worker: int = 0, start_at: float = 0.0, in_flight: int = 0) -> dict[str, Any]:
    """Reserve+settle pairs until ``seconds`` pass; per-op latencies in µs. With ``in_flight``,
    that many other calls hold on the team budget meanwhile: each pair reserves a new call and
    settles the oldest, so as many stay in flight."""
    ledger = open_ledger(url)
    now = datetime.now(UTC)
    ends = now + timedelta(days=1)
    team = Hold("budget:bench/team:team=growth:d", 0.001, 1e9, expires_at=ends)
    for i in range(20):  # warm up: connections, prepared statements, loaded scripts
        ledger.reserve(f"w{worker}-warm-{i}", [team], ttl_s=60, now=now)
        ledger.settle(f"w{worker}-warm-{i}", 0.001, now=now)
    waiting: deque[str] = deque()
    for i in range(in_flight):
        waiting.append(f"w{worker}-held-{i}")
        ledger.reserve(waiting[-1], [team], ttl_s=600, now=now)
    reserve: list[float] = []
    settle: list[float] = []
    clock = time.perf_counter
    while time.time() < start_at:
        time.sleep(0.001)
    stop = clock() + seconds
    i = 0
    while clock() < stop:
        waiting.append(f"w{worker}-{i}")
        user = Hold(f"budget:bench/user:user=u{worker}-{i % 50}:d", 0.001, 1e9, expires_at=ends)
        t0 = clock()
        ledger.reserve(waiting[-1], [team, user], ttl_s=600, now=now)
        t1 = clock()
        ledger.settle(waiting.popleft(), 0.0008, now=now)
        t2 = clock()
        reserve.append((t1 - t0) * 1e6)
        settle.append((t2 - t1) * 1e6)
        i += 1
    ledger.close()
    return {"pairs": i, "seconds": seconds, "reserve": reserve, "settle": settle}


def in_flight_table(stores: list[str], counts: list[int], seconds: float) -> None:
    print("| store | " + " | ".join(f"reserve p50 µs, {n} in flight" for n in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            cells = []
            for n in counts:
                with store_url(store, tmp) as url:
                    cells.append(f"{pct(run(url, seconds, in_flight=n)['reserve'], 50):,.0f}")
            print(f"| {store} | " + " | ".join(cells) + " |", flush=True)


def _child(url: str, seconds: float, worker: int, start_at: float, out: Any) -> None:
    out.put(run(url, seconds, worker, start_at))


def run_processes(url: str, seconds: float, processes: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # let every child import and warm up first
    procs = [ctx.Process(target=_child, args=(url, seconds, w, start_at, out)) for w in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return {
        "pairs": sum(r["pairs"] for r in results),
        "seconds": seconds,
        "reserve": [x for r in results for x in r["reserve"]],
        "settle": [x for r in results for x in r["settle"]],
    }


def pct(samples: list[float], q: float) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


@contextmanager
def store_url(store: str, tmp: str) -> Iterator[str]:
    """A fresh, empty store of each kind; removed afterwards. ``<store>-leased`` adds budget slices
    (``lease_calls=16``): reserves mostly in memory, each settle a charge in the store."""
    if store.endswith("-leased"):
        with store_url(store.removesuffix("-leased"), tmp) as url:
            yield url + ("&" if "?" in url else "?") + "lease_calls=16"
        return
    if store == "memory":
        yield "memory://"
    elif store == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db?timeout=30"
    elif store == "redis":
        import redis

        prefix = f"cwbench-{uuid.uuid4().hex[:8]}"
        yield f"{REDIS}?prefix={prefix}&timeout=5"
        client = redis.Redis.from_url(REDIS)
        names = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])
        client.close()
    else:  # postgres, or postgres-async: synchronous_commit=off (no WAL flush wait per commit)
        import psycopg

        name = f"cwbench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                extra = "&options=-c%20synchronous_commit%3Doff" if store == "postgres-async" else ""
                yield f"{POSTGRES}/{name}?timeout=30&pool_size=2{extra}"
            finally:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def row(store: str, single: dict[str, Any], multi: dict[str, Any] | None) -> str:
    def rate(r: dict[str, Any]) -> str:
        return f"{r['pairs'] / r['seconds']:,.0f}"

    def lat(r: dict[str, Any], op: str) -> str:
        return f"{pct(r[op], 50):,.0f} / {pct(r[op], 99):,.0f}"

    cells = [store, rate(single), lat(single, "reserve"), lat(single, "settle")]
    cells += [rate(multi), lat(multi, "reserve"), lat(multi, "settle")] if multi else ["n/a (in-process)"] + ["—"] * 2
    return "| " + " | ".join(cells) + " |"


def tail_row(store: str, multi: dict[str, Any], processes: int) -> str:
    def tail(op: str) -> str:
        samples = sorted(multi[op])
        return f"{pct(samples, 99):,.0f} / {samples[min(len(samples) - 1, int(0.999 * len(samples)))]:,.0f} / " \
            f"{samples[-1]:,.0f}"

    return f"| {store} | {tail('reserve')} | {tail('settle')} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres,postgres-async")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--tails", action="store_true", help="also print p99.9 and the worst case, many processes")
    parser.add_argument("--in-flight", default="",
                        help="instead: reserve latency with this many calls in flight on the budget (e.g. 0,100,1000)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {load:.1f}, {args.seconds:g} s per run\n"
    )
    if args.in_flight:
        in_flight_table(args.stores.split(","), [int(n) for n in args.in_flight.split(",")], args.seconds)
        return
    p = args.processes
    print(
        f"| store | pairs/s, 1 process | reserve p50 / p99 µs | settle p50 / p99 µs | pairs/s, {p} processes "
        f"| reserve p50 / p99 µs ({p}) | settle p50 / p99 µs ({p}) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    tails: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            with store_url(store, tmp) as url:
                single = run(url, args.seconds, 0, time.time())
            multi = None
            if not store.startswith("memory"):  # one process's store
                with store_url(store, tmp) as url:
                    multi = run_processes(url, args.seconds, p)
            print(row(store, single, multi), flush=True)
            if args.tails and multi is not None:
                tails.append(tail_row(store, multi, p))
    if tails:
        print(f"\n| store, {p} processes | reserve p99 / p99.9 / max µs | settle p99 / p99.9 / max µs |")
        print("|---|---:|---:|")
        print("\n".join(tails))


if __name__ == "__main__":
    main()
