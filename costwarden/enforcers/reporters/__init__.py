"""Report formats for ``costwarden check``: one module per format, imported only when asked for.

``REPORTERS`` maps a format name to ``"module:function"``; every function has the signature of
:class:`Reporter` and returns the whole report as text. Adding a format is a module, one line here
and its tests::

    from costwarden.enforcers.reporters import render

    print(render("sarif", report))          # report: a costwarden.enforcers.ci.CheckReport

The helpers below are what every format shares: each result paired with its baseline state, and
the few ways a report spells paths and dollars.
"""

from __future__ import annotations

import importlib
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import quote

from costwarden.errors import CostwardenError

if TYPE_CHECKING:
    from costwarden.enforcers.ci import CheckReport, Finding
    from costwarden.engine.decision import RuleResult, SubjectRef

REPORTERS: dict[str, str] = {
    "github": "costwarden.enforcers.reporters.github:render",
    "json": "costwarden.enforcers.reporters.json:render",
    "junit": "costwarden.enforcers.reporters.junit:render",
    "policyreport": "costwarden.enforcers.reporters.policyreport:render",
    "sarif": "costwarden.enforcers.reporters.sarif:render",
    "text": "costwarden.enforcers.reporters.text:render",
}

VIOLATIONS = ("fail", "warn", "error")
"""The results a report lists one by one; ``pass`` and ``skip`` are only counted."""


class Reporter(Protocol):
    """A report format: the whole report as one string (``color`` matters only to terminals)."""

    def __call__(self, report: CheckReport, *, color: bool = False) -> str: ...


def render(fmt: str, report: CheckReport, *, color: bool = False) -> str:
    """Render ``report`` in format ``fmt``; an unknown format raises CostwardenError naming the valid ones."""
    target = REPORTERS.get(fmt)
    if target is None:
        raise CostwardenError(f"unknown report format {fmt!r}; formats: {', '.join(sorted(REPORTERS))}")
    module, _, function = target.partition(":")
    reporter = cast(Reporter, getattr(importlib.import_module(module), function))
    return reporter(report, color=color)


def every_result(report: CheckReport) -> Iterator[Finding]:
    """Every rule result of every decision, passes and skips included, in report order.

    Violations come back as the report's own findings (so their baseline state is kept); the rest
    are wrapped in a fresh, never-accepted Finding.
    """
    from costwarden.enforcers.ci import Finding

    known = {(id(f.decision), id(f.result)): f for f in report.findings}
    for decision in report.decisions:
        for result in decision.results:
            yield known.get((id(decision), id(result))) or Finding(decision, result)


def violations(report: CheckReport) -> list[Finding]:
    """The findings a report lists: fail, warn and error results (accepted ones included)."""
    return [f for f in report.findings if f.result.result in VIOLATIONS]


def relative_path(file: str) -> str:
    """``file`` relative to the working directory with forward slashes, when it lies below it."""
    path = file.replace("\\", "/")
    if os.path.isabs(file):
        try:
            path = Path(file).resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return Path(file).as_posix()
    normal = posixpath.normpath(path)
    return normal if normal != "." else path


def host_path(file: str) -> str:
    """``file`` as a CI host names it: relative to ``$GITHUB_WORKSPACE`` when that is set and the
    file lies below it, else :func:`relative_path`. GitHub resolves an annotation's ``file`` and a
    SARIF result's relative URI against the repository root, not against the directory the check
    ran in (``working-directory: infra`` put every finding on a file that does not exist)."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if workspace:
        try:
            return Path(os.path.abspath(file)).resolve().relative_to(Path(workspace).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    return relative_path(file)


def artifact_uri(file: str) -> tuple[str, bool]:
    """A URI for ``file`` and whether it is relative to the source root (``%SRCROOT%``, the
    repository root on GitHub: see :func:`host_path`)."""
    path = host_path(file)
    if os.path.isabs(path) or path.startswith("../"):
        return Path(os.path.abspath(file)).as_uri(), False
    return quote(path, safe="/"), True


def usd(amount: float) -> str:
    """Dollars for people: ``$1,234.50``, ``$0.0042`` (sub-dollar amounts keep their digits)."""
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    digits = f"{amount:.6f}".rstrip("0").rstrip(".")
    return f"${digits if digits not in ('', '-0') else '0'}"


def savings_text(result: RuleResult) -> str:
    """``~$120.00/month``, ``~$0.004/call``, both joined by a comma, or an empty string."""
    parts = []
    if result.savings_usd_month:
        parts.append(f"~{usd(result.savings_usd_month)}/month")
    if result.savings_usd_per_call:
        parts.append(f"~{usd(result.savings_usd_per_call)}/call")
    return ", ".join(parts)


def monthly_savings(report: CheckReport) -> float:
    """What fixing every listed violation would save per month (per-call savings are not summed in)."""
    return sum(f.result.savings_usd_month or 0.0 for f in violations(report))


def subject_label(s: SubjectRef) -> str:
    """``Deployment ml/llm-server``: kind, then namespace/name."""
    name = s.name or "-"
    return f"{s.kind} {s.namespace}/{name}" if s.namespace else f"{s.kind} {name}"


__all__ = [
    "REPORTERS",
    "VIOLATIONS",
    "Reporter",
    "artifact_uri",
    "every_result",
    "host_path",
    "monthly_savings",
    "relative_path",
    "render",
    "savings_text",
    "subject_label",
    "usd",
    "violations",
]
