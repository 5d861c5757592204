"""``costwarden check`` throughput, and side by side with Checkov on the same manifests and rule.

Builds a corpus of ``--docs`` Kubernetes documents in ``--files`` files in a temporary folder from
the real manifests in ``../shared/corpora`` (``k8s-gpu-workloads`` and ``k8s-required-labels``:
every object with ``apiVersion``, ``kind`` and ``metadata.name``), repeated with a unique
``metadata.name`` per copy, each pass over them in one of five label variants (as found; cost labels
on the object and its pod template; on the object only; a bad ``environment`` value; moved to
kube-system) so that the rule passes, fails and is excluded. It then times, as separate processes
(wall clock, and CPU seconds of the process and its children), interleaved over ``--runs`` rounds
after one untimed warm-up each:

* ``costwarden check DIR --format json``: the full built-in library;
* ``costwarden check DIR --policies ONLY --format json``: only ``require-cost-tags``;
* ``costwarden check DIR``: the full library with the default text report;
* ``checkov -d DIR --framework kubernetes --external-checks-dir benchmarks/checkov_policies
  --check CKV_K8S_COST_TAGS -o json --quiet --skip-download``: the same rule as a Checkov custom
  check (``--skip-download`` keeps Checkov off the network: without it Checkov first tries to
  fetch its guideline mappings, which fails offline and only adds time);
* each tool on a one-document corpus: start-up plus policy loading, the fixed cost of a run;

and ``run_check`` in this process (policies compiled once, outside the timing). It then checks
that both tools flag the same objects, and prints a markdown block for ``benchmarks/RESULTS.md``::

    .venv/bin/python benchmarks/check.py --checkov .bench-venv/bin/checkov [--docs 5000] [--runs 3]

Without ``--checkov`` (or with a path that does not exist) only costwarden is timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costwarden import __version__  # noqa: E402
from costwarden.adapters.kubernetes import read_manifests  # noqa: E402
from costwarden.api import builtin_library_path, load_policies  # noqa: E402
from costwarden.enforcers.ci import run_check  # noqa: E402
from costwarden.enforcers.reporters import render  # noqa: E402
from costwarden.errors import AdapterError  # noqa: E402

TOPICS = ("k8s-gpu-workloads", "k8s-required-labels")
POLICY = "require-cost-tags"
CHECK_ID = "CKV_K8S_COST_TAGS"
CHECKOV_POLICIES = ROOT / "benchmarks" / "checkov_policies"
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# --- corpus -------------------------------------------------------------------------------------


def base_objects(corpora: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object (apiVersion, kind, metadata.name) in the shared manifest corpora."""
    out = []
    for topic in TOPICS:
        for path in sorted((corpora / topic).rglob("*")):
            if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
                continue
            try:
                docs = read_manifests(path.read_text(encoding="utf-8"), str(path))
            except (AdapterError, UnicodeDecodeError):
                continue
            for obj, _, _ in docs:
                meta = obj.get("metadata")
                if (isinstance(obj.get("apiVersion"), str) and isinstance(obj.get("kind"), str)
                        and isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]):
                    out.append(obj)
    return out


COST_LABELS = {"team": "ml-platform", "feature": "inference", "environment": "prod"}
TEMPLATE_PATHS = (("spec", "template"), ("spec", "jobTemplate", "spec", "template"))
VARIANTS = ("as-is", "labelled", "own-labels-only", "bad-environment", "kube-system")


def _add_labels(meta: Any, labels: dict[str, str]) -> None:
    if isinstance(meta, dict):
        current = meta.get("labels")
        meta["labels"] = {**(current if isinstance(current, dict) else {}), **labels}


def vary(obj: dict[str, Any], variant: str) -> None:
    """Give a copy the labels (or namespace) of one variant, so that both tools see passing objects,
    pod-template vs own-label placement, a bad value and an excluded namespace, not only failures."""
    if variant == "kube-system":
        if obj.get("kind") != "Namespace":
            obj["metadata"]["namespace"] = "kube-system"
        return
    if variant == "as-is":
        return
    labels = {**COST_LABELS, "environment": {"own-labels-only": "dev", "bad-environment": "production"}.get(
        variant, "prod")}
    _add_labels(obj["metadata"], labels)
    if variant == "own-labels-only":
        return
    for path in TEMPLATE_PATHS:  # the pod template of the built-in controllers, where there is one
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if not isinstance(node.get("metadata"), dict):
                node["metadata"] = {}  # also `metadata: null`, as in some Kyverno test manifests
            _add_labels(node["metadata"], labels)


