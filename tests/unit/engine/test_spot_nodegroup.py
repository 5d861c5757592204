"""spotOnly on pods pinned to a named node group / node pool.

A node group's capacity type is a property of the group, which the manifest does not show. Adding
a spot label to a pod pinned to an on-demand group (or, with Karpenter's label, to a managed node
group whose nodes never carry it) leaves the pod Pending forever, so the fix must not add one; the
finding says why and what to do instead.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from policy_support import CompilePolicies

from costwarden.adapters import kubernetes as k8s
from costwarden.engine import patch
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import subject_from_dict


def policy(fix: str) -> str:
    return ("apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: resource\n"
            f"  rules:\n    - name: r\n      spotOnly: {{workloadClasses: [batch]{fix}}}\n")


def job(pod: dict[str, Any]) -> dict[str, Any]:
    spec = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x",
                                                      "resources": {"limits": {"nvidia.com/gpu": 1}}}], **pod}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
            "spec": {"template": {"spec": spec}}}


POOLS = [
    ("eks.amazonaws.com/nodegroup", "gpu-ondemand", "eks.amazonaws.com/capacityType: 'SPOT'"),
    ("cloud.google.com/gke-nodepool", "gpu-pool", "cloud.google.com/gke-spot: 'true'"),
    ("kubernetes.azure.com/agentpool", "gpupool", "kubernetes.azure.com/scalesetpriority: 'spot'"),
    ("karpenter.sh/nodepool", "gpu", "karpenter.sh/capacity-type: 'spot'"),
]


@pytest.mark.parametrize("fix", [", fix: {platform: auto}", ", fix: {platform: karpenter}", ""])
@pytest.mark.parametrize(("key", "name", "hint"), POOLS)
def test_a_pod_pinned_to_a_named_pool_gets_no_spot_label(compile_policies: CompilePolicies, fix: str,
                                                           key: str, name: str, hint: str) -> None:
    ps = compile_policies(policy(fix))
    [subject] = k8s.subjects_from_object(job({"nodeSelector": {key: name}}))
    [r] = ps.evaluate(subject).results
    assert (r.result, r.actual) == ("fail", "unknown")
    assert r.fix is None
    assert f"{key}={name}" in r.message
    assert "cannot be known from the manifest" in r.message
    assert hint in r.message


def test_a_pool_pinned_by_every_required_affinity_term_counts(compile_policies: CompilePolicies) -> None:
    term = {"matchExpressions": [{"key": "eks.amazonaws.com/nodegroup", "operator": "In", "values": ["gpu-a"]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    [subject] = k8s.subjects_from_object(job({"affinity": affinity}))
    [r] = compile_policies(policy(", fix: {platform: eks}")).evaluate(subject).results
    assert r.fix is None
    assert "eks.amazonaws.com/nodegroup=gpu-a" in r.message


def test_a_pool_pinned_spot_workload_passes(compile_policies: CompilePolicies) -> None:
    selector = {"eks.amazonaws.com/nodegroup": "gpu-spot", "eks.amazonaws.com/capacityType": "SPOT"}
    [subject] = k8s.subjects_from_object(job({"nodeSelector": selector}))
    [r] = compile_policies(policy(", fix: {platform: auto}")).evaluate(subject).results
    assert r.result == "pass"


def test_unpinned_pod_specs_of_the_same_object_are_still_fixed(compile_policies: CompilePolicies) -> None:
    ray = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "r"}, "spec": {"rayClusterSpec": {
        "headGroupSpec": {"template": {"spec": {"nodeSelector": {"cloud.google.com/gke-nodepool": "cpu"},
                                                "containers": [{"name": "head"}]}}},
        "workerGroupSpecs": [{"replicas": 2, "template": {"spec": {"containers": [
            {"name": "w", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}]}}}
    [subject] = k8s.subjects_from_object(ray)
    [r] = compile_policies(policy(", fix: {platform: gke}")).evaluate(subject).results
    assert r.result == "fail" and r.fix is not None
    fixed = jsonpatch.apply_patch(copy.deepcopy(ray), [dict(op) for op in r.fix.patch])
    head, worker = subject.pod_spec_pointers
    assert patch.resolve(fixed, head + "/nodeSelector") == {"cloud.google.com/gke-nodepool": "cpu"}
    assert patch.resolve(fixed, worker + "/nodeSelector") == {"cloud.google.com/gke-spot": "true"}


def test_pinned_and_unpinned_subjects_with_the_same_workload_are_told_apart(compile_policies: CompilePolicies,
                                                                           ) -> None:
    """The outcome of a subject without raw object is cached per workload; one with a pinned pod
    spec must not be served that cached message (nor the other way round)."""
    ps: PolicySet = compile_policies(policy(""))
    [pinned] = k8s.subjects_from_object(job({"nodeSelector": {"eks.amazonaws.com/nodegroup": "ng"}}))
    [plain] = k8s.subjects_from_object(job({}))
    bare = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train",
                              "workload": {"class": "batch", "gpus": 1.0}})
    for subject in (bare, plain, pinned, bare, pinned, plain):
        [r] = ps.evaluate(subject).results
        assert ("nodegroup" in r.message) is (subject is pinned), r.message
