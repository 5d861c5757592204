"""``wgpolicyk8s.io/v1alpha2`` PolicyReports, the format Kyverno and policy-reporter read.

One ``PolicyReport`` named ``costwarden-<namespace>`` per Kubernetes namespace, and one
``ClusterPolicyReport`` named ``costwarden-cluster`` for cluster-scoped and non-Kubernetes subjects
(a Terraform resource, an LLM call), as a multi-document YAML stream ready for ``kubectl apply``.
Every result is listed, passes and skips too, as PolicyReports do.

The v1alpha2 CRD allows only ``low``, ``medium`` and ``high`` severities, so ``info`` becomes ``low``
and ``critical`` becomes ``high``; the exact severity stays in ``properties.severity``. ``properties``
values are strings (the CRD says so). A resource reference carries no ``apiVersion``: a subject does
not record it, and a guessed one would be wrong for every CRD-backed kind.
"""

from __future__ import annotations

from typing import Any

import yaml

from costwarden.enforcers.ci import CheckReport, Finding
from costwarden.enforcers.reporters import every_result
from costwarden.engine.decision import RESULTS

API_VERSION = "wgpolicyk8s.io/v1alpha2"
SOURCE = "costwarden"
CLUSTER_REPORT_NAME = "costwarden-cluster"
SEVERITY = {"info": "low", "low": "low", "medium": "medium", "high": "high", "critical": "high"}


def render(report: CheckReport, *, color: bool = False) -> str:
    """The reports as a YAML stream (an empty string when nothing was checked)."""
    docs = reports(report)
    if not docs:
        return ""
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)


def reports(report: CheckReport) -> list[dict[str, Any]]:
    """One PolicyReport per namespace (sorted), then the ClusterPolicyReport if any subject needs it."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for finding in every_result(report):
        groups.setdefault(_namespace(finding), []).append(result(finding, report))
    namespaced = sorted(ns for ns in groups if ns is not None)
    docs = [_report(groups[ns], ns) for ns in namespaced]
    if None in groups:
        docs.append(_report(groups[None], None))
    return docs


def result(f: Finding, report: CheckReport) -> dict[str, Any]:
    """One ``results[]`` entry."""
    r, s = f.result, f.decision.subject
    resource = {"kind": s.kind, "name": s.name}
    if s.namespace and s.provider == "kubernetes":
        resource["namespace"] = s.namespace
    out: dict[str, Any] = {
        "policy": r.policy,
        "rule": r.rule,
        "result": r.result,
        "severity": SEVERITY[r.severity],
        "message": r.message,
        "source": SOURCE,
        "scored": True,
    }
    if report.started is not None:
        out["timestamp"] = {"seconds": int(report.started.timestamp()), "nanos": report.started.microsecond * 1000}
    out["resources"] = [resource]
    out["properties"] = _properties(f)
    return out


def _properties(f: Finding) -> dict[str, str]:
    r, s = f.result, f.decision.subject
    props = {"effect": r.effect, "severity": r.severity, "provider": s.provider, "subjectType": s.type}
    optional = {
        "fix": r.fix.description if r.fix else None,
        "savingsUsdPerMonth": _amount(r.savings_usd_month),
        "savingsUsdPerCall": _amount(r.savings_usd_per_call),
        "exemption": r.exemption,
        "path": r.path,
        "file": s.file,
        "line": str(s.line) if s.line else None,
        "namespace": s.namespace if s.provider != "kubernetes" else None,
    }
    props.update({k: v for k, v in optional.items() if v})
    if r.result in ("fail", "warn", "error"):
        props["fingerprint"] = f.fingerprint
        props["accepted"] = "true" if f.accepted else "false"
        props["blocking"] = "true" if f.is_blocking else "false"
    return props


def _report(results: list[dict[str, Any]], namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"costwarden-{namespace}" if namespace else CLUSTER_REPORT_NAME}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/managed-by": "costwarden"}
    summary = dict.fromkeys(RESULTS, 0)
    for item in results:
        summary[item["result"]] += 1
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport" if namespace else "ClusterPolicyReport",
        "metadata": metadata,
        "summary": summary,
        "results": results,
    }


def _namespace(f: Finding) -> str | None:
    s = f.decision.subject
    return s.namespace if s.provider == "kubernetes" and s.namespace else None


def _amount(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


__all__ = ["API_VERSION", "CLUSTER_REPORT_NAME", "SEVERITY", "reports", "render", "result"]
