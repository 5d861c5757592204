"""The admission enforcer: AdmissionReview v1 in, the response the API server expects out."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import time
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_support import EVENTS, POLICIES, admission_review

from costwarden.enforcers.admission import (
    MAX_WARNING_CHARS,
    apply_patch,
    diff,
    parse,
    review,
)
from costwarden.engine.evaluate import PolicySet
from costwarden.errors import AdapterError

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "train", "namespace": "ml"},
    "spec": {"template": {"metadata": {}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "t", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}},
}
GOOD_LABELS = {"team": "ml", "cost.example.com/center": "research"}


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    from policy_support import compile_text

    return compile_text(POLICIES)


def response(policies: PolicySet, obj: Any, *, mutate: bool = False, **kw: Any) -> dict[str, Any]:
    out = review(policies, admission_review(obj, **kw), mutate=mutate, deadline_s=5)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    result: dict[str, Any] = out["response"]
    return result


def patched(obj: dict[str, Any], resp: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in resp:
        return obj
    assert resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"], validate=True))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


def test_denial_names_policy_rule_and_fix_and_echoes_uid(policies: PolicySet) -> None:
    resp = response(policies, JOB, uid="abc-123")
    assert resp["uid"] == "abc-123" and resp["allowed"] is False
    status = resp["status"]
    assert status["code"] == 403
    assert "[cost-labels/labels] missing required tags: team, cost.example.com/center" in status["message"]
    assert "(fix: add tags team=unassigned, cost.example.com/center=shared)" in status["message"]
    assert "[batch-on-spot/spot]" in status["message"] and "karpenter.sh/capacity-type" in status["message"]
    assert "patch" not in resp  # /validate never patches


def test_warnings_are_short_and_do_not_deny(policies: PolicySet) -> None:
    job = copy.deepcopy(JOB)
    job["spec"]["template"]["metadata"]["labels"] = GOOD_LABELS
    job["spec"]["template"]["spec"]["nodeSelector"] = {"karpenter.sh/capacity-type": "spot"}
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 3
    resp = response(policies, job)
    assert resp["allowed"] is True and "status" not in resp
    assert resp["warnings"] == ["costwarden few-gpus-per-pod/gpus: more than 2 GPUs per replica; check the job needs "
                                "them"]


def test_long_warnings_are_cut_to_120_characters(compile_policies: Any) -> None:
    wordy = compile_policies(POLICIES.split("---")[3].replace("check the job needs them", "x" * 300))
    [warning] = response(wordy, JOB)["warnings"]
    assert len(warning) == MAX_WARNING_CHARS and warning.endswith("...")


@pytest.mark.parametrize(("operation", "sub_resource"), [("DELETE", None), ("CONNECT", None),
                                                         ("UPDATE", "status"), ("UPDATE", "scale")])
def test_not_judged(policies: PolicySet, operation: str, sub_resource: str | None) -> None:
    obj = None if operation in ("DELETE", "CONNECT") else JOB
    resp = response(policies, obj, old=JOB, operation=operation, sub_resource=sub_resource)
    assert resp == {"uid": resp["uid"], "allowed": True}


def test_status_only_update_and_deletion_are_not_judged(policies: PolicySet) -> None:
    new = {**JOB, "status": {"active": 1}, "metadata": {**JOB["metadata"], "resourceVersion": "2"}}
    assert response(policies, new, old=JOB, operation="UPDATE")["allowed"] is True
    finalizing = {**JOB, "metadata": {**JOB["metadata"], "deletionTimestamp": "2026-11-30T10:00:00Z"}}
    assert response(policies, finalizing, old=JOB, operation="UPDATE")["allowed"] is True


def test_update_judges_the_new_object(policies: PolicySet) -> None:
    good = copy.deepcopy(JOB)
    good["spec"]["template"]["metadata"]["labels"] = GOOD_LABELS
    good["spec"]["template"]["spec"]["nodeSelector"] = {"karpenter.sh/capacity-type": "spot"}
    assert response(policies, good, old=JOB, operation="UPDATE")["allowed"] is True
    assert response(policies, JOB, old=good, operation="UPDATE")["allowed"] is False


def test_unknown_kinds_are_allowed(policies: PolicySet) -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "a"}}
    assert response(policies, obj, uid="w-1") == {"uid": "w-1", "allowed": True}


@pytest.mark.parametrize("body", [
    None, [], "x", {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "operation": "PATCH"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
     "request": {"uid": "u", "operation": "CREATE", "object": "None"}},
])
def test_malformed_reviews_raise_adapter_error(body: Any) -> None:
    with pytest.raises(AdapterError):
        parse(body)


def test_recorded_cloud_custodian_events(policies: PolicySet) -> None:
    if not EVENTS.is_dir():
        pytest.skip("corpora not present")
    for path in sorted(EVENTS.glob("*.json")):
        event = json.loads(path.read_text())
        out = review(policies, event, mutate=False)["response"]
        assert out["uid"] == event["request"]["uid"]
        assert out["allowed"] is False and "cost-labels/labels" in out["status"]["message"]
        fixed = patched(event["request"]["object"], review(policies, event, mutate=True)["response"])
        assert fixed["metadata"]["labels"]["cost.example.com/center"] == "shared"
        again = {**event, "request": {**event["request"], "object": fixed}}
        assert review(policies, again, mutate=False)["response"]["allowed"] is True
        assert "patch" not in review(policies, again, mutate=True)["response"]


def test_mutation_fixes_everything_escapes_and_is_idempotent(policies: PolicySet) -> None:
    resp = response(policies, JOB, mutate=True)
    assert resp["allowed"] is True
    ops = json.loads(base64.b64decode(resp["patch"]))
    paths = [op["path"] for op in ops]
    assert "/spec/template/metadata/labels" in paths or \
        "/spec/template/metadata/labels/cost.example.com~1center" in paths
    assert "/spec/template/spec/nodeSelector" in paths
    assert any("fixed batch-on-spot/spot" in w for w in resp["warnings"])
    fixed = patched(JOB, resp)
    assert fixed["spec"]["template"]["spec"]["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert response(policies, fixed)["allowed"] is True
    again = response(policies, fixed, mutate=True)
    assert again == {"uid": again["uid"], "allowed": True}


def test_key_level_patch_escapes_slash(policies: PolicySet) -> None:
    job = copy.deepcopy(JOB)
    job["spec"]["template"]["metadata"]["labels"] = {"team": "ml"}
    job["spec"]["template"]["spec"]["nodeSelector"] = {"karpenter.sh/capacity-type": "spot"}
    ops = json.loads(base64.b64decode(response(policies, job, mutate=True)["patch"]))
    assert ops == [{"op": "add", "path": "/spec/template/metadata/labels/cost.example.com~1center", "value": "shared"}]


def test_conflicting_fixes_converge_in_later_rounds(compile_policies: Any) -> None:
    text = POLICIES.split("---")[0]
    second = text.replace("cost-labels", "owner-labels").replace(
        "keys: [team, cost.example.com/center]", "keys: [owner]").replace(
        "values: {team: \"^[a-z][a-z0-9-]*$\"}", "values: {}").replace(
        "defaults: {team: unassigned, cost.example.com/center: shared}", "defaults: {owner: platform}")
    both = compile_policies(text, second)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    fixed = patched(pod, response(both, pod, mutate=True))
    assert fixed["metadata"]["labels"] == {"team": "unassigned", "cost.example.com/center": "shared",
                                           "owner": "platform"}
    assert response(both, fixed)["allowed"] is True


def test_no_ledger_on_admission_even_without_dry_run(policies: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = PolicySet.evaluate

    def spy(self: PolicySet, subject: Any, surface: Any = "ci", **kw: Any) -> Any:
        seen.append((surface, kw.get("ledger")))
        return original(self, subject, surface, **kw)

    monkeypatch.setattr(PolicySet, "evaluate", spy)
    for dry_run in (True, False):
        response(policies, JOB, dry_run=dry_run)
        response(policies, JOB, dry_run=dry_run, mutate=True)
    assert seen and all(s == ("admission", None) for s in seen)


def _slow(policies: PolicySet, seconds: float, on_error: str = "deny") -> PolicySet:
    def sleepy(subject: Any, ctx: Any) -> Any:
        time.sleep(seconds)
        raise AssertionError("never reached within the deadline")

    slowed = []
    for p in policies.policies:
        rules = tuple(dataclasses.replace(r, check=sleepy) for r in p.rules)
        slowed.append(dataclasses.replace(p, rules=rules, on_error=on_error))
    return PolicySet(tuple(slowed), policies.exemptions, policies.catalog, policies.pricer)


def test_deadline_gives_each_policies_on_error_outcome(policies: PolicySet) -> None:
    started = time.monotonic()
    out = review(_slow(policies, 0.6), admission_review(JOB), mutate=False, deadline_s=0.1)["response"]
    assert time.monotonic() - started < 0.5
    assert out["allowed"] is False
    assert "did not finish within the 0.1s admission deadline" in out["status"]["message"]
    assert "[cost-labels/evaluation]" in out["status"]["message"]
    assert any("few-gpus-per-pod/evaluation" in w for w in out["warnings"])  # a warn policy warns
    lenient = review(_slow(policies, 0.6, "allow"), admission_review(JOB), mutate=False, deadline_s=0.1)
    assert lenient["response"]["allowed"] is True
    mutated = review(_slow(policies, 0.6), admission_review(JOB), mutate=True, deadline_s=0.1)["response"]
    assert mutated["allowed"] is True and "patch" not in mutated and "deadline" in mutated["warnings"][0]
    time.sleep(0.6)  # let the abandoned evaluations finish


def test_unreadable_object_fails_closed(policies: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    import costwarden.adapters.kubernetes as k8s

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("boom")

    monkeypatch.setattr(k8s, "subjects_from_object", broken)
    out = response(policies, JOB)
    assert out["allowed"] is False and "cannot read the object: TypeError: boom" in out["status"]["message"]


# --- JSON Patch: diff and apply -------------------------------------------------------------------

def test_diff_escapes_pointer_tokens() -> None:
    ops = diff({"a": {}}, {"a": {"x/y": 1, "t~k": 2}})
    assert ops == [{"op": "add", "path": "/a/x~1y", "value": 1}, {"op": "add", "path": "/a/t~0k", "value": 2}]
    assert jsonpatch.apply_patch({"a": {}}, ops) == {"a": {"x/y": 1, "t~k": 2}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab/~", max_size=3),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text("ab/~0", max_size=3), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_diff_then_apply_reproduces_the_target(old: Any, new: Any) -> None:
    ops = diff(old, new)
    assert jsonpatch.apply_patch(old, ops) == new
    assert apply_patch(copy.deepcopy(old), ops) == new
    assert diff(new, new) == []


# --- review findings -------------------------------------------------------------------------------

ON_DEMAND_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]}]}}}


@pytest.mark.parametrize(("platform", "pod_spec"), [
    ("auto", {"affinity": ON_DEMAND_AFFINITY}),
    ("karpenter", {"affinity": ON_DEMAND_AFFINITY}),
    ("karpenter", {"nodeSelector": {"eks.amazonaws.com/capacityType": "ON_DEMAND"}}),
    ("gke", {"nodeSelector": {"cloud.google.com/gke-preemptible": "false"}}),
])
def test_spot_fix_never_pins_a_pod_to_nodes_that_cannot_exist(compile_policies: Any, platform: str,
                                                              pod_spec: dict[str, Any]) -> None:
    """A required on-demand pin plus the fix's spot nodeSelector matches no node: the pod would
    stay Pending forever. Such a pod must be denied (with no automatic fix), not patched and admitted."""
    text = POLICIES.split("---")[1].replace("platform: auto", f"platform: {platform}")
    spot = compile_policies(text)
    job = copy.deepcopy(JOB)
    job["spec"]["template"]["spec"].update(copy.deepcopy(pod_spec))
    fixed = patched(job, response(spot, job, mutate=True))
    assert fixed == job  # nothing patched
    resp = response(spot, fixed)
    assert resp["allowed"] is False and "[batch-on-spot/spot]" in resp["status"]["message"]
    assert "(fix:" not in resp["status"]["message"]


def test_mutation_of_an_object_too_deep_to_copy_answers_instead_of_crashing(policies: PolicySet) -> None:
    """An UPDATE of a CRD with free-form fields nested a few hundred levels deep: /mutate must answer
    (it never denies), not raise (the server would answer 500)."""
    deep = '{"x":' * 600 + "{}" + "}" * 600
    obj = json.loads('{"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "r", "namespace": "a"}, '
                     '"spec": {"entrypoint": "python x.py", "data": ' + deep + "}}")
    out = review(policies, admission_review(obj), mutate=True, deadline_s=10)["response"]
    assert out["allowed"] is True and "patch" not in out
    assert any("no fixes applied" in w for w in out["warnings"])


def test_spot_fix_leaves_a_template_pinned_elsewhere_alone(policies: PolicySet) -> None:
    """A RayJob whose (GPU-less) head must run on on-demand nodes and whose GPU workers are not
    pinned: the fix pins the workers to spot and leaves the head schedulable."""
    head = {"affinity": copy.deepcopy(ON_DEMAND_AFFINITY), "containers": [{"name": "head", "image": "ray"}]}
    worker = {"containers": [{"name": "w", "image": "ray", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}
    ray = {"apiVersion": "ray.io/v1", "kind": "RayJob",
           "metadata": {"name": "r", "namespace": "ml", "labels": GOOD_LABELS},
           "spec": {"entrypoint": "python x.py", "rayClusterSpec": {
               "headGroupSpec": {"template": {"spec": head}},
               "workerGroupSpecs": [{"replicas": 2, "template": {"spec": worker}}]}}}
    fixed = patched(ray, response(policies, ray, mutate=True))
    cluster = fixed["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"] == head
    assert cluster["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert response(policies, fixed)["allowed"] is True


RS_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "0b6c", "controller": True}


@pytest.mark.parametrize("obj", [
    # a ReplicaSet's pod: relabelled, it no longer matches the ReplicaSet's selector, is orphaned
    # (and keeps running), and the ReplicaSet creates another one, and so on without end
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "web-5d8f-x", "namespace": "a", "ownerReferences": [RS_OWNER],
                  "labels": {"app": "web", "team": "Payments", "cost.example.com/center": "r"}},
     "spec": {"containers": [{"name": "c", "image": "i"}]}},
    # the label is in the Deployment's own selector: relabelling the template makes it invalid
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a"},
     "spec": {"selector": {"matchLabels": {"app": "web", "team": "Payments"}}, "template": {
         "metadata": {"labels": {"app": "web", "team": "Payments", "cost.example.com/center": "r"}},
         "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
])
def test_label_fix_never_rewrites_a_label_a_selector_depends_on(policies: PolicySet, obj: dict[str, Any]) -> None:
    resp = response(policies, obj, mutate=True)
    assert "patch" not in resp
    denied = response(policies, obj)
    assert denied["allowed"] is False and "tag 'team'='Payments' does not match" in denied["status"]["message"]
    assert "(fix:" not in denied["status"]["message"]


@pytest.mark.parametrize("owners", [[], [{**RS_OWNER, "apiVersion": "batch/v1", "kind": "Job", "name": "train"}]])
def test_label_fix_still_replaces_a_bad_value_nothing_selects_on(policies: PolicySet, owners: list[Any]) -> None:
    """An unowned pod, or a Job's (a Job selects its pods by controller-uid, not by user labels)."""
    labels = {"team": "Payments", "cost.example.com/center": "r"}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "a", "labels": labels, "ownerReferences": owners},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    fixed = patched(pod, response(policies, pod, mutate=True))
    assert fixed["metadata"]["labels"]["team"] == "unassigned"
    assert response(policies, fixed)["allowed"] is True