def write_corpus(base: list[dict[str, Any]], folder: Path, docs: int, files: int) -> Counter[str]:
    """``docs`` objects cycled from ``base``, each renamed ``<name>-<index>``, in ``files`` YAML files.
    Each pass over ``base`` applies the next of :data:`VARIANTS`. Returns the variant counts."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-docs // max(1, files))
    variants: Counter[str] = Counter()
    batch: list[dict[str, Any]] = []
    written = 0
    for index in range(docs):
        obj = copy.deepcopy(base[index % len(base)])
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-{index:05d}"
        variant = VARIANTS[(index // len(base)) % len(VARIANTS)]
        vary(obj, variant)
        variants[variant] += 1
        batch.append(obj)
        if len(batch) == per_file or index == docs - 1:
            text = yaml.dump_all(batch, Dumper=Dumper, sort_keys=False, default_flow_style=False)
            (folder / f"manifests-{written:04d}.yaml").write_text(text, encoding="utf-8")
            written += 1
            batch = []
    return variants


def only_policy(folder: Path) -> Path:
    """A policy folder holding just the built-in ``require-cost-tags`` policy."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(builtin_library_path()) / "infrastructure" / POLICY / f"{POLICY}.yaml"
    shutil.copy(source, folder / source.name)
    return folder


# --- timing -------------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    wall: list[float]
    cpu: list[float]
    output: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def run_rounds(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, Timing]:
    """One untimed warm-up of each command, then ``runs`` interleaved timed rounds."""
    timings = {label: Timing(label, [], []) for label in commands}
    for cmd in commands.values():
        timed(cmd, env)
    for _ in range(runs):
        for label, cmd in commands.items():
            wall, cpu, out = timed(cmd, env)
            timings[label].wall.append(wall)
            timings[label].cpu.append(cpu)
            timings[label].output = out
    return timings


@dataclass
class InProcess:
    compile_s: float
    check: Timing  # run_check
    report: Timing  # run_check + JSON report
    subjects: int


def in_process(corpus: Path, runs: int) -> InProcess:
    """The full library compiled once, then ``run_check`` (and the JSON report) timed in this process."""
    start = time.perf_counter()
    policies = load_policies()
    compile_s = time.perf_counter() - start
    run_check([str(corpus)], policies)  # warm-up
    check, with_report = Timing("run_check", [], []), Timing("run_check + json", [], [])
    subjects = 0
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        report = run_check([str(corpus)], policies)
        middle, cpu_middle = time.perf_counter(), time.process_time()
        render("json", report)
        check.wall.append(middle - start)
        check.cpu.append(cpu_middle - cpu)
        with_report.wall.append(time.perf_counter() - start)
        with_report.cpu.append(time.process_time() - cpu)
        subjects = len(report.decisions)
    return InProcess(compile_s, check, with_report, subjects)


# --- agreement ----------------------------------------------------------------------------------


def costwarden_flagged(output: str, corpus: Path) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """(file, Kind.namespace.name) of every require-cost-tags failure, and the run's summary."""
    data = json.loads(output)
    flagged = set()
    for r in data["results"]:
        if r["policy"] == POLICY and r["result"] == "fail":
            s = r["subject"]
            file = "/" + os.path.relpath(r["source"]["file"], corpus)
            flagged.add((file, f"{s['kind']}.{s['namespace'] or 'default'}.{s['name']}"))
    return flagged, data["summary"]


def checkov_flagged(output: str) -> set[tuple[str, str]]:
    data = json.loads(output)
    reports = data if isinstance(data, list) else [data]
    return {
        (c["file_path"], c["resource"])
        for rep in reports if rep.get("check_type") == "kubernetes"
        for c in rep.get("results", {}).get("failed_checks", []) if c["check_id"] == CHECK_ID
    }


