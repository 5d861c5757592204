"""The CI gate: find input files, turn them into subjects, judge them, and decide the exit status.

``run_check`` returns a :class:`CheckReport` that every reporter renders; the gate fails when any
enforced (``deny``) result is not accepted by the baseline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from costwarden.adapters.helm import HelmSource, chart_file, template_at, template_sources
from costwarden.adapters.sources import config_maps_in, decode_text, read_text, subjects_from_text
from costwarden.engine.decision import Decision, RuleResult, SubjectRef, Surface
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import Subject
from costwarden.errors import CostwardenError, UnrecognizedInput

INPUT_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl")
SKIP_DIRS = frozenset({".git", ".venv", "node_modules", "__pycache__", ".terraform", ".mypy_cache"})
REPORT_SCHEMA = "costwarden.dev/check-report/v1"


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule result on one subject, with a stable fingerprint for baselines."""

    decision: Decision
    result: RuleResult
    accepted: bool = False

    @property
    def fingerprint(self) -> str:
        """Stable across runs and line moves: file, subject identity, policy, rule and the examined path
        (not the message, which carries amounts that drift). The file as the reports show it, relative
        to the working directory: ``./k8s/a.yaml``, ``k8s/a.yaml`` and its absolute path are one file."""
        s = self.decision.subject
        file = _same_file(s.file, os.getcwd()) if s.file else s.file
        key = "|".join(
            str(x) for x in (file, s.type, s.provider, s.kind, s.namespace, s.name, self.result.policy,
                             self.result.rule, self.result.path)
        )
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def is_blocking(self) -> bool:
        return self.result.is_blocking and not self.accepted


@dataclass
class InputError:
    file: str
    line: int | None
    message: str


@dataclass
class CheckReport:
    """Everything a check run found; reporters render it, the gate reads ``exit_code``."""

    surface: Surface
    decisions: list[Decision] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    started: datetime | None = None
    policies: int = 0
    helm_sources: dict[tuple[str, int], HelmSource] = field(default_factory=dict)
    """The Helm template of each rendered object, by its file and line (``helm template`` output)."""

    def helm_source(self, subject: SubjectRef) -> HelmSource | None:
        """The Helm template ``subject`` was rendered from, when its input said (``# Source:``)."""
        if subject.file is None or subject.line is None or not self.helm_sources:
            return None
        return self.helm_sources.get((subject.file, subject.line))

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.is_blocking]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 1 if self.blocking else 0

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
        for d in self.decisions:
            for r in d.results:
                counts[r.result] += 1
        counts.update(
            subjects=len(self.decisions), files=len(self.files) - len(self.skipped), skipped_files=len(self.skipped),
            blocking=len(self.blocking),
            accepted=sum(f.accepted for f in self.findings), input_errors=len(self.errors),
        )
        return counts


def iter_inputs(paths: Sequence[str]) -> Iterator[str]:
    """Files to check: explicit files as given, folders walked for YAML/JSON (sorted)."""
    for raw in paths:
        if raw == "-" or (os.path.exists(raw) and not os.path.isdir(raw)):
            yield raw  # a named pipe too: `costwarden check <(helm template .)`
            continue
        for root, dirs, files in os.walk(raw):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            if "Chart.yaml" in files:
                # A Helm chart's templates are not YAML until rendered: check `helm template ... | costwarden
                # check -` instead. Its values files are read (vLLM production-stack values, for example).
                dirs[:] = [d for d in dirs if d not in ("templates", "charts")]
                files = [f for f in files if f != "Chart.yaml"]
            for name in sorted(files):
                path = os.path.join(root, name)
                if not name.endswith(INPUT_SUFFIXES) or name == "tests.yaml":
                    continue
                if os.path.exists(path) and not os.path.isfile(path):
                    continue  # a FIFO, socket or device found by the walk: reading it could block forever
                yield path


