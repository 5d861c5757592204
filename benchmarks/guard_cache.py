"""Why the call-guard costs more inside an SDK call than in a tight loop: cold CPU caches.

Run: ``.venv/bin/python benchmarks/guard_cache.py [--calls 2000] [--rounds 3]``

``benchmarks/callguard.py`` measures the guard between two real SDK middlewares, and there its
work (judge, reserve, settle) takes several times what the same work takes in a loop that does
nothing else. This script times the guard's own steps for one Anthropic Messages body — the
``llm_call`` subject, the runtime decision, the reservation, pricing and the settlement — in two
ways, interleaved:

* ``warm``: back to back, as a micro-benchmark would;
* ``cold``: with work in between that touches as much memory and code as an SDK call does
  (a JSON round trip of a few hundred KB and pydantic models built and dropped, as the
  ``anthropic`` SDK builds its request options and ``Message``), so the guard's code and data have
  left the CPU caches when it runs, as they have in an application.

The ratio between the two is what separates the tight-loop figures from the call-guard table.
It says where time can be won: less code and fewer objects touched per call, not faster
arithmetic.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from fake_llm_server import budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.anthropic_guard import MESSAGES as EDGE  # noqa: E402
from costwarden.enforcers.attribution import current_attribution  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.judging import subject_of  # noqa: E402
from costwarden.engine.subjects.parts import TokenUsage  # noqa: E402

BODY = {"model": "claude-haiku-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Classify this ticket: my invoice is wrong. " * 4}]}
USAGE = TokenUsage(input_tokens=40, output_tokens=12)
_BIG = {f"k{i}": [i, str(i), {"x": i}] for i in range(3000)}


def thrash() -> None:
    """Touch about as much memory and code as an SDK call between two guarded calls."""
    from anthropic.types import Message

    json.loads(json.dumps(_BIG))
    raw = {"id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 1, "output_tokens": 2}}
    for _ in range(50):
        Message.construct(**raw)


def steps(guard: CallGuard) -> dict[str, Callable[[], Any]]:
    who = current_attribution()
    policies, ledger = guard.policies, guard.ledger

    def subject() -> Any:
        return subject_of(guard, EDGE, BODY, who, False)

    def decide() -> Any:
        return policies.evaluate(subject(), "runtime", now=guard.clock(), ledger=ledger, reserving=True)

    def call() -> Any:
        guarded = guard.begin(EDGE, BODY, key=f"k-{uuid.uuid4().hex}")
        guarded.complete(USAGE, served_model="claude-haiku-4-5")
        return guarded

    return {"subject": subject, "subject + decision": decide, "begin + complete (whole guard)": call}


def timed(fn: Callable[[], Any], n: int, cold: bool) -> float:
    samples = []
    gc.disable()
    try:
        for _ in range(n):
            if cold:
                thrash()
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite-leased")
    args = parser.parse_args()
    tmp = Path("/tmp") / f"cw-cache-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    print(f"# guard steps, warm vs cold caches — median µs of {args.calls} calls, {args.rounds} rounds "
          f"(median of rounds), Python {platform.python_version()}, {platform.machine()}\n")
    print("| ledger | step | warm µs | cold µs | cold / warm |")
    print("|---|---|---:|---:|---:|")
    for store in args.stores.split(","):
        url = "memory://" if store == "memory" else f"sqlite:///{tmp}/ledger-{store}.db"
        if store.endswith("-leased"):
            url += "?lease_calls=16"
        guard = CallGuard(compile_policies(budget_policy(1e9)), ledger=open_ledger(url))
        try:
            with attribution(feature="classify", user="bench-user", team="bench"):
                for name, fn in steps(guard).items():
                    timed(fn, 200, cold=False)
                    warm, cold = [], []
                    for _ in range(args.rounds):
                        warm.append(timed(fn, args.calls, cold=False))
                        cold.append(timed(fn, args.calls, cold=True))
                    w, c = statistics.median(warm), statistics.median(cold)
                    print(f"| {store} | {name} | {w:.1f} | {c:.1f} | {c / w:.1f}× |", flush=True)
        finally:
            guard.close()
            close = getattr(guard.ledger, "close", None)
            if close is not None:
                close()
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
