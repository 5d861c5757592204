"""vLLM servers on accelerators other than NVIDIA/AMD GPUs: counted and typed as the Kubernetes
adapter counts them (one list of accelerator resources), and judged in the unit vLLM's parallel
sizes count: NeuronCores on AWS Neuron (a device has 2 on Inf2/Trn1, 4 or 8 on Trn2 by its
logical-core setting), TPU chips on TPUs (GKE's ``google.com/tpu`` counts chips too). GKE's TPU
node label values are priced by the catalog's TPU keys."""

from __future__ import annotations

from typing import Any

import pytest
from policy_support import CompilePolicies

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.detect import serving_configs_from_helm_values, serving_configs_from_resource
from costwarden.engine.catalog import normalize_gpu
from costwarden.engine.decision import RuleResult
from costwarden.engine.subjects import ServingConfig

PARALLELISM = (
    "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: serving_config\n"
    "  rules:\n    - name: r\n      servingConfig: {requirePrefixCaching: false, rejectInvalidArgs: false}\n"
)
CAP = (
    "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: cap}\nspec:\n  subject: resource\n"
    "  rules:\n    - name: cap\n      maxHourlyCost: {limitUsd: 1}\n"
)


def helm(**spec: Any) -> ServingConfig:
    values = {"servingEngineSpec": {"modelSpec": [{"name": "m", "modelURL": "Qwen/Qwen3-8B", **spec}]}}
    [subject] = serving_configs_from_helm_values(values, "values.yaml")
    return subject


@pytest.mark.parametrize(
    ("resource", "count", "gpus", "gpu_type"),
    [
        ("aws.amazon.com/neuroncore", 4, 2.0, "neuron"),  # a NeuronCore is half an Inf2/Trn1 device
        ("aws.amazon.com/neuron", 2, 2.0, "neuron"),
        ("habana.ai/gaudi", 8, 8.0, "gaudi"),
        ("gpu.intel.com/xe", 1, 1.0, "intel-gpu"),
        ("google.com/tpu", 8, 8.0, "tpu"),
        ("nvidia.com/mig-3g.40gb", 2, 6 / 7, "mig-3g.40gb"),
        ("nvidia.com/gpu", 2, 2.0, None),
    ],
)
def test_helm_values_count_accelerators_as_the_kubernetes_adapter(resource: str, count: int, gpus: float,
                                                                  gpu_type: str | None) -> None:
    subject = helm(requestGPUType=resource, requestGPU=count)
    assert (subject.gpus, subject.gpu_type) == (pytest.approx(gpus), gpu_type)


def test_helm_values_name_the_pinned_tpu_type() -> None:
    subject = helm(requestGPUType="google.com/tpu", requestGPU=8,
                   nodeSelector={"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"})
    assert (subject.gpus, subject.gpu_type) == (8.0, "tpu-v5-lite-podslice")


def deployment(resources: dict[str, Any], args: list[str], node_selector: dict[str, str] | None = None,
               env: list[dict[str, str]] | None = None) -> ServingConfig:
    container: dict[str, Any] = {"name": "vllm", "image": "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1",
                                 "command": ["vllm", "serve", "my-org/llm", *args],
                                 "resources": {"limits": resources}}
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm"},
           "spec": {"template": {"spec": spec}}}
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    return subject


def judge(compile_policies: CompilePolicies, subject: ServingConfig) -> RuleResult:
    [result] = compile_policies(PARALLELISM).evaluate(subject).results
    return result


INF2 = {"node.kubernetes.io/instance-type": "inf2.24xlarge"}
TRN2 = {"node.kubernetes.io/instance-type": "trn2.48xlarge"}


@pytest.mark.parametrize(
    ("resources", "tp", "selector", "env"),
    [
        ({"aws.amazon.com/neuroncore": 2}, 2, None, None),  # cores asked for: TP counts them
        ({"aws.amazon.com/neuroncore": 8}, 8, TRN2, None),
        ({"aws.amazon.com/neuron": 1}, 2, INF2, None),  # one Inferentia2 device: 2 NeuronCore-v2
        ({"aws.amazon.com/neuron": 6}, 12, INF2, None),
        ({"aws.amazon.com/neuron": 16}, 64, TRN2, None),  # Trainium2: 8 physical cores, LNC=2 by default
        ({"aws.amazon.com/neuron": 16}, 128, TRN2, [{"name": "NEURON_LOGICAL_NC_CONFIG", "value": "1"}]),
        ({"aws.amazon.com/neurondevice": 1}, 2, None, None),  # generation unknown: 2, 4 or 8 per device
        ({"aws.amazon.com/neuron": 16}, 64, None, None),
    ],
)
def test_vllm_on_neuron_counts_neuroncores(compile_policies: CompilePolicies, resources: dict[str, int], tp: int,
                                           selector: dict[str, str] | None, env: list[dict[str, str]] | None) -> None:
    subject = deployment(resources, ["--tensor-parallel-size", str(tp)], selector, env)
    result = judge(compile_policies, subject)
    assert result.result == "pass", result.message


