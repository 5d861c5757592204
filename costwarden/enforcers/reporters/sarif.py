"""SARIF 2.1.0 for code-scanning dashboards (GitHub code scanning, Azure DevOps, VS Code viewers).

One run; ``tool.driver.rules`` holds one reportingDescriptor per ``policy/rule`` seen. Each
violation becomes a result whose ``level`` follows its effect (deny → ``error``, warn → ``warning``,
audit → ``note``), located at ``%SRCROOT%``-relative URIs, with the baseline fingerprint in
``partialFingerprints["costwarden/v1"]`` and an ``external`` suppression when the baseline accepts it.
Input errors become ``toolExecutionNotifications`` and make ``executionSuccessful`` false.

GitHub code scanning rejects a whole upload whose run has more than :data:`MAX_RESULTS` (25,000)
results, so a larger report keeps the 25,000 that matter most — not baseline-accepted first, then
by level (error, warning, note) — in report order, and says in a warning notification how many it
left out (the JSON report lists every one).
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from typing import Any

import costwarden
from costwarden.adapters.helm import HelmSource
from costwarden.enforcers.ci import CheckReport, Finding, InputError
from costwarden.enforcers.reporters import artifact_uri, savings_text, subject_label, violations
from costwarden.engine.decision import RuleResult, SubjectRef

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
INFORMATION_URI = "https://github.com/costwarden/costwarden"
FINGERPRINT_KEY = "costwarden/v1"
SRCROOT = "%SRCROOT%"
MAX_RESULTS = 25_000
"""GitHub code scanning's hard limit on the results of one run."""

_LEVEL_BY_EFFECT = {"deny": "error", "warn": "warning", "audit": "note", "off": "none"}


def render(report: CheckReport, *, color: bool = False) -> str:
    """The SARIF log as indented JSON, ending in a newline."""
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False) + "\n"


