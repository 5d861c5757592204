"""Webhook benchmark: the server under fixed-rate (open-loop) load, then at saturation.

Run: ``.venv/bin/python benchmarks/webhook.py`` (``--quick`` for a short run, ``--workers 1``).

The server runs in its own process (``costwarden.webhook.server.serve``: uvicorn, TLS, the full
built-in policy library); this process is the load generator: asyncio over raw TLS keep-alive
connections, HTTP/1.1, requests sent on a fixed schedule whatever the server does (open loop), so
a slow answer cannot hide the requests queued behind it — latency is measured from each
request's *scheduled* send time. The AdmissionReviews are the example manifests and the policy
library's Kubernetes samples (allowed and denied, with and without warnings), created, or with
``--operation UPDATE`` edited (a label added; the old object is judged too where the new one
violates, for pre-existing violations). Saturation is the throughput of 32 connections sending
back to back. Prints a markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RATES = (50, 200, 500)


def corpus(operation: str = "CREATE") -> list[bytes]:
    """AdmissionReview bodies for every Kubernetes object in the examples and library samples.

    ``UPDATE``: a routine edit of each (a label added), with the object before it as
    ``oldObject``, so a violation the old object already had is judged on both (pre-existing
    violations do not deny)."""
    from costwarden.adapters.kubernetes import read_manifests

    files = [*sorted((ROOT / "examples" / "kubernetes").glob("*.yaml")),
             *sorted((ROOT / "policies").rglob("samples/*.yaml"))]
    bodies = []
    for path in files:
        for obj, _, _ in read_manifests(path.read_text(), str(path)):
            group, _, version = str(obj.get("apiVersion", "v1")).rpartition("/")
            kind = str(obj.get("kind"))
            request = {"uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": kind},
                       "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
                       "namespace": (obj.get("metadata") or {}).get("namespace", "default"), "operation": operation,
                       "userInfo": {"username": "bench"}, "object": obj, "dryRun": False}
            if operation == "UPDATE":
                meta = dict(obj.get("metadata") or {})
                meta["labels"] = {**(meta.get("labels") or {}), "bench.costwarden.dev/edited": "true"}
                request |= {"object": {**obj, "metadata": meta}, "oldObject": obj}
            bodies.append(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                      "request": request}).encode())
    return bodies


def http_request(body: bytes) -> bytes:
    head = (f"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        return cls(reader, writer)

    async def call(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    elapsed_s: float = 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


class Pool:
    """Idle keep-alive connections; a request that finds none opens one (up to ``limit``)."""

    def __init__(self, port: int, context: ssl.SSLContext, limit: int = 64) -> None:
        self.port, self.context, self.limit = port, context, limit
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        self.opened = 0

    async def get(self) -> Connection:
        if self.idle.empty() and self.opened < self.limit:
            self.opened += 1
            return await Connection.open(self.port, self.context)
        return await self.idle.get()

    def put(self, conn: Connection) -> None:
        self.idle.put_nowait(conn)

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


async def fixed_rate(pool: Pool, payloads: list[bytes], rate: float, duration_s: float) -> Run:
    run = Run()
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    start = clock() + 0.05
    total = int(rate * duration_s)

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - clock()))
        conn = await pool.get()
        try:
            status = await conn.call(payloads[i % len(payloads)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            run.errors += 1
            conn.close()
            pool.opened -= 1
            return
        pool.put(conn)
        run.latencies_ms.append((clock() - scheduled) * 1000)
        if status != 200:
            run.errors += 1

    await asyncio.gather(*(one(i) for i in range(total)))
    run.sent, run.elapsed_s = total, clock() - start
    return run


async def saturate(pool: Pool, payloads: list[bytes], concurrency: int, duration_s: float) -> Run:
    run = Run()
    clock = time.perf_counter
    end = clock() + duration_s
    counter = iter(range(10**9))

    async def worker() -> None:
        conn = await pool.get()
        while clock() < end:
            sent = clock()
            try:
                status = await conn.call(payloads[next(counter) % len(payloads)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                run.errors += 1
                return
            run.latencies_ms.append((clock() - sent) * 1000)
            run.errors += status != 200
        pool.put(conn)

    started = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.elapsed_s = clock() - started
    run.sent = len(run.latencies_ms)
    return run


def server_histogram(port: int, context: ssl.SSLContext) -> dict[str, float]:
    """The server's /validate duration histogram: cumulative bucket counts by bound, ``sum`` and ``count``."""
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out: dict[str, float] = {}
    prefix = "costwarden_webhook_request_duration_seconds_"
    for line in data.decode().splitlines():
        if not line.startswith(prefix) or 'endpoint="validate"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        kind = name[len(prefix):].split("{")[0]
        if kind == "bucket":
            out[name.split('le="')[1].split('"')[0]] = float(value)
        elif kind in ("sum", "count"):
            out[kind] = float(value)
    return out


def server_side(before: dict[str, float], after: dict[str, float]) -> tuple[float, str]:
    """Mean (ms) and the histogram bucket holding the 99th percentile, from two scrapes."""
    count = after["count"] - before["count"]
    mean = (after["sum"] - before["sum"]) / max(1.0, count) * 1000
    for bound in sorted((b for b in after if b not in ("sum", "count", "+Inf")), key=float):
        if after[bound] - before.get(bound, 0.0) >= 0.99 * count:
            return mean, f"≤ {float(bound) * 1000:g}"
    return mean, "> 5000"


