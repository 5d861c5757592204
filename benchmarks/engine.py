"""Engine benchmark: the whole built-in library per subject, and one rule against embeddable peers.

Run: ``bash benchmarks/setup_peers.sh && .bench-venv/bin/python benchmarks/engine.py``
(without the peers' venv, ``.venv/bin/python benchmarks/engine.py`` times costwarden and CEL only).

Reports median and p99 µs per decision. The library rows time each call on its own; the one-rule
comparison times every engine, costwarden included, with ``peers.time_peer`` on the same inputs
(blocks of calls on one prepared input, so timer overhead is the same negligible share for all),
in three interleaved rounds whose median is reported (``--rounds``). costwarden is timed twice:
on a prebuilt subject (what an in-process caller has) and from the plain dict (subject
construction included, the analogue of the peers' input conversion). Its ``decide()`` evaluates
the full Decision and reads its verdict.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import peers  # noqa: E402

import costwarden  # noqa: E402
from costwarden.adapters.sources import subjects_from_path  # noqa: E402
from costwarden.engine.compile import compile_documents  # noqa: E402
from costwarden.engine.loader import load_text  # noqa: E402
from costwarden.engine.subjects import Subject, subject_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "policies"

ONE_RULE = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: tags-and-spot}
spec:
  subject: resource
  rules:
    - name: tags
      requireTags: {keys: [team, feature, environment]}
    - name: spot
      spotOnly: {workloadClasses: [batch]}
"""


def time_call(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """Per-call latency in µs (each call timed on its own; GC off)."""
    for _ in range(min(n // 10, 2000)):
        fn()
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(n):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
    finally:
        gc.enable()
    samples.sort()
    return {
        "median_us": statistics.median(samples) / 1000,
        "p99_us": samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)] / 1000,
    }


def library_subjects() -> dict[str, Subject]:
    """Typical subjects of each type, compliant and violating, from the library's own samples."""
    picks = {
        "resource: labelled spot GPU job (compliant)": (
            "infrastructure/spot-only-batch/samples/allowed-spot-pinned-job.yaml"
        ),
        "resource: unlabelled deployment (violating)": (
            "infrastructure/require-cost-tags/samples/denied-unlabelled-inference-deployment.yaml"
        ),
        "llm_call: haiku classify (compliant)": "llm/allowed-model-tiers/samples/allowed-haiku-classify.json",
        "llm_call: opus classify (violating, downgrade)": "llm/allowed-model-tiers/samples/denied-opus-classify.json",
        "llm_call: long uncached prompt (violating, fix)": (
            "llm/require-prompt-caching/samples/denied-long-system-prompt-uncached.json"
        ),
        "serving_config: quantised TP2 (compliant)": (
            "serving/vllm-efficient-serving/samples/allowed-qwen-72b-awq-tp2.json"
        ),
        "serving_config: half-idle 70B (violating)": (
            "serving/vllm-efficient-serving/samples/denied-llama-70b-half-idle.json"
        ),
    }
    return {name: subjects_from_path(LIB / path)[0] for name, path in picks.items()}


def bench_library(n: int) -> list[dict[str, Any]]:
    policies = costwarden.load_policies()
    rows = []
    for name, subject in library_subjects().items():
        decision = policies.evaluate(subject, "ci")
        stats = time_call(lambda s=subject: policies.evaluate(s, "ci"), n)
        rows.append({"subject": name, "results": len(decision.results), "verdict": decision.verdict, **stats})
    return rows


def _resource_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "resource",
        "provider": "kubernetes",
        "kind": "Job",
        "name": "bench",
        "tags": d["tags"],
        "capacity": d["capacity"],
        "workload": {"class": d["workload"]["class"]},
    }