def to_dict(report: CheckReport) -> dict[str, Any]:
    """The SARIF log as plain data."""
    findings, left_out = _most_important(violations(report))
    rules: dict[str, int] = {}
    descriptors: list[dict[str, Any]] = []
    for f in findings:
        rule_id = f"{f.result.policy}/{f.result.rule}"
        if rule_id not in rules:
            rules[rule_id] = len(descriptors)
            descriptors.append(_descriptor(f.result, report.surface))
    driver = {
        "name": "costwarden",
        "version": costwarden.__version__,
        "semanticVersion": costwarden.__version__,
        "informationUri": INFORMATION_URI,
        "rules": descriptors,
    }
    run = {
        "tool": {"driver": driver},
        "invocations": [_invocation(report, left_out)],
        "results": [_result(f, rules, report.helm_source(f.decision.subject)) for f in findings],
        "properties": {"surface": report.surface, "summary": report.summary()},
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def level(result: RuleResult) -> str:
    """The SARIF level of a result: a ``warn`` result warns whatever its policy's effect."""
    return "warning" if result.result == "warn" else _LEVEL_BY_EFFECT[result.effect]


def _descriptor(r: RuleResult, surface: str) -> dict[str, Any]:
    return {
        "id": f"{r.policy}/{r.rule}",
        "name": _pascal(f"{r.policy} {r.rule}"),
        "shortDescription": {"text": f"costwarden policy {r.policy}, rule {r.rule}"},
        "fullDescription": {
            "text": f"Rule '{r.rule}' of the costwarden policy '{r.policy}' "
                    f"(severity {r.severity}, effect {r.effect} on the {surface} surface)."
        },
        "defaultConfiguration": {"level": _LEVEL_BY_EFFECT[r.effect]},
        "properties": {"tags": ["costwarden", "cost", r.severity], "severity": r.severity, "effect": r.effect},
    }


def _result(f: Finding, rules: dict[str, int], helm: HelmSource | None) -> dict[str, Any]:
    r, s = f.result, f.decision.subject
    rule_id = f"{r.policy}/{r.rule}"
    text = message_text(f) + (f" (rendered from the Helm template {helm.template})" if helm else "")
    out: dict[str, Any] = {
        "ruleId": rule_id,
        "ruleIndex": rules[rule_id],
        "level": level(r),
        "message": {"text": text},
        "locations": [_location(s, helm)],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
        "properties": _properties(f),
    }
    if helm is not None:
        out["properties"]["helmTemplate"] = helm.template
        if helm.file and s.file and s.file not in ("-", "<stdin>"):
            out["relatedLocations"] = [{"id": 1, "physicalLocation": _physical(s.file, s.line),
                                        "message": {"text": "the rendered object"}}]
    if f.accepted:
        out["suppressions"] = [{"kind": "external", "state": "accepted",
                                "justification": "accepted by the costwarden baseline"}]
    return out


def message_text(f: Finding) -> str:
    """``Job ml/train: <message> Fix: <fix>. Saves ~$120.00/month.``"""
    r = f.result
    text = f"{subject_label(f.decision.subject)}: {r.message}"
    if r.fix is not None:
        text += f" Fix: {r.fix.description}"
    saving = savings_text(r)
    if saving:
        text += f" Saves {saving}."
    return text


def _location(s: SubjectRef, helm: HelmSource | None) -> dict[str, Any]:
    """The subject's place: the Helm template it was rendered from when found in the working tree
    (at its ``kind:`` line when that is unambiguous, else the whole file: Helm renders whole
    documents, so no line in the template is known), else the input file and line."""
    location: dict[str, Any] = {
        "logicalLocations": [{
            "name": s.name or s.kind,
            "fullyQualifiedName": "/".join(x for x in (s.provider, s.kind, s.namespace, s.name) if x),
            "kind": "resource",
        }],
    }
    if helm is not None and helm.file:
        location["physicalLocation"] = _physical(helm.file, helm.line, region=helm.line is not None)
    elif s.file and s.file not in ("-", "<stdin>"):
        location["physicalLocation"] = _physical(s.file, s.line)
    return location


def _physical(file: str, line: int | None, *, region: bool = True) -> dict[str, Any]:
    uri, relative = artifact_uri(file)
    artifact: dict[str, Any] = {"uri": uri}
    if relative:
        artifact["uriBaseId"] = SRCROOT
    out: dict[str, Any] = {"artifactLocation": artifact}
    if region:
        out["region"] = {"startLine": max(line or 1, 1)}
    return out


def _properties(f: Finding) -> dict[str, Any]:
    r, s = f.result, f.decision.subject
    props: dict[str, Any] = {
        "result": r.result, "effect": r.effect, "severity": r.severity, "blocking": f.is_blocking,
        "subject": {"type": s.type, "provider": s.provider, "kind": s.kind, "name": s.name,
                    "namespace": s.namespace, "pointer": s.pointer},
    }
    if r.path:
        props["path"] = r.path
    if r.fix is not None:
        props["fix"] = r.fix.to_dict()
    if r.savings_usd_month is not None:
        props["savingsUsdPerMonth"] = r.savings_usd_month
    if r.savings_usd_per_call is not None:
        props["savingsUsdPerCall"] = r.savings_usd_per_call
    return props


_LEVEL_RANK = {"error": 0, "warning": 1, "note": 2, "none": 3}


def _most_important(findings: list[Finding]) -> tuple[list[Finding], int]:
    """At most :data:`MAX_RESULTS` findings, in report order, and how many were left out."""
    if len(findings) <= MAX_RESULTS:
        return findings, 0
    rank = [(f.accepted, _LEVEL_RANK[level(f.result)], i) for i, f in enumerate(findings)]
    kept = sorted(i for _, _, i in sorted(rank)[:MAX_RESULTS])
    return [findings[i] for i in kept], len(findings) - MAX_RESULTS


def _invocation(report: CheckReport, left_out: int = 0) -> dict[str, Any]:
    notifications = [_notification(e) for e in report.errors]
    if left_out:
        notifications.append({"level": "warning", "message": {"text": (
            f"{left_out} more result{'s' if left_out != 1 else ''} left out: GitHub code scanning rejects a run "
            f"of more than {MAX_RESULTS:,} results (kept: not accepted by the baseline first, then by level); "
            "the json format lists them all")}})
    invocation: dict[str, Any] = {
        "executionSuccessful": not report.errors,
        "exitCode": report.exit_code,
        "toolExecutionNotifications": notifications,
    }
    if report.started is not None:
        invocation["startTimeUtc"] = report.started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return invocation


def _notification(error: InputError) -> dict[str, Any]:
    note: dict[str, Any] = {"level": "error", "message": {"text": error.message}}
    if error.file and error.file not in ("-", "<stdin>"):
        note["locations"] = [{"physicalLocation": _physical(error.file, error.line)}]
    return note


def _pascal(text: str) -> str:
    """``gpu-spot require_spot`` → ``GpuSpotRequireSpot`` (SARIF's advice for a rule's friendly name)."""
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^0-9A-Za-z]+", text) if word)


__all__ = ["FINGERPRINT_KEY", "INFORMATION_URI", "MAX_RESULTS", "SARIF_SCHEMA", "SARIF_VERSION", "level",
           "message_text", "render", "to_dict"]
