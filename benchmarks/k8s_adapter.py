"""Throughput of the Kubernetes adapter: manifest text → ``resource`` subjects.

Reads every manifest in the shared corpora (``k8s-gpu-workloads`` and ``k8s-required-labels``),
repeats the set until it holds about 5,000 documents, and times ``load_documents`` followed by
``subjects_from_object`` on each document, end to end, in one process::

    .venv/bin/python benchmarks/k8s_adapter.py [--docs 5000] [--rounds 5] [--corpora PATH]

Prints documents per second (best and median round) and the YAML loader in use. The design
target is at least 2,000 documents/s on a 2-core machine (DESIGN.md, "CI: thousands of
manifests per second").

Result (2-core VM shared with other jobs, load average ~3.5; Python 3.11.7, PyYAML 6.0.4 with
libyaml; 5,100 documents, 5.1 MB): median 3,160 documents per CPU second (best 3,725), 2,225
per wall-clock second. Plain ``yaml.load_all`` with ``CSafeLoader``, parsing only, managed 2,408
per CPU second: the adapter's flat constructor more than pays for building the subjects.
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


def one_round(work: list[tuple[str, str, int]]) -> tuple[int, int, float, float]:
    """(documents, subjects, wall seconds, CPU seconds) of one pass of the adapter."""
    docs = subjects = 0
    start, cpu = time.perf_counter(), time.process_time()
    for path, text, _ in work:
        for obj, line in load_documents(text, path):
            docs += 1
            subjects += len(subjects_from_object(obj, file=path, line=line))
    return docs, subjects, time.perf_counter() - start, time.process_time() - cpu


def baseline_round(work: list[tuple[str, str, int]]) -> float:
    """CPU seconds of plain ``yaml.load_all`` with the same loader class: parsing only."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    cpu = time.process_time()
    for _, text, _ in work:
        for _doc in yaml.load_all(text, Loader=loader):
            pass
    return time.process_time() - cpu


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
    wall, cpu, base = [], [], []
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        docs, subjects, elapsed, used = one_round(work)
        wall.append(docs / elapsed)
        cpu.append(docs / used)
        base.append(docs / baseline_round(work))
    loader = "CSafeLoader (libyaml)" if getattr(yaml, "__with_libyaml__", False) else "SafeLoader (pure Python)"
    print(f"corpus: {len(files)} files, {per_pass} documents; round: {docs} documents, {subjects} subjects, "
          f"{size_mb:.1f} MB")
    print(f"loader: {loader}; python {sys.version.split()[0]}")
    print(f"k8s adapter (load_documents + subjects_from_object): median {statistics.median(cpu):,.0f} docs/s "
          f"per CPU second (best {max(cpu):,.0f}); wall clock median {statistics.median(wall):,.0f} docs/s "
          f"({args.rounds} rounds)")
    print(f"reference, yaml.load_all alone (parse only, same loader): median {statistics.median(base):,.0f} "
          f"docs/s per CPU second")


if __name__ == "__main__":
    main()
