"""Pre-existing violations of ``expr`` rules: a failing CEL expression measures the subject values
it read, so an UPDATE is excused only while they are unchanged — ``kubectl scale`` past a CEL
replica cap is not "already failing", a label edit is."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from policy_support import compile_text
from webhook_support import admission_review, scale_review

from costwarden.enforcers.admission import evaluate_object, review
from costwarden.enforcers.existing_violations import PREEXISTING, WORSE
from costwarden.enforcers.scale_target import ParentRef
from costwarden.engine.evaluate import PolicySet


def expr_policy(cel: str, name: str = "cel-cap") -> str:
    return f"""\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: {name}, severity: high}}
spec:
  subject: resource
  match: {{providers: [kubernetes], kinds: [Deployment]}}
  enforcement: {{default: deny}}
  rules:
    - name: rule
      expr: {{cel: '{cel}', message: "not allowed by {name}"}}
"""


REPLICAS = expr_policy("subject.workload.replicas <= 10")
TIER = expr_policy('subject.tags["cost.example.com/tier"] in ["gold", "silver"]', name="tier")
WHOLE = expr_policy("size(subject) < 100 && subject.workload.replicas <= 10", name="whole")


def deployment(replicas: int = 12, image: str = "server:1", **labels: str) -> dict[str, Any]:
    tags = {"team": "ml", "cost.example.com/tier": "bronze", **labels}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "legacy", "namespace": "ml", "labels": tags},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "legacy"}},
                     "template": {"metadata": {"labels": {"app": "legacy", **tags}},
                                  "spec": {"containers": [{"name": "s", "image": image}]}}}}


def update(policies: PolicySet, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = review(policies, admission_review(new, operation="UPDATE", old=old), mutate=False,
                                 deadline_s=5)["response"]
    return out


def excused(response: dict[str, Any]) -> bool:
    """Allowed, with the pre-existing warning."""
    return bool(response["allowed"]) and any(PREEXISTING in w for w in response.get("warnings", []))


def denied_as_worse(response: dict[str, Any]) -> bool:
    return not response["allowed"] and WORSE in response["status"]["message"]


def relabelled(obj: dict[str, Any], key: str, value: str | None) -> dict[str, Any]:
    """``obj`` with the label ``key`` set to ``value`` (removed when None) on the workload and its
    pod template (the subject's tags)."""
    out = copy.deepcopy(obj)
    for labels in (out["metadata"]["labels"], out["spec"]["template"]["metadata"]["labels"]):
        if value is None:
            del labels[key]
        else:
            labels[key] = value
    return out


class TestReplicaCap:
    @pytest.fixture(scope="class")
    @staticmethod
    def policies() -> PolicySet:
        return compile_text(REPLICAS)

    def test_the_failure_measures_what_the_expression_read(self, policies: PolicySet) -> None:
        [decision] = evaluate_object(policies, deployment(12))
        [r] = decision.results
        assert (r.result, r.message) == ("fail", "not allowed by cel-cap")
        assert (r.expected, r.actual) == ("subject.workload.replicas <= 10", {"subject.workload.replicas": 12})
        assert r.to_dict()["actual"] == {"subject.workload.replicas": 12}

    def test_scaling_up_past_the_cap_is_denied(self, policies: PolicySet) -> None:
        assert denied_as_worse(update(policies, deployment(500), deployment(12)))

    def test_a_label_edit_is_excused(self, policies: PolicySet) -> None:
        response = update(policies, relabelled(deployment(12), "team", "infra"), deployment(12))
        assert excused(response)

    def test_an_image_change_is_excused(self, policies: PolicySet) -> None:
        assert excused(update(policies, deployment(12, image="server:2"), deployment(12)))

    def test_scaling_down_while_still_over_is_a_change_too(self, policies: PolicySet) -> None:
        # CEL does not say which way is better: only unchanged read values are excused.
        assert denied_as_worse(update(policies, deployment(11), deployment(12)))

    def test_scaling_within_the_cap_passes_outright(self, policies: PolicySet) -> None:
        response = update(policies, deployment(10), deployment(12))
        assert response["allowed"] and "warnings" not in response

    def test_kubectl_scale_is_judged_the_same_way(self, policies: PolicySet) -> None:
        parent = deployment(12)

        def read_parent(ref: ParentRef) -> dict[str, Any]:
            assert (ref.namespace, ref.name) == ("ml", "legacy")
            return parent

        def scale(replicas: int) -> dict[str, Any]:
            out: dict[str, Any] = review(policies, scale_review("Deployment", "legacy", replicas, 12), mutate=False,
                                         deadline_s=5, read_parent=read_parent)["response"]
            return out

        assert denied_as_worse(scale(500))
        assert scale(10)["allowed"]


class TestTagRead:
    @pytest.fixture(scope="class")
    @staticmethod
    def policies() -> PolicySet:
        return compile_text(TIER)

    def test_the_failure_measures_only_the_tag_it_read(self, policies: PolicySet) -> None:
        [decision] = evaluate_object(policies, deployment(12))
        assert decision.results[0].actual == {'subject.tags["cost.example.com/tier"]': "bronze"}

    def test_a_changed_value_of_the_tag_read_is_denied(self, policies: PolicySet) -> None:
        old = deployment(12)
        assert denied_as_worse(update(policies, relabelled(old, "cost.example.com/tier", "copper"), old))

    def test_an_unrelated_tag_change_is_excused(self, policies: PolicySet) -> None:
        old = deployment(12)
        assert excused(update(policies, relabelled(old, "team", "infra"), old))

    def test_scaling_is_excused_when_the_expression_does_not_read_replicas(self, policies: PolicySet) -> None:
        assert excused(update(policies, deployment(500), deployment(12)))


class TestWholeSubject:
    """``size(subject)`` may read any field: the failure measures the whole subject."""

    @pytest.fixture(scope="class")
    @staticmethod
    def policies() -> PolicySet:
        return compile_text(WHOLE)

    def test_the_failure_measures_the_whole_subject(self, policies: PolicySet) -> None:
        [decision] = evaluate_object(policies, deployment(12))
        actual = decision.results[0].actual
        assert list(actual) == ["subject"]
        assert actual["subject"]["workload"]["replicas"] == 12
        assert actual["subject"]["tags"]["team"] == "ml"

    def test_an_update_the_subject_does_not_show_is_excused(self, policies: PolicySet) -> None:
        assert excused(update(policies, deployment(12, image="server:2"), deployment(12)))

    def test_any_change_of_the_subject_is_denied(self, policies: PolicySet) -> None:
        old = deployment(12)
        assert denied_as_worse(update(policies, relabelled(old, "team", "infra"), old))
        assert denied_as_worse(update(policies, deployment(11), old))