# --- report -------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        memory = f", {mem / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = ""
    return f"{model}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}"


def tool_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        return proc.stdout.strip().splitlines()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def row(label: str, t: Timing, docs: int | None) -> str:
    rate = f"{docs / t.median:,.0f} | {docs / t.cpu_median:,.0f}" if docs else "— | —"
    walls = ", ".join(f"{w:.2f}" for w in t.wall)
    return f"| {label} | {t.median:.2f} | {walls} | {t.cpu_median:.2f} | {rate} |"


def main() -> None:  # noqa: C901 - a straight script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000, help="documents in the generated corpus")
    parser.add_argument("--files", type=int, default=500, help="files they are spread over")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each command (median reported)")
    parser.add_argument("--checkov", type=Path, help="checkov executable (omit to time costwarden only)")
    parser.add_argument("--costwarden", type=Path, default=Path(sys.executable).parent / "costwarden")
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--keep", type=Path, help="write the corpus here and keep it (default: a temp dir)")
    args = parser.parse_args()

    base = base_objects(args.corpora)
    if not base:
        sys.exit(f"no Kubernetes objects found under {args.corpora}")
    checkov = args.checkov if args.checkov and args.checkov.exists() else None
    if args.checkov and checkov is None:
        print(f"warning: {args.checkov} not found; timing costwarden only", file=sys.stderr)
    load_start = os.getloadavg()
    env = {**os.environ, "NO_COLOR": "1", "CI": "1", "PYTHONWARNINGS": "ignore"}

    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        work = args.keep or Path(tmp)
        corpus, one = work / "corpus", work / "one"
        variants = write_corpus(base, corpus, args.docs, args.files)
        write_corpus(base, one, 1, 1)
        policies = only_policy(work / "policies")
        size_mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
        files = len(list(corpus.iterdir()))

        cw = [str(args.costwarden), "check"]
        commands = {
            "cw-full": [*cw, str(corpus), "--format", "json"],
            "cw-one": [*cw, str(corpus), "--policies", str(policies), "--format", "json"],
            "cw-text": [*cw, str(corpus)],
            "cw-startup": [*cw, str(one), "--format", "json"],
        }
        if checkov:
            ck = [str(checkov), "--framework", "kubernetes", "--external-checks-dir", str(CHECKOV_POLICIES),
                  "--check", CHECK_ID, "-o", "json", "--quiet", "--skip-download", "-d"]
            commands |= {"checkov": [*ck, str(corpus)], "checkov-startup": [*ck, str(one)]}
        print(f"corpus: {args.docs} documents in {files} files ({size_mb:.1f} MB) under {corpus}", file=sys.stderr)
        print(f"timing {len(commands)} commands x {args.runs} runs (+1 warm-up each)...", file=sys.stderr)
        t = run_rounds(commands, args.runs, env)
        inproc = in_process(corpus, args.runs)

        cw_flags, cw_summary = costwarden_flagged(t["cw-one"].output, corpus)
        full_flags, full_summary = costwarden_flagged(t["cw-full"].output, corpus)
        ck_flags = checkov_flagged(t["checkov"].output) if checkov else set()
    load_end = os.getloadavg()

    n = args.docs
    yaml_loader = "libyaml C loader" if getattr(yaml, "__with_libyaml__", False) else "pure-Python loader (no libyaml!)"
    checkov_version = tool_version([str(checkov), "--version"]) if checkov else "not run"
    kinds = Counter(base[i % len(base)]["kind"] for i in range(n))
    top = ", ".join(f"{k} {c}" for k, c in kinds.most_common(8))
    mix = ", ".join(f"{v} {variants[v]}" for v in VARIANTS)
    lines = [
        f"### `costwarden check` throughput and Checkov comparison — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine()}; load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end "
        "(shared machine: wall clock includes waiting for a core, CPU seconds do not).",
        f"- Software: Python {platform.python_version()}, PyYAML {yaml.__version__} ({yaml_loader}), "
        f"costwarden {__version__}, Checkov {checkov_version}.",
        f"- Corpus: {n:,} documents in {files} files ({size_mb:.1f} MB), the {len(base)} named objects of "
        f"`shared/corpora/{{{','.join(TOPICS)}}}` cycled with a unique `metadata.name` each ({top}, ...); "
        f"each pass over them a label variant ({mix}: cost labels added on the object and its pod template, "
        "on the object only, with `environment: production`, or the object moved to kube-system).",
        f"- Each command run once untimed, then {args.runs}× interleaved; wall-clock median, every run, "
        "and median CPU seconds (user + system, children included). Output `--format json` / `-o json` "
        "except where a row says text.",
        "",
        "| Command | wall median (s) | runs (s) | CPU median (s) | docs/s (wall) | docs/s (CPU) |",
        "|---|---:|---|---:|---:|---:|",
        row("`costwarden check` full built-in library", t["cw-full"], n),
        row(f"`costwarden check --policies` {POLICY} only", t["cw-one"], n),
        row("`costwarden check` full library, default text report", t["cw-text"], n),
    ]
    if checkov:
        lines.append(row(f"`checkov` custom check {CHECK_ID} only", t["checkov"], n))
    lines.append(row("`costwarden check`, 1 document (start-up + library compile)", t["cw-startup"], None))
    if checkov:
        lines.append(row("`checkov`, 1 document (start-up)", t["checkov-startup"], None))
    lines += [
        "",
        f"- **End to end, full library: {n / t['cw-full'].median:,.0f} docs/s wall clock** "
        f"({n / t['cw-full'].cpu_median:,.0f} per CPU second), whole CLI process including interpreter start-up, "
        "policy compilation, YAML parsing and the JSON report. Target ≥ 2,000.",
        f"- In process (`run_check` only, full library compiled once in {inproc.compile_s * 1000:.0f} ms): "
        f"{n / inproc.check.median:,.0f} docs/s wall, {n / inproc.check.cpu_median:,.0f} per CPU second "
        f"({inproc.check.median:.2f} s for {inproc.subjects:,} subjects); with the JSON report rendered "
        f"{n / inproc.report.median:,.0f} docs/s wall, {n / inproc.report.cpu_median:,.0f} per CPU second.",
    ]
    if checkov:
        ratio_one = t["checkov"].median / t["cw-one"].median
        ratio_full = t["checkov"].median / t["cw-full"].median
        ratio_cpu = t["checkov"].cpu_median / t["cw-one"].cpu_median
        lines += [
            f"- **Checkov / costwarden, same rule: {ratio_one:.1f}× wall clock** ({ratio_cpu:.1f}× CPU); "
            f"Checkov vs costwarden with the whole library: {ratio_full:.1f}×. Target ≥ 10×.",
        ]
        only_cw, only_ck = sorted(cw_flags - ck_flags), sorted(ck_flags - cw_flags)
        verdict = "the same" if not only_cw and not only_ck else "different"
        flagged_kinds = Counter(res.split(".", 1)[0] for _, res in cw_flags)
        lines.append(
            f"- Agreement: costwarden flagged {len(cw_flags):,} objects, Checkov {len(ck_flags):,}: {verdict} set "
            f"(file + Kind.namespace.name). Only costwarden: {len(only_cw)}; only Checkov: {len(only_ck)}. "
            f"costwarden {POLICY} alone: {cw_summary['fail']:,} fail, {cw_summary['pass']:,} pass, "
            f"{cw_summary['skip']:,} skip; flagged kinds: "
            + ", ".join(f"{k} {c}" for k, c in flagged_kinds.most_common()) + "."
        )
        for file, res in (only_cw[:5] + only_ck[:5]):
            side = "costwarden only" if (file, res) in cw_flags else "Checkov only"
            lines.append(f"  - {side}: `{file}` {res}")
    same = full_flags == cw_flags
    lines.append(
        f"- Full library vs {POLICY} alone: {POLICY} failures {'identical' if same else 'DIFFER'} "
        f"({len(full_flags):,} vs {len(cw_flags):,}); full-library summary: "
        + ", ".join(f"{k} {full_summary[k]:,}" for k in ("subjects", "fail", "warn", "pass", "skip"))
        + f"; single-policy subjects {cw_summary['subjects']:,}."
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