def run_check(paths: Sequence[str], policies: PolicySet, *, surface: Surface = "ci", include_all: bool = False,
              baseline: Iterable[str] = (), progress: Callable[[int, int], None] | None = None,
              stdin: Any = None) -> CheckReport:
    """Judge every subject found under ``paths``. Input errors are collected, never fatal."""
    report = CheckReport(surface=surface, started=datetime.now().astimezone(), policies=len(policies))
    accepted = set(baseline)
    files = _unique(iter_inputs(paths))
    named = {os.path.abspath(p) for p in paths if p != "-"}
    for missing in (p for p in paths if p != "-" and not os.path.exists(p)):
        report.errors.append(InputError(missing, None, "no such file or directory"))
    # a workload's --config file may be mounted from a ConfigMap in another file of the run
    config_maps = config_maps_in(f for f in files if f != "-" and os.path.isfile(f))
    for index, file in enumerate(files):
        report.files.append(file)
        explicit = file == "-" or os.path.abspath(file) in named
        try:
            name = "<stdin>" if file == "-" else file
            text = _read_stdin(stdin) if file == "-" else read_text(file)
            subjects = subjects_from_text(text, file=name, include_all=include_all, config_maps=config_maps)
            report.helm_sources.update(_helm_sources(text, name, subjects))
        except UnrecognizedInput as exc:
            if explicit:
                report.errors.append(InputError(file, getattr(exc, "line", None), _message(exc)))
            else:
                report.skipped.append(file)
            subjects = []
        except CostwardenError as exc:
            report.errors.append(InputError(getattr(exc, "file", None) or file, getattr(exc, "line", None),
                                            _message(exc)))
            subjects = []
        for subject in subjects:
            decision = policies.evaluate(subject, surface)
            report.decisions.append(decision)
            for result in decision.results:
                if result.result in ("fail", "warn", "error"):
                    finding = Finding(decision, result)
                    if finding.fingerprint in accepted:
                        finding = Finding(decision, result, accepted=True)
                    report.findings.append(finding)
        if progress is not None:
            progress(index + 1, len(files))
    return report


def _helm_sources(text: str, file: str, subjects: Sequence[Subject]) -> dict[tuple[str, int], HelmSource]:
    """The template each rendered object came from, where ``helm template`` wrote it."""
    sources = template_sources(text)
    out: dict[tuple[str, int], HelmSource] = {}
    for subject in subjects if sources else ():
        line, kind = subject.source.line, getattr(subject, "kind", "")
        template = template_at(sources, line)
        if template is not None and line is not None and (file, line) not in out:
            out[(file, line)] = chart_file(template, kind)
    return out


def _unique(files: Iterable[str]) -> list[str]:
    """Each file once, as first named: ``check k8s k8s/job.yaml`` or ``check . ./k8s`` read a file once."""
    seen: dict[str, str] = {}
    for file in files:
        seen.setdefault(file if file == "-" else os.path.abspath(file), file)
    return list(seen.values())


@functools.lru_cache(maxsize=4096)
def _same_file(file: str, cwd: str) -> str:
    """``file`` as the reports name it (relative to ``cwd``, the working directory, when below it)."""
    from costwarden.enforcers.reporters import relative_path

    return relative_path(file)


def _read_stdin(stream: Any) -> str:
    """Standard input as text, decoded as files are; other bytes are an input error, not a traceback."""
    stream = stream or sys.stdin
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return str(stream.read())
    return decode_text(bytes(raw.read()), "<stdin>")


def _message(exc: CostwardenError) -> str:
    """The error's message without the ``file:line:`` prefix an AdapterError puts in front of it."""
    message = str(exc)
    file, line = getattr(exc, "file", None), getattr(exc, "line", None)
    where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
    if where and message.startswith(where):
        return message[len(where):]
    return _strip_location(message)


def _strip_location(message: str) -> str:
    head, sep, rest = message.partition(": ")
    return rest if sep and (head.endswith(tuple("0123456789")) or os.path.exists(head.split(":")[0])) else message


def write_baseline(report: CheckReport, path: str | Path) -> int:
    """Record every current violation so later runs fail only on new ones. Returns the count."""
    entries = sorted({
        (f.fingerprint, f.result.policy, f.result.rule, f.decision.subject.file or "", f.decision.subject.name)
        for f in report.findings
    })
    payload = {
        "schema": "costwarden.dev/baseline/v1",
        "findings": [{"fingerprint": fp, "policy": p, "rule": r, "file": fl, "subject": n}
                     for fp, p, r, fl, n in entries],
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return len(entries)


def read_baseline(path: str | Path) -> set[str]:
    """Fingerprints from a baseline file; raises CostwardenError with the file for a bad one."""
    from costwarden.errors import AdapterError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {str(item["fingerprint"]) for item in data["findings"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"not a costwarden baseline: {exc}", file=str(path)) from exc


__all__ = ["REPORT_SCHEMA", "CheckReport", "Finding", "InputError", "iter_inputs", "read_baseline",
           "run_check", "write_baseline"]
