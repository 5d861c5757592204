"""UPDATE of an object that already violated a policy (Kyverno's ``allowExistingViolations``):
allowed with a warning while the violation is no worse, denied when the update makes it worse."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
from webhook_support import POLICIES, admission_review

from costwarden.enforcers.admission import review
from costwarden.enforcers.existing_violations import PREEXISTING, WORSE, no_worse
from costwarden.engine.decision import RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.webhook.app import WebhookSettings

LABELS = {"team": "ml", "cost.example.com/center": "research"}


def deployment(replicas: int = 4, gpus: int = 4, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An online GPU server: 4 H100s per replica at about $6.88/h each (cap: $60/h for all replicas)."""
    template_meta: dict[str, Any] = {"labels": {"app": "srv", **(labels or {})}}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "srv", "namespace": "ml", "labels": dict(labels or {})},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "srv"}},
                 "template": {"metadata": template_meta, "spec": {
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                     "containers": [{"name": "s", "image": "server",
                                     "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}},
    }


RESTARTED = {"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"}


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    from policy_support import compile_text

    return compile_text(POLICIES)


def update(policies: PolicySet, new: Any, old: Any, *, mutate: bool = False, **kw: Any) -> dict[str, Any]:
    out = review(policies, admission_review(new, operation="UPDATE", old=old), mutate=mutate, deadline_s=5, **kw)
    result: dict[str, Any] = out["response"]
    return result


def test_routine_edit_of_a_workload_that_already_violated_is_allowed_with_warnings(policies: PolicySet) -> None:
    old = deployment(replicas=4)  # no cost labels, $110/h over the $60/h cap
    new = deployment(replicas=4, annotations=RESTARTED)  # kubectl rollout restart
    resp = update(policies, new, old)
    assert resp["allowed"] is True and "status" not in resp
    assert f"costwarden cost-labels/labels: {PREEXISTING}: missing required tags: team, cost.example.com/center"[:117] \
        in "".join(resp["warnings"])
    assert any(w.startswith(f"costwarden gpu-cost-cap/cap: {PREEXISTING}") for w in resp["warnings"])
    # the same object created afresh is denied: only the UPDATE is excused
    created = review(policies, admission_review(new), mutate=False, deadline_s=5)["response"]
    assert created["allowed"] is False


def test_scaling_up_while_over_the_cost_cap_is_denied(policies: PolicySet) -> None:
    old = deployment(replicas=4, labels=LABELS)  # $110.08/h, already over the $60/h cap
    resp = update(policies, deployment(replicas=40, labels=LABELS), old)
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert "[gpu-cost-cap/cap] estimated $1,100.80/h exceeds the $60.00/h cap" in message and WORSE in message


def test_more_gpus_per_replica_while_over_the_cap_is_denied(policies: PolicySet) -> None:
    old = deployment(replicas=4, gpus=4, labels=LABELS)
    assert update(policies, deployment(replicas=4, gpus=8, labels=LABELS), old)["allowed"] is False


def test_scaling_down_while_still_over_the_cap_is_allowed(policies: PolicySet) -> None:
    old = deployment(replicas=40, labels=LABELS)
    resp = update(policies, deployment(replicas=4, labels=LABELS), old)
    assert resp["allowed"] is True
    assert any(f"gpu-cost-cap/cap: {PREEXISTING}" in w for w in resp["warnings"])


def test_crossing_the_cap_for_the_first_time_is_denied(policies: PolicySet) -> None:
    old = deployment(replicas=1, labels=LABELS)  # $27.52/h: within the cap
    resp = update(policies, deployment(replicas=4, labels=LABELS), old)
    assert resp["allowed"] is False and WORSE not in resp["status"]["message"]


def test_a_tag_that_stays_missing_passes_but_a_newly_missing_one_is_denied(policies: PolicySet) -> None:
    partial = {"team": "ml"}  # cost.example.com/center missing before and after
    old = deployment(replicas=1, labels=partial)
    assert update(policies, deployment(replicas=1, labels=partial, annotations=RESTARTED), old)["allowed"] is True
    resp = update(policies, deployment(replicas=1), old)  # the team label removed as well
    assert resp["allowed"] is False
    assert "missing required tags: team, cost.example.com/center" in resp["status"]["message"]


def test_a_bad_tag_value_changed_to_another_bad_value_is_denied(policies: PolicySet) -> None:
    old = deployment(replicas=1, labels={**LABELS, "team": "ML"})
    resp = update(policies, deployment(replicas=1, labels={**LABELS, "team": "Data"}), old)
    assert resp["allowed"] is False


def test_the_flag_off_judges_the_new_object_alone(policies: PolicySet) -> None:
    old = deployment(replicas=4)
    resp = update(policies, deployment(replicas=4, annotations=RESTARTED), old, allow_existing_violations=False)
    assert resp["allowed"] is False
    assert "[cost-labels/labels]" in resp["status"]["message"] and "[gpu-cost-cap/cap]" in resp["status"]["message"]


def test_an_unreadable_old_object_excuses_nothing(policies: PolicySet) -> None:
    old = deployment(replicas=4)
    old["spec"]["template"] = "not an object"
    assert update(policies, deployment(replicas=4, annotations=RESTARTED), old)["allowed"] is False


def patch_of(resp: dict[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else []
    return ops


def test_mutate_leaves_pre_existing_violations_alone_and_fixes_new_ones(policies: PolicySet) -> None:
    job_old = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t", "namespace": "ml"},
               "spec": {"template": {"metadata": {"labels": {"team": "ml"}}, "spec": {
                   "restartPolicy": "Never", "containers": [{"name": "t", "image": "trainer"}]}}}}
    # missing cost centre and not on spot: both pre-existing, so a label edit is not rewritten
    job_new = copy.deepcopy(job_old)
    job_new["metadata"]["labels"] = {"owner": "ann"}
    assert patch_of(update(policies, job_new, job_old, mutate=True)) == []
    assert update(policies, job_new, job_old)["allowed"] is True  # and /validate agrees
    # removing the team label makes the tag failure worse: /mutate applies its fix (not the spot one, which
    # stays pre-existing), and /validate then admits the patched object
    job_worse = copy.deepcopy(job_new)
    del job_worse["spec"]["template"]["metadata"]["labels"]["team"]
    ops = patch_of(update(policies, job_worse, job_old, mutate=True))
    assert ops and all("nodeSelector" not in op["path"] and "tolerations" not in op["path"] for op in ops)
    fixed = jsonpatch.apply_patch(job_worse, ops)
    assert fixed["spec"]["template"]["metadata"]["labels"]["team"] == "unassigned"
    assert update(policies, fixed, job_old)["allowed"] is True
    # with the flag off, /mutate fixes everything as on CREATE
    full = patch_of(update(policies, job_new, job_old, mutate=True, allow_existing_violations=False))
    assert any("nodeSelector" in op["path"] for op in full)


def result(actual: Any, expected: Any = 60.0) -> RuleResult:
    return RuleResult("p", "r", "fail", "deny", "high", "m", path="x", expected=expected, actual=actual)


@pytest.mark.parametrize(("old", "new", "expected"), [
    (result(110.0), result(110.0), True),
    (result(110.0), result(80.0), True),
    (result(110.0), result(1100.0), False),
    (result(0.5, 0.85), result(0.6, 0.85), True),  # a floor: closer to it is better
    (result(0.5, 0.85), result(0.4, 0.85), False),
    (result({"team": None}, "keys"), result({"team": None}, "keys"), True),
    (result({"team": None}, "keys"), result({"team": None, "center": None}, "keys"), False),
    (result({"team": "ML"}, "keys"), result({"team": "Data"}, "keys"), False),
    (result(["--swap-space"], []), result([], []), True),
    (result(["--swap-space"], []), result(["--swap-space", "--foo"], []), False),
    (result("on-demand", "spot"), result("on-demand", "spot"), True),
    (result(False, "cel"), result(False, "other cel"), False),
    (result(True, 1), result(True, 2), False),  # booleans are not measurements
])
def test_no_worse_compares_measured_values(old: RuleResult, new: RuleResult, expected: bool) -> None:
    assert no_worse(old, new) is expected


def test_the_setting_travels_in_the_environment() -> None:
    settings = WebhookSettings("/p", allow_existing_violations=False)
    assert WebhookSettings.from_env(settings.to_env()).allow_existing_violations is False
    assert WebhookSettings.from_env({"COSTWARDEN_WEBHOOK_POLICIES_DIR": "/p"}).allow_existing_violations is True
    with pytest.raises(ValueError, match="expected true or false"):
        WebhookSettings.from_env({"COSTWARDEN_WEBHOOK_POLICIES_DIR": "/p",
                                  "COSTWARDEN_WEBHOOK_ALLOW_EXISTING_VIOLATIONS": "maybe"})
