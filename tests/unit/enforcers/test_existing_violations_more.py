"""Pre-existing violations on UPDATE, the harder cases: a vLLM container whose index changes, several
subjects per object, warn-effect violations, values that are not numbers, and /mutate agreeing
with /validate."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from policy_support import compile_text
from webhook_support import POLICIES, admission_review

from costwarden.enforcers.admission import review
from costwarden.enforcers.existing_violations import PREEXISTING, failure_key, no_worse
from costwarden.engine.decision import RuleResult, SubjectRef
from costwarden.engine.evaluate import PolicySet

SERVING = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: vllm-serving, severity: high}
spec:
  subject: serving_config
  enforcement: {default: deny}
  rules:
    - name: efficient
      servingConfig: {minGpuMemoryUtilization: 0.85}
"""
LABELS = {"team": "ml", "cost.example.com/center": "research"}


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return compile_text(POLICIES.split("---")[0] + "---\n" + SERVING)


def vllm(name: str = "vllm", utilization: str = "0.5") -> dict[str, Any]:
    return {"name": name, "image": "vllm/vllm-openai:v0.10.1",
            "args": ["--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu-memory-utilization", utilization],
            "resources": {"limits": {"nvidia.com/gpu": 1}}}


def server(*containers: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment serving vLLM: a ``resource`` subject and a ``serving_config`` per vLLM container."""
    tags = dict(LABELS if labels is None else labels)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "srv", "namespace": "ml", "labels": tags},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "srv"}},
                     "template": {"metadata": {"labels": {"app": "srv", **tags}},
                                  "spec": {"containers": list(containers)}}}}


def update(policies: PolicySet, new: Any, old: Any, *, mutate: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = review(policies, admission_review(new, operation="UPDATE", old=old), mutate=mutate,
                                 deadline_s=5)["response"]
    return out


SIDECAR = {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"}


def test_a_sidecar_inserted_before_the_vllm_container_does_not_make_its_violation_new(policies: PolicySet) -> None:
    old = server(vllm())  # gpu-memory-utilization 0.5 < 0.85: admitted before the policy
    assert review(policies, admission_review(old), mutate=False, deadline_s=5)["response"]["allowed"] is False
    resp = update(policies, server(SIDECAR, vllm()), old)  # the vLLM container moves from index 0 to 1
    assert resp["allowed"] is True, resp.get("status")
    assert any(f"vllm-serving/efficient: {PREEXISTING}" in w for w in resp["warnings"])
    # reordered back, and still no worse
    assert update(policies, server(vllm(), SIDECAR), server(SIDECAR, vllm()))["allowed"] is True


def test_a_reordered_container_made_worse_is_still_denied(policies: PolicySet) -> None:
    resp = update(policies, server(SIDECAR, vllm(utilization="0.3")), server(vllm()))
    assert resp["allowed"] is False and "makes it worse" in resp["status"]["message"]


def test_a_second_vllm_container_with_the_same_violation_is_new(policies: PolicySet) -> None:
    resp = update(policies, server(vllm(), vllm("vllm-b")), server(vllm()))
    assert resp["allowed"] is False
    assert "[vllm-serving/efficient]" in resp["status"]["message"] and "makes it worse" not in resp["status"]["message"]
    assert any(f"vllm-serving/efficient: {PREEXISTING}" in w for w in resp["warnings"])  # the first one


def test_a_renamed_container_is_a_new_container(policies: PolicySet) -> None:
    assert update(policies, server(vllm("engine")), server(vllm()))["allowed"] is False


def test_the_resource_and_its_serving_config_are_excused_separately(policies: PolicySet) -> None:
    """One Deployment, two subjects: a missing tag (resource) and low memory use (serving_config)."""
    old = server(vllm(), labels={"team": "ml"})
    assert update(policies, server(SIDECAR, vllm(), labels={"team": "ml"}), old)["allowed"] is True
    resp = update(policies, server(vllm(), labels={}), old)  # the tag failure got worse, vLLM did not
    assert resp["allowed"] is False
    assert "[cost-labels/labels]" in resp["status"]["message"]
    assert "[vllm-serving/efficient]" not in resp["status"]["message"]


def test_mutate_does_not_fix_what_validate_excuses_when_containers_move(policies: PolicySet) -> None:
    old = server(vllm(), labels={"team": "ml"})
    new = server(SIDECAR, vllm(), labels={"team": "ml"})
    resp = update(policies, new, old, mutate=True)
    ops = json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else []
    assert ops == []
    assert update(policies, copy.deepcopy(new), old)["allowed"] is True


def ref(name: str, pointer: str) -> SubjectRef:
    return SubjectRef("serving_config", "kubernetes", "vllm", name, "ml", pointer=pointer)


def test_failure_key_ignores_a_named_containers_index_but_not_its_pod_template() -> None:
    r = RuleResult("p", "r", "fail", "deny", "high", "m", path="args.x")
    worker = "/spec/leaderWorkerTemplate/workerTemplate/spec/containers/"
    leader = "/spec/leaderWorkerTemplate/leaderTemplate/spec/containers/"
    assert failure_key(ref("lws/vllm", worker + "0"), r) == failure_key(ref("lws/vllm", worker + "2"), r)
    assert failure_key(ref("lws/vllm", worker + "0"), r) != failure_key(ref("lws/vllm", leader + "0"), r)
    assert failure_key(ref("isvc", "/spec/predictor/0"), r) != failure_key(ref("isvc", "/spec/predictor/1"), r)


def result(actual: Any, expected: Any) -> RuleResult:
    return RuleResult("p", "r", "fail", "deny", "high", "m", path="x", expected=expected, actual=actual)


@pytest.mark.parametrize(("old", "new", "expected"), [
    (result(None, "quantised"), result(None, "quantised"), True),  # unset before and after
    (result(None, 0.85), result(0.5, 0.85), False),  # a number where there was none
    (result("H100", ["A100"]), result("H100", ["A100"]), True),
    (result("H100", ["A100"]), result("B200", ["A100"]), False),  # another disallowed value
    (result(float("nan"), 60.0), result(float("nan"), 60.0), False),  # not a measurement
])
def test_no_worse_with_values_that_are_not_comparable(old: RuleResult, new: RuleResult, expected: bool) -> None:
    assert no_worse(old, new) is expected


def test_a_warn_effect_violation_keeps_warning_and_loses_its_fix(compile_policies: Any) -> None:
    warn_only = compile_policies(POLICIES.split("---")[0].replace("enforcement: {default: deny}",
                                                                  "enforcement: {default: warn}"))
    old = server(vllm(), labels={"team": "ml"})
    new = server(vllm(), labels={"team": "ml", "owner": "ann"})
    resp = update(warn_only, new, old, mutate=True)
    assert "patch" not in resp
    validated = update(warn_only, new, old)
    assert validated["allowed"] is True
    assert any(f"cost-labels/labels: {PREEXISTING}" in w for w in validated["warnings"])