def test_idle_neuroncores_fail_with_a_fix_in_cores(compile_policies: CompilePolicies) -> None:
    subject = deployment({"aws.amazon.com/neuron": 1}, ["--tensor-parallel-size", "1"], INF2)
    result = judge(compile_policies, subject)
    assert result.result == "fail" and "NeuronCore" in result.message and "1 NeuronCore(s) idle" in result.message
    assert result.fix is not None and result.fix.description == "set --tensor-parallel-size 2"


def test_too_many_neuroncores_will_not_start(compile_policies: CompilePolicies) -> None:
    subject = deployment({"aws.amazon.com/neuroncore": 2}, ["--tensor-parallel-size", "4"])
    result = judge(compile_policies, subject)
    assert result.result == "fail" and "will not start" in result.message and "NeuronCores" in result.message


def test_a_tp_wrong_for_every_neuron_generation_fails(compile_policies: CompilePolicies) -> None:
    """One device of unknown generation has 2, 4 or 8 NeuronCores: TP 3 is wrong on every one."""
    subject = deployment({"aws.amazon.com/neuron": 1}, ["--tensor-parallel-size", "3"])
    result = judge(compile_policies, subject)
    assert result.result == "fail" and "2, 4 or 8 NeuronCores" in result.message
    assert result.fix is None  # which size fills the device depends on its generation


def test_vllm_on_tpu_counts_chips(compile_policies: CompilePolicies) -> None:
    """vLLM's TPU backend shards over the chips (``--tensor-parallel-size 8`` on a v6e-8 host),
    and GKE's ``google.com/tpu`` counts chips: no conversion."""
    tpu = {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice"}
    assert judge(compile_policies, deployment({"google.com/tpu": 8}, ["-tp", "8"], tpu)).result == "pass"
    result = judge(compile_policies, deployment({"google.com/tpu": 8}, ["-tp", "4"], tpu))
    assert result.result == "fail" and "4 GPU(s) idle" in result.message


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("tpu-v5-lite-podslice", "TPU-V5E"),
        ("tpu-v5-lite-device", "TPU-V5E"),
        ("tpu-v5p-slice", "TPU-V5P"),
        ("tpu-v6e-slice", "TPU-V6E"),
        ("tpu-v4-podslice", "TPU-V4"),
        ("TPU-V5E", "TPU-V5E"),
        ("tpu", "TPU"),
    ],
)
def test_gke_tpu_labels_normalise_to_catalog_keys(label: str, key: str) -> None:
    assert normalize_gpu(label) == key


def tpu_job(label: str, chips: int = 8) -> dict[str, Any]:
    spec = {"restartPolicy": "Never", "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": label},
            "containers": [{"name": "main", "image": "x", "resources": {"limits": {"google.com/tpu": chips}}}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t"}, "spec": {"template": {"spec": spec}}}


@pytest.mark.parametrize("label", ["tpu-v5-lite-podslice", "tpu-v5-lite-device"])
def test_a_pinned_v5e_is_priced(compile_policies: CompilePolicies, label: str) -> None:
    [result] = compile_policies(CAP).evaluate(subjects_from_object(tpu_job(label))[0]).results
    assert (result.result, result.actual) == ("fail", pytest.approx(8 * 1.20))


def test_tpus_without_a_catalog_price_stay_unpriced_until_given(compile_policies: CompilePolicies) -> None:
    job = subjects_from_object(tpu_job("tpu-v6e-slice"))[0]
    [result] = compile_policies(CAP).evaluate(job).results
    assert result.result == "skip"  # no v6e price is shipped: never priced at $0 or as a v5e
    catalog = ("apiVersion: costwarden.dev/v1\nkind: ModelCatalog\nmetadata: {name: hw}\nspec:\n"
               "  gpuPrices:\n    tpu-v6e-slice: {onDemandUsd: 2.5}\n")
    [result] = compile_policies(CAP, catalog).evaluate(job).results
    assert (result.result, result.actual) == ("fail", pytest.approx(20.0))
