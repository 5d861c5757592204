"""Throughput of the Kubernetes adapter: manifest text → ``resource`` subjects.

Reads every manifest in the shared corpora (``k8s-gpu-workloads`` and ``k8s-required-labels``),
repeats the set until it holds about 5,000 documents, and times ``load_documents`` followed by
``subjects_from_object`` on each document, end to end, in one process::

    .venv/bin/python benchmarks/k8s_adapter.py [--docs 5000] [--rounds 5] [--corpora PATH]

Prints documents per second (best and median round) and the YAML loader in use. The design
target is at least 2,000 documents/s on a 2-core machine (DESIGN.md, "CI: thousands of
manifests per second").
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costwarden.adapters.kubernetes import load_documents, subjects_from_object  # noqa: E402
from costwarden.errors import AdapterError  # noqa: E402

TOPICS = ("k8s-gpu-workloads", "k8s-required-labels")


def corpus(root: Path) -> list[tuple[str, str, int]]:
    """(path, text, document count) of every manifest the adapter can read."""
    out = []
    for topic in TOPICS:
        for path in sorted((root / topic).rglob("*")):
            if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            try:
                count = len(load_documents(text, str(path)))
            except AdapterError:
                continue
            if count:
                out.append((str(path), text, count))
    return out


def one_round(work: list[tuple[str, str, int]]) -> tuple[int, int, float]:
    docs = subjects = 0
    start = time.perf_counter()
    for path, text, _ in work:
        for obj, line in load_documents(text, path):
            docs += 1
            subjects += len(subjects_from_object(obj, file=path, line=line))
    return docs, subjects, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000, help="documents per round (approximate)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    args = parser.parse_args()

    files = corpus(args.corpora)
    if not files:
        sys.exit(f"no manifests found under {args.corpora}")
    per_pass = sum(n for _, _, n in files)
    work = files * max(1, round(args.docs / per_pass))
    size_mb = sum(len(t) for _, t, _ in work) / 1e6
    one_round(files)  # warm-up
    gc.collect()
    rates = []
    for _ in range(args.rounds):
        docs, subjects, elapsed = one_round(work)
        rates.append(docs / elapsed)
    loader = "CSafeLoader (libyaml)" if getattr(yaml, "__with_libyaml__", False) else "SafeLoader (pure Python)"
    print(f"corpus: {len(files)} files, {per_pass} documents; round: {docs} documents, {subjects} subjects, "
          f"{size_mb:.1f} MB")
    print(f"loader: {loader}; python {sys.version.split()[0]}")
    print(f"k8s adapter: best {max(rates):,.0f} docs/s, median {statistics.median(rates):,.0f} docs/s "
          f"({args.rounds} rounds)")


if __name__ == "__main__":
    main()
