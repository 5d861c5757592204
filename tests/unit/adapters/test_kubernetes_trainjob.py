"""Kubeflow Trainer v2 TrainJob: placement set in its pod overrides is read.

Trainer v2.0 (``trainer.kubeflow.org/v1alpha1``) has ``spec.podTemplateOverrides[]`` with
``targetJobs`` and a ``spec`` of pod fields; the earlier alphas (``kubeflow.org/v2alpha1``) had
``spec.podSpecOverrides[]`` with the pod fields inline; later versions group them per manager
under ``spec.templateOverrides[].pod[]``. The trainer nodes are the replicated job ``node``.
"""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import jsonpatch
import pytest
import yaml
from policy_support import CompilePolicies

from costwarden.adapters import kubernetes as k8s
from costwarden.engine import patch
from costwarden.engine.subjects import Resource

SPOT = {"karpenter.sh/capacity-type": "spot"}


def train_job(overrides: dict[str, Any], *, resources: bool = True) -> dict[str, Any]:
    trainer: dict[str, Any] = {"image": "docker.io/custom-training", "numNodes": 4}
    if resources:
        trainer["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": 8}}
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "llama"},
            "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": trainer, **overrides}}


def one(obj: dict[str, Any]) -> Resource:
    [subject] = k8s.subjects_from_object(obj)
    return subject


def test_pod_template_overrides_put_the_trainer_on_spot() -> None:
    text = textwrap.dedent("""
        apiVersion: trainer.kubeflow.org/v1alpha1
        kind: TrainJob
        metadata: {name: llama}
        spec:
          runtimeRef: {name: torch-distributed}
          trainer:
            numNodes: 4
            resourcesPerNode:
              limits: {nvidia.com/gpu: 8}
          podTemplateOverrides:
            - targetJobs: [{name: node}]
              spec:
                nodeSelector: {karpenter.sh/capacity-type: spot}
                tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        """)
    [subject] = k8s.subjects_from_text(text, "trainjob.yaml")
    assert subject.capacity == "spot"
    assert (subject.workload.workload_class, subject.workload.gpus, subject.workload.replicas) == ("batch", 8, 4)
    assert subject.pod_spec_pointers == ("/spec/podTemplateOverrides/0/spec",)


def test_older_pod_spec_overrides_are_read() -> None:
    overrides = {"podSpecOverrides": [{"targetJobs": [{"name": "node"}],
                                       "nodeSelector": {"cloud.google.com/gke-spot": "true"}}]}
    subject = one(train_job(overrides))
    assert subject.capacity == "spot"
    assert subject.pod_spec_pointers == ("/spec/podSpecOverrides/0",)


def test_manager_template_overrides_are_read() -> None:
    pod = {"targetJobs": [{"name": "node"}], "spec": {"nodeSelector": SPOT}}
    subject = one(train_job({"templateOverrides": [{"manager": "kueue.x-k8s.io/manager", "pod": [pod]}]}))
    assert subject.capacity == "spot"
    assert subject.pod_spec_pointers == ("/spec/templateOverrides/0/pod/0/spec",)


def test_required_affinity_in_an_override_pins_spot() -> None:
    term = {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    overrides = {"podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": {"affinity": affinity}}]}
    assert one(train_job(overrides)).capacity == "spot"


def test_overrides_for_other_jobs_do_not_place_the_trainer() -> None:
    overrides = {"podTemplateOverrides": [{"targetJobs": [{"name": "dataset-initializer"}],
                                           "spec": {"nodeSelector": SPOT}}]}
    assert one(train_job(overrides)).capacity == "unknown"


def test_later_overrides_win() -> None:
    on_demand = {"karpenter.sh/capacity-type": "on-demand"}
    overrides = {"podTemplateOverrides": [
        {"targetJobs": [{"name": "node"}], "spec": {"nodeSelector": SPOT}},
        {"targetJobs": [{"name": "node"}], "spec": {"nodeSelector": on_demand, "serviceAccountName": "x"}},
    ]}
    subject = one(train_job(overrides))
    assert subject.capacity == "on-demand"
    assert subject.pod_spec_pointers == ("/spec/podTemplateOverrides/1/spec",)


def test_placement_without_resources_per_node_still_counts() -> None:
    overrides = {"podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": {"nodeSelector": SPOT}}]}
    subject = one(train_job(overrides, resources=False))
    assert (subject.capacity, subject.workload.workload_class, subject.workload.gpus) == ("spot", "batch", 0)


def test_without_overrides_nothing_changes() -> None:
    subject = one(train_job({}))
    assert (subject.capacity, subject.workload.gpus, subject.workload.replicas) == ("unknown", 8, 4)
    assert subject.pod_spec_pointers == ()


SPOT_ONLY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: spot}
spec:
  subject: resource
  rules:
    - name: spot
      spotOnly: {fix: {platform: auto}}
"""


@pytest.mark.parametrize("key", ["podTemplateOverrides", "podSpecOverrides"])
def test_the_spot_fix_patches_the_trainer_override(compile_policies: CompilePolicies, key: str) -> None:
    entry: dict[str, Any] = {"targetJobs": [{"name": "node"}], "serviceAccountName": "trainer"}
    if key == "podTemplateOverrides":
        entry = {"targetJobs": entry.pop("targetJobs"), "spec": entry}
    obj = train_job({key: [entry]})
    ps = compile_policies(SPOT_ONLY)
    [r] = ps.evaluate(one(obj)).results
    assert r.result == "fail" and r.fix is not None
    fixed = jsonpatch.apply_patch(copy.deepcopy(obj), [dict(op) for op in r.fix.patch])
    [pointer] = one(obj).pod_spec_pointers
    assert patch.resolve(fixed, pointer + "/nodeSelector") == SPOT
    assert one(fixed).capacity == "spot"
    [after] = ps.evaluate(one(yaml.safe_load(yaml.safe_dump(fixed)))).results
    assert after.result == "pass"
