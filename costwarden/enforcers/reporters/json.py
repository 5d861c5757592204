"""The machine-readable report, schema ``costwarden.dev/check-report/v1``.

The schema, its field meanings and its versioning rule are documented in
``docs/check-report-schema.md``; change that page with this module. By default ``results`` lists
only violations (``fail``, ``warn``, ``error``); ``summary`` counts every result::

    data = to_dict(report, include_passes=True)   # every result, passes and skips too
"""

from __future__ import annotations

import json
from typing import Any

import costwarden
from costwarden.adapters.helm import HelmSource
from costwarden.enforcers.ci import REPORT_SCHEMA, CheckReport, Finding, InputError
from costwarden.enforcers.reporters import every_result, violations
from costwarden.engine.decision import SubjectRef


def render(report: CheckReport, *, color: bool = False) -> str:
    """The report as indented JSON (UTF-8 text, not ASCII-escaped), ending in a newline."""
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False) + "\n"


def to_dict(report: CheckReport, *, include_passes: bool = False) -> dict[str, Any]:
    """The report as plain data; ``include_passes`` lists pass and skip results as well."""
    findings = list(every_result(report)) if include_passes else violations(report)
    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "costwarden", "version": costwarden.__version__},
        "surface": report.surface,
        "started": report.started.isoformat() if report.started else None,
        "policies": report.policies,
        "summary": report.summary(),
        "results": [result_dict(f, report.helm_source(f.decision.subject)) for f in findings],
        "errors": [error_dict(e) for e in report.errors],
        "skipped_files": list(report.skipped),
    }


def result_dict(finding: Finding, helm: HelmSource | None = None) -> dict[str, Any]:
    """One result with its subject, source position (and the Helm template it was rendered
    from: ``template`` as Helm names it, ``template_file`` in the working tree), fix, savings and
    baseline state."""
    r = finding.result
    s = finding.decision.subject
    plain = r.to_dict()
    return {
        "policy": r.policy,
        "rule": r.rule,
        "result": r.result,
        "effect": r.effect,
        "severity": r.severity,
        "message": r.message,
        "subject": {"type": s.type, "provider": s.provider, "kind": s.kind, "name": s.name, "namespace": s.namespace},
        "source": _source(s, helm),
        "path": r.path,
        "expected": plain["expected"],
        "actual": plain["actual"],
        "exemption": r.exemption,
        "fix": r.fix.to_dict() if r.fix else None,
        "savings_usd_month": r.savings_usd_month,
        "savings_usd_per_call": r.savings_usd_per_call,
        "fingerprint": finding.fingerprint,
        "accepted": finding.accepted,
        "blocking": finding.is_blocking,
    }


def _source(s: SubjectRef, helm: HelmSource | None) -> dict[str, Any]:
    """Where the subject came from; a Helm-rendered object adds its ``template`` (as Helm names it)
    and ``template_file`` (that template in the working tree, or null when not found there)."""
    source: dict[str, Any] = {"file": s.file, "line": s.line, "pointer": s.pointer}
    if helm is not None:
        source |= {"template": helm.template, "template_file": helm.file}
    return source


def error_dict(error: InputError) -> dict[str, Any]:
    return {"file": error.file, "line": error.line, "message": error.message}


__all__ = ["error_dict", "render", "result_dict", "to_dict"]
