"""Which CEL library costwarden embeds: common-expression-language (Rust) vs cel-python.

Run: ``.bench-venv/bin/python benchmarks/cel_choice.py`` (cel-python is installed there by
``benchmarks/setup_peers.sh``; it is not a costwarden dependency).

Measures compile time and per-evaluation time (input conversion included) for expressions
typical of policies, on the same subject dict, and checks both give the same answers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

SUBJECT: dict[str, Any] = {
    "type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train", "namespace": "ml",
    "tags": {"team": "ml", "feature": "search", "environment": "prod"}, "capacity": "spot",
    "workload": {"class": "batch", "gpus": 8.0, "gpu_type": "H100", "instance_type": None, "replicas": 2},
    "hourly_usd": 110.08,
}
EXPRESSIONS = [
    "subject.workload.gpus > 0.0",
    'subject.tags.team != "" && subject.tags.feature != "" && subject.tags.environment != ""',
    'subject.workload["class"] != "batch" || subject.capacity == "spot"',
    'subject.tags.exists(k, k.startsWith("cost")) || size(subject.tags) >= 3',
    "subject.workload.gpus * double(subject.workload.replicas) <= 16.0",
]


def timed(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def rust_engine() -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    from costwarden.engine.cel import compile_cel

    def compile_(src: str) -> Any:
        return compile_cel(src)

    return compile_, lambda program: program.evaluate(SUBJECT)


def python_engine() -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    import celpy

    env = celpy.Environment()

    def compile_(src: str) -> Any:
        return env.program(env.compile(src))

    def run(program: Any) -> Any:
        return program.evaluate({"subject": celpy.json_to_cel(SUBJECT)})

    return compile_, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    engines = {"common-expression-language (Rust)": rust_engine(), "cel-python": python_engine()}
    answers: dict[str, list[Any]] = {}
    print("| library | expression | compile µs | evaluate µs |\n|---|---|---:|---:|")
    for name, (compile_, run) in engines.items():
        answers[name] = []
        for src in EXPRESSIONS:
            program = compile_(src)
            answers[name].append(bool(run(program)))
            c = timed(lambda s=src, f=compile_: f(s), max(args.n // 20, 10))
            e = timed(lambda p=program, f=run: f(p), args.n)
            print(f"| {name} | `{src}` | {c:,.0f} | {e:,.1f} |")
    first, second = answers.values()
    print(f"\nsame answers: {first == second} ({first})")


if __name__ == "__main__":
    main()
