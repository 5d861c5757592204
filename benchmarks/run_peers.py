"""Time the peer policy engines on the benchmark rule.

Usage (peers live in the benchmark-only venv, see setup_peers.sh):

    .bench-venv/bin/python benchmarks/run_peers.py            # markdown table
    .bench-venv/bin/python benchmarks/run_peers.py --json     # JSON
    .bench-venv/bin/python benchmarks/run_peers.py -n 50000 --only cedar --only cel

Every available peer is verified on the four reference subjects before it is
timed; a wrong verdict aborts the run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import BENCH_INPUTS, Peer, all_peers, time_peer  # noqa: E402

DISTRIBUTIONS = (
    "gordon-to-regorus",
    "opa-golib-python-bindings",
    "cedarpy",
    "common-expression-language",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def run(n: int, only: list[str] | None = None) -> dict[str, Any]:
    peers: list[Peer] = all_peers()
    if only:
        wanted = [o.lower() for o in only]
        peers = [p for p in peers if any(w in p.name.lower() for w in wanted)]
    results: list[dict[str, Any]] = []
    for peer in peers:
        row: dict[str, Any] = {"peer": peer.name, "available": peer.available, "notes": peer.notes}
        if not peer.available:
            row["reason"] = peer.reason
        else:
            peer.verify()
            row.update(time_peer(peer, BENCH_INPUTS, n))
        results.append(row)
    return {
        "rule": "tags team/feature/environment present and non-empty, and batch work on spot",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": _versions(),
        "decisions_per_peer": n,
        "results": results,
    }


def to_markdown(report: dict[str, Any]) -> str:
    floor = next(
        (r["median_us"] for r in report["results"] if r["available"] and r["peer"] == "python closure"),
        None,
    )
    lines = [
        "| peer | median µs/decision | p99 µs | × closure | block | timed call |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        if not r["available"]:
            lines.append(f"| {r['peer']} | unavailable | | | | {r['reason']} |")
            continue
        ratio = f"{r['median_us'] / floor:.0f}×" if floor else ""
        lines.append(
            f"| {r['peer']} | {r['median_us']:.2f} | {r['p99_us']:.2f} | {ratio} "
            f"| {r['block']} | {r['notes']} |"
        )
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in report["versions"].items())
    lines.append("")
    lines.append(
        f"Python {report['python']} ({report['machine']}); "
        f"~{report['decisions_per_peer']} decisions per peer; {versions}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20_000, help="timed decisions per peer (default 20000)")
    parser.add_argument("--json", action="store_true", help="emit JSON instead of a markdown table")
    parser.add_argument("--only", action="append", help="substring of a peer name; repeatable")
    args = parser.parse_args(argv)
    report = run(args.n, args.only)
    print(json.dumps(report, indent=2) if args.json else to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
