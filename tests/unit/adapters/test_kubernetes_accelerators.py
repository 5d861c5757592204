"""Accelerators other than NVIDIA/AMD GPUs: counted, typed, seen by GPU rules, never priced at $0.

The manifests are shaped like the device plugins' own examples (Intel GPU plugin, Habana's
Kubernetes quick start, the Neuron device plugin, GKE TPU on Autopilot).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from policy_support import CompilePolicies

from costwarden.adapters import kubernetes as k8s
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import Resource


def job(resources: dict[str, Any], node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "OnFailure",
                            "containers": [{"name": "main", "image": "x", "resources": {"limits": resources}}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
            "spec": {"template": {"spec": spec}}}


def one(obj: dict[str, Any]) -> Resource:
    [subject] = k8s.subjects_from_object(obj)
    return subject


@pytest.mark.parametrize(
    ("resource", "amount", "gpus", "gpu_type"),
    [
        ("gpu.intel.com/i915", 1, 1.0, "intel-gpu"),
        ("gpu.intel.com/xe", "2", 2.0, "intel-gpu"),
        ("habana.ai/gaudi", 8, 8.0, "gaudi"),
        ("google.com/tpu", 4, 4.0, "tpu"),
        ("aws.amazon.com/neuron", 16, 16.0, "neuron"),
        ("aws.amazon.com/neurondevice", 1, 1.0, "neuron"),
        ("aws.amazon.com/neuroncore", 2, 1.0, "neuron"),  # two NeuronCore-v2 make one Inferentia2/Trainium
    ],
)
def test_accelerators_count_as_gpus_with_their_family(resource: str, amount: Any, gpus: float, gpu_type: str) -> None:
    work = one(job({resource: amount, "memory": "64Gi"})).workload
    assert (work.gpus, work.gpu_type) == (gpus, gpu_type)


def test_monitoring_resources_and_nvidia_keep_their_meaning() -> None:
    assert one(job({"gpu.intel.com/i915_monitoring": 1})).workload.gpus == 0
    work = one(job({"nvidia.com/gpu": 2})).workload
    assert (work.gpus, work.gpu_type) == (2, None)  # an NVIDIA GPU's model is unknown without a label


def test_a_pinned_accelerator_label_names_the_type() -> None:
    selector = {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                "cloud.google.com/gke-tpu-topology": "2x4"}
    work = one(job({"google.com/tpu": 4}, selector)).workload
    assert (work.gpus, work.gpu_type) == (4, "tpu-v5-lite-podslice")


def test_shared_resource_list() -> None:
    from costwarden.adapters.kubernetes_accelerators import ACCELERATOR_RESOURCES, WHOLE_GPU_RESOURCES

    assert {"nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe", "habana.ai/gaudi",
            "google.com/tpu", "aws.amazon.com/neuron", "aws.amazon.com/neurondevice",
            "aws.amazon.com/neuroncore"} == set(ACCELERATOR_RESOURCES)
    assert "aws.amazon.com/neuroncore" not in WHOLE_GPU_RESOURCES
    assert "habana.ai/gaudi" in WHOLE_GPU_RESOURCES


GAUDI_JOBSET = textwrap.dedent("""
    apiVersion: jobset.x-k8s.io/v1alpha2
    kind: JobSet
    metadata: {name: gaudi-train}
    spec:
      replicatedJobs:
      - name: workers
        replicas: 2
        template:
          spec:
            template:
              spec:
                restartPolicy: OnFailure
                containers:
                - name: train
                  image: vault.habana.ai/gaudi-docker/1.24.0/ubuntu22.04/habanalabs/pytorch-installer-2.10.0:latest
                  resources:
                    limits: {habana.ai/gaudi: 8, memory: 409Gi, hugepages-2Mi: 95000Mi}
    """)

GPU_SPOT = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: gpu-spot}
spec:
  subject: resource
  rules:
    - name: spot
      spotOnly: {workloadClasses: [batch], minGpus: 1}
    - name: count
      expr: {cel: "subject.workload.gpus == 0.0", message: "uses accelerators"}
"""


@pytest.fixture
def gpu_spot(compile_policies: CompilePolicies) -> PolicySet:
    return compile_policies(GPU_SPOT)


def test_gpu_rules_catch_a_gaudi_training_job(gpu_spot: PolicySet) -> None:
    [subject] = k8s.subjects_from_text(GAUDI_JOBSET, "gaudi.yaml")
    assert (subject.workload.gpus, subject.workload.replicas) == (8, 2)  # per pod, and two pods
    results = {r.rule: r.result for r in gpu_spot.evaluate(subject).results}
    assert results == {"spot": "fail", "count": "fail"}


def test_gpu_rules_catch_a_tpu_job_and_pass_it_on_spot(gpu_spot: PolicySet) -> None:
    tpu = job({"google.com/tpu": 4}, {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice"})
    assert {r.rule: r.result for r in gpu_spot.evaluate(one(tpu)).results} == {"spot": "fail", "count": "fail"}
    tpu["spec"]["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-spot"] = "true"
    assert {r.rule: r.result for r in gpu_spot.evaluate(one(tpu)).results} == {"spot": "pass", "count": "fail"}


CAP = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: cap}
spec:
  subject: resource
  rules:
    - name: cap
      maxHourlyCost: {limitUsd: 10}
"""


@pytest.mark.parametrize("resource", ["habana.ai/gaudi", "google.com/tpu", "aws.amazon.com/neuron", "gpu.intel.com/xe"])
def test_an_unpriced_accelerator_is_reported_not_priced_at_zero(compile_policies: CompilePolicies,
                                                                resource: str) -> None:
    [r] = compile_policies(CAP).evaluate(one(job({resource: 8}))).results
    assert r.result == "skip"  # as for an unknown GPU model: not a pass at $0
    assert r.message.startswith("no price known for 8x ")


def test_a_catalog_price_for_the_family_prices_it(compile_policies: CompilePolicies) -> None:
    catalog = ("apiVersion: costwarden.dev/v1\nkind: ModelCatalog\nmetadata: {name: hw}\nspec:\n"
               "  gpuPrices:\n    GAUDI: {onDemandUsd: 2.0, spotUsd: 1.0}\n")
    [r] = compile_policies(CAP, catalog).evaluate(one(job({"habana.ai/gaudi": 8}))).results
    assert (r.result, r.actual) == ("fail", 16.0)
