"""Checkov custom check equivalent to costwarden's built-in ``require-cost-tags`` policy.

Loaded by ``benchmarks/check.py`` through ``checkov --external-checks-dir benchmarks/checkov_policies
--check CKV_K8S_COST_TAGS``. The same rule, kind for kind:

* kinds: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, RayJob, RayCluster,
  RayService, InferenceService, LeaderWorkerSet, PyTorchJob, JobSet;
* labels judged: the pod template's for the built-in controllers (``spec.template.metadata.labels``;
  ``spec.jobTemplate.spec.template.metadata.labels`` for CronJob), ``metadata.labels`` otherwise;
* ``team``, ``feature`` and ``environment`` present and non-empty, ``environment`` matching
  ``^(prod|staging|dev)$`` (searched); label values compared as strings (``true`` → ``"true"``);
* objects in kube-system, kube-public and kube-node-lease are not judged (UNKNOWN, never reported).

A Python check rather than a YAML (graph) policy: the label map moves with the kind, and the graph
also sees the pod templates Checkov extracts from controllers as extra ``Pod`` vertices, which a
``resource_types: [Pod]`` attribute policy would judge a second time.
"""

from __future__ import annotations

import re
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

KINDS = (
    "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "RayJob", "RayCluster",
    "RayService", "InferenceService", "LeaderWorkerSet", "PyTorchJob", "JobSet",
)
TEMPLATE_LABELS = {
    "Deployment": ("spec", "template", "metadata", "labels"),
    "StatefulSet": ("spec", "template", "metadata", "labels"),
    "DaemonSet": ("spec", "template", "metadata", "labels"),
    "ReplicaSet": ("spec", "template", "metadata", "labels"),
    "Job": ("spec", "template", "metadata", "labels"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "metadata", "labels"),
}
OWN_LABELS = ("metadata", "labels")
REQUIRED = ("team", "feature", "environment")
VALUES = {"environment": re.compile(r"^(prod|staging|dev)$")}
EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _at(conf: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        conf = conf.get(key) if isinstance(conf, dict) else None
    return conf


class RequireCostTags(BaseK8Check):
    def __init__(self) -> None:
        super().__init__(
            name="Cost allocation labels team, feature and environment are set on workloads",
            id="CKV_K8S_COST_TAGS",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_entities=KINDS,
        )

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        if _text(_at(conf, ("metadata", "namespace"))) in EXCLUDED_NAMESPACES:
            return CheckResult.UNKNOWN
        found = _at(conf, TEMPLATE_LABELS.get(_text(conf.get("kind")), OWN_LABELS))
        labels = {str(k): _text(v) for k, v in found.items()} if isinstance(found, dict) else {}
        if any(not labels.get(key) for key in REQUIRED):
            return CheckResult.FAILED
        if any(not rx.search(labels[key]) for key, rx in VALUES.items()):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = RequireCostTags()