def start_server(workers: int, port: int, certs: Path) -> subprocess.Popen[bytes]:
    from costwarden.api import builtin_library_path

    code = ("import sys; from costwarden.webhook.server import serve; "
            "serve(sys.argv[1], sys.argv[2], sys.argv[3], port=int(sys.argv[4]), workers=int(sys.argv[5]), "
            "host='127.0.0.1', log_level='warning')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTWARDEN_WEBHOOK_", "PROMETHEUS_"))}
    return subprocess.Popen([sys.executable, "-c", code, str(builtin_library_path()), str(certs / "tls.crt"),
                             str(certs / "tls.key"), str(port), str(workers)], env=env)


def wait_ready(port: int, context: ssl.SSLContext, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def measure(port: int, context: ssl.SSLContext, payloads: list[bytes], duration_s: float,
                  rows: list[dict[str, Any]], workers: int, pinned: bool = False) -> None:
    label = f"{workers} (pinned)" if pinned else str(workers)
    pool = Pool(port, context)
    await fixed_rate(pool, payloads, 100, 2.0)  # warm-up: connections, caches
    for rate in RATES:
        before = server_histogram(port, context)
        run = await fixed_rate(pool, payloads, rate, duration_s)
        server_mean, server_p99 = server_side(before, server_histogram(port, context))
        rows.append({"workers": label, "load": f"{rate}/s", "requests": run.sent, "errors": run.errors,
                     "p50": run.pct(0.50), "p95": run.pct(0.95), "p99": run.pct(0.99), "max": max(run.latencies_ms),
                     "server_mean": server_mean, "server_p99": server_p99,
                     "throughput": len(run.latencies_ms) / run.elapsed_s})
    run = await saturate(pool, payloads, 32, duration_s / 2)
    rows.append({"workers": label, "load": "saturation (32 conns)", "requests": run.sent, "errors": run.errors,
                 "p50": run.pct(0.50), "p95": run.pct(0.95), "p99": run.pct(0.99), "max": max(run.latencies_ms),
                 "server_mean": float("nan"), "server_p99": "—", "throughput": run.sent / run.elapsed_s})
    pool.close()
    await asyncio.sleep(0.1)


def run_client(main: Any) -> None:
    """Run the load generator on uvloop when installed, with its garbage collector paused: the
    client's own pauses would otherwise be counted as server latency."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)
            return
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    finally:
        gc.enable()
        gc.unfreeze()


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workers | load | requests | errors | p50 ms | p95 ms | p99 ms | max ms | server mean ms "
             "| server p99 ms | achieved req/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        server = "—" if r["server_mean"] != r["server_mean"] else f"{r['server_mean']:.2f}"
        lines.append(f"| {r['workers']} | {r['load']} | {r['requests']} | {r['errors']} | {r['p50']:.2f} | "
                     f"{r['p95']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {server} | {r['server_p99']} "
                     f"| {r['throughput']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per fixed rate")
    parser.add_argument("--quick", action="store_true", help="3 s per rate")
    parser.add_argument("--operation", choices=["CREATE", "UPDATE"], default="CREATE",
                        help="UPDATE: a routine edit of each object, judged against its old version too")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="one worker: server on CPU 0, load generator on CPU 1 (each its own core; with 2 workers, unpinned)",
    )
    args = parser.parse_args()
    duration = 3.0 if args.quick else args.duration

    from costwarden.webhook.tls import generate_certs

    payloads = [http_request(body) for body in corpus(args.operation)]
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_certs("costwarden-webhook", "bench", tmp)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(files.ca_cert))
        for workers in args.workers:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = start_server(workers, port, Path(tmp))
            pinned = args.pin and workers == 1 and len(os.sched_getaffinity(0)) >= 2
            if pinned:
                os.sched_setaffinity(server.pid, {0})
                os.sched_setaffinity(0, {1})
            try:
                wait_ready(port, context)
                time.sleep(1.0 * workers)  # every worker has compiled its policies
                run_client(measure(port, context, payloads, duration, rows, workers, pinned))
            finally:
                if pinned:
                    os.sched_setaffinity(0, range(os.cpu_count() or 1))
                server.send_signal(signal.SIGTERM)
                server.wait(60)
    print(f"\nWebhook, built-in library ({len(payloads)} {args.operation} AdmissionReviews from examples and samples), "
          f"TLS, keep-alive, open-loop fixed rate for {duration:g} s each; latency from the scheduled send time. "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load generator on the same machine; "
          f"1-minute load average {load_before[0]:.2f} before the run, {os.getloadavg()[0]:.2f} after "
          f"(other processes on the host compete for the same cores).\n")
    print(table(rows))
    ok = all(r["p99"] < 10 and r["errors"] == 0 for r in rows if r["workers"].startswith("1") and r["load"] == "200/s")
    print(f"\ntarget (p99 < 10 ms at 200/s with one worker, no errors): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