class CostwardenPeer(peers.Peer):
    """costwarden through the peers' own harness (``peers.time_peer``), so every engine is timed
    the same way. ``decide()`` returns the verdict of the whole Decision (every rule's result
    with message, path and expected values is built; the peers return one boolean).

    ``prebuilt``: the subject is built in ``prepare`` (what an in-process caller holds);
    otherwise ``decide`` builds it from the plain dict first (the analogue of the peers' input
    conversion).
    """

    def __init__(self, policies: Any, *, prebuilt: bool) -> None:
        self.policies = policies
        self.prebuilt = prebuilt
        self.name = "costwarden (prebuilt subject)" if prebuilt else "costwarden (from dict)"
        self.judge = policies.evaluator("ci")
        super().__init__()

    def _load(self) -> None:
        pass

    def prepare(self, subject: dict[str, Any]) -> None:
        judge = self.judge
        data = self._subject = _resource_dict(subject)
        # decide is the bare closure (as ClosurePeer's is one call to its rule): one Python frame
        if self.prebuilt:
            built = subject_from_dict(data)
            self.decide = lambda: judge(built).allowed  # type: ignore[method-assign]
        else:
            self.decide = lambda: judge(subject_from_dict(data)).allowed  # type: ignore[method-assign]

    def decide(self) -> bool:
        raise RuntimeError("prepare() first")


def bench_one_rule(n: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Every engine timed ``rounds`` times, interleaved (round 1 of each, then round 2...), each
    row the median of its rounds: a burst of noise on this shared machine then spoils one round of
    one engine, not its result."""
    result = load_text(ONE_RULE, "bench.yaml")
    policies = compile_documents(result.documents, diagnostics=result.diagnostics)
    engines = [CostwardenPeer(policies, prebuilt=True), CostwardenPeer(policies, prebuilt=False), *peers.all_peers()]
    timings: dict[str, list[dict[str, Any]]] = {peer.name: [] for peer in engines}
    for peer in engines:
        if peer.available:
            peer.verify()
    for _ in range(rounds):
        for peer in engines:
            if peer.available:
                timings[peer.name].append(peers.time_peer(peer, n=n))
    rows: list[dict[str, Any]] = []
    for peer in engines:
        if not peer.available:
            rows.append({"engine": peer.name, "unavailable": peer.reason})
            continue
        runs = timings[peer.name]
        rows.append(
            {
                "engine": peer.name,
                "median_us": statistics.median(r["median_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs),
                "round_medians_us": [round(r["median_us"], 3) for r in runs],
            }
        )
    return rows


def bench_startup() -> dict[str, float]:
    exe = str(Path(sys.executable).with_name("costwarden"))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([exe, "--version"], check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    code = (
        "import time; t=time.perf_counter(); import costwarden; costwarden.load_policies(); "
        "print(time.perf_counter()-t)"
    )
    loads = [
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(5)
    ]
    return {"version_s": statistics.median(runs), "import_load_compile_s": statistics.median(loads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000, help="timed decisions per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the one-rule comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "library": bench_library(args.n),
        "one_rule": bench_one_rule(args.n, args.rounds),
        "startup": bench_startup(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}; date: {out['date']}\n")
    print("| subject | results | verdict | median µs | p99 µs |\n|---|---:|---|---:|---:|")
    for r in out["library"]:
        print(f"| {r['subject']} | {r['results']} | {r['verdict']} | {r['median_us']:.1f} | {r['p99_us']:.1f} |")
    print("\n| engine (tags + batch-on-spot) | median µs | p99 µs | rounds' medians µs |\n|---|---:|---:|---|")
    for r in out["one_rule"]:
        if "unavailable" in r:
            print(f"| {r['engine']} | unavailable: {r['unavailable']} | | |")
        else:
            rounds = ", ".join(f"{m:.2f}" for m in r["round_medians_us"])
            print(f"| {r['engine']} | {r['median_us']:.2f} | {r['p99_us']:.2f} | {rounds} |")
    s = out["startup"]
    print(
        f"\n`costwarden --version`: {s['version_s']:.3f} s; import + load + compile the library: "
        f"{s['import_load_compile_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