@pytest.mark.parametrize(("pod_spec", "selector"), [
    # EKS Auto Mode: Karpenter-made nodes with eks.amazonaws.com/instance-* labels and no
    # eks.amazonaws.com/capacityType (a managed node group label): spot is karpenter.sh/capacity-type
    ({"nodeSelector": {"eks.amazonaws.com/instance-gpu-name": "l4"}}, {"karpenter.sh/capacity-type": "spot"}),
    ({"nodeSelector": {"eks.amazonaws.com/compute-type": "auto"}}, {"karpenter.sh/capacity-type": "spot"}),
    # managed node groups carry eks.amazonaws.com/capacityType
    ({"nodeSelector": {"eks.amazonaws.com/capacityType": "ON_DEMAND"}}, {"eks.amazonaws.com/capacityType": "SPOT"}),
])
def test_spot_fix_on_eks_uses_the_label_the_nodes_carry(policies: PolicySet, pod_spec: dict[str, Any],
                                                        selector: dict[str, str]) -> None:
    job = copy.deepcopy(JOB)
    job["spec"]["template"]["metadata"]["labels"] = GOOD_LABELS
    job["spec"]["template"]["spec"].update(copy.deepcopy(pod_spec))
    fixed = patched(job, response(policies, job, mutate=True))
    node_selector = fixed["spec"]["template"]["spec"]["nodeSelector"]
    assert {k: v for k, v in node_selector.items() if k in selector or "capacity" in k.lower()} == selector
