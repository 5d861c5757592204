"""The Kubernetes manifest adapter: documents and lines, tags, GPUs, capacity, pointers."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from costwarden.adapters import kubernetes as k8s
from costwarden.adapters.kubernetes_workloads import container_gpus, pod_gpus
from costwarden.engine import patch
from costwarden.engine.subjects import Resource
from costwarden.errors import AdapterError


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def one(obj: dict[str, Any]) -> Resource:
    [subject] = k8s.subjects_from_object(obj)
    return subject


def pod(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "main", "image": "x"}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **meta}, "spec": spec}


def job(pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "main"}], **pod_spec}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": template, **spec}}


def gpu(n: Any, resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    return {"name": "c", "resources": {"limits": {resource: n}}}


def term(*exprs: tuple[str, str, list[str]]) -> dict[str, Any]:
    return {"matchExpressions": [{"key": k, "operator": op, "values": v} for k, op, v in exprs]}


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": list(terms)}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


# --- documents and lines --------------------------------------------------------------------------


def test_documents_carry_their_first_content_line_and_skip_empty_ones() -> None:
    text = _yaml("""
        # leading comment
        apiVersion: v1
        kind: Namespace
        metadata: {name: a}
        ---
        ---
        # only a comment
        ---

        kind: Namespace
        metadata: {name: b}
        ...
        """)
    docs = k8s.load_documents(text, "ns.yaml")
    assert [(d["metadata"]["name"], line) for d, line in docs] == [("a", 2), ("b", 10)]


def test_yaml_syntax_error_raises_adapter_error_with_line() -> None:
    text = "kind: Pod\nmetadata:\n  name: a\n---\nkind: Pod\nmetadata: {name: [b\n"
    with pytest.raises(AdapterError) as err:
        k8s.load_documents(text, "bad.yaml")
    assert err.value.file == "bad.yaml"
    assert err.value.line is not None and err.value.line >= 6
    assert str(err.value).startswith(f"bad.yaml:{err.value.line}: invalid YAML")


def test_yaml_error_on_bad_indentation_points_at_the_line() -> None:
    text = "kind: Pod\nmetadata:\n  name: a\n labels: {}\n"
    with pytest.raises(AdapterError) as err:
        k8s.load_documents(text, "bad.yaml")
    assert err.value.line == 4


def test_documents_that_are_not_mappings_are_skipped() -> None:
    docs = k8s.load_documents("kind: Pod\n---\n- a\n- b\n---\njust text\n---\nkind: Job\n", "x.yaml")
    assert [(d["kind"], line) for d, line in docs] == [("Pod", 1), ("Job", 8)]


def test_list_objects_expand_into_items_with_their_lines() -> None:
    text = _yaml("""
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Pod
          metadata: {name: a}
        - apiVersion: batch/v1
          kind: Job
          metadata: {name: b}
        """)
    docs = k8s.load_documents(text, "list.yaml")
    assert [(d["kind"], d["metadata"]["name"], line) for d, line in docs] == [("Pod", "a", 4), ("Job", "b", 7)]
    subjects = k8s.subjects_from_text(text, "list.yaml")
    assert [s.source.pointer for s in subjects] == ["/items/0", "/items/1"]
    assert subjects[1].workload.workload_class == "batch"


def test_typed_lists_give_their_items_the_item_kind() -> None:
    text = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  spec: {containers: []}\n"
    [(doc, line)] = k8s.load_documents(text, "pods.yaml")
    assert (doc["kind"], doc["apiVersion"], line) == ("Pod", "v1", 4)


def test_json_input_and_json_lists() -> None:
    obj = {"apiVersion": "v1", "kind": "List", "items": [pod({}), job({})]}
    text = "\n\n" + json.dumps(obj, indent=2)
    docs = k8s.load_documents(text, "list.json")
    assert [(d["kind"], line) for d, line in docs] == [("Pod", 3), ("Job", 3)]
    [(single, line)] = k8s.load_documents(json.dumps(pod({})), "pod.json")
    assert (single["kind"], line) == ("Pod", 1)


def test_yaml_flow_mapping_that_is_not_json_still_loads() -> None:
    [(doc, line)] = k8s.load_documents("{kind: Pod, metadata: {name: a}}\n", "flow.yaml")
    assert doc == {"kind": "Pod", "metadata": {"name": "a"}} and line == 1


def test_anchors_merge_keys_and_yaml11_scalars_load_as_pyyaml_does() -> None:
    text = _yaml("""
        kind: ConfigMap
        base: &base {a: 1, b: x}
        merged: {<<: *base, b: y}
        alias: *base
        flags: [yes, off, ~, 0x10, 1.5, "true", 2024-01-02]
        """)
    import yaml

    [(doc, _)] = k8s.load_documents(text, "a.yaml")
    assert doc == yaml.safe_load(text)
    assert doc["merged"] == {"a": 1, "b": "y"}


# --- tags -----------------------------------------------------------------------------------------


def test_label_values_are_coerced_to_strings() -> None:
    subject = one(pod({}, labels={"gpu": True, "replicas": 8, "ratio": 0.5, "empty": None, "team": "ml"}))
    assert dict(subject.tags) == {"gpu": "true", "replicas": "8", "ratio": "0.5", "empty": "", "team": "ml"}
    assert subject.tags_pointer == "/metadata/labels"


def test_pod_controllers_are_judged_by_pod_template_labels() -> None:
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "prod", "labels": {"team": "object-level"}},
        "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "d"}},
                                             "spec": {"containers": [gpu(2)]}}},
    }
    subject = one(deploy)
    assert dict(subject.tags) == {"app": "d"}
    assert subject.tags_pointer == "/spec/template/metadata/labels"
    assert patch.resolve(deploy, subject.tags_pointer) == {"app": "d"}
    assert (subject.namespace, subject.workload.workload_class) == ("prod", "online")
    assert (subject.workload.gpus, subject.workload.replicas) == (2, 3)


def test_annotations_are_the_objects_own() -> None:
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"costwarden.dev/cost-approved-by": "ana@example.com",
                                                  "replicas-note": 3}},
        "spec": {"template": {"metadata": {"labels": {"app": "d"}, "annotations": {"prometheus.io/scrape": "true"}},
                              "spec": {"containers": [gpu(1)]}}},
    }
    subject = one(deploy)
    assert dict(subject.annotations) == {"costwarden.dev/cost-approved-by": "ana@example.com", "replicas-note": "3"}
    assert dict(subject.tags) == {"app": "d"}
    plain = one({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"a": "b"}}})
    assert dict(plain.annotations) == {"a": "b"}
    assert dict(one(pod({})).annotations) == {}


def test_cronjob_pointers_point_into_the_job_template() -> None:
    cron = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"parallelism": 2, "template": {
            "metadata": {"labels": {"team": "ml"}},
            "spec": {"nodeSelector": {"karpenter.sh/capacity-type": "spot"}, "containers": [gpu(1)]},
        }}}},
    }
    subject = one(cron)
    assert subject.pod_spec_pointers == ("/spec/jobTemplate/spec/template/spec",)
    assert subject.tags_pointer == "/spec/jobTemplate/spec/template/metadata/labels"
    assert dict(subject.tags) == {"team": "ml"}
    assert (subject.workload.workload_class, subject.capacity) == ("batch", "spot")
    assert (subject.workload.gpus, subject.workload.replicas) == (1, 2)
    assert "containers" in patch.resolve(cron, subject.pod_spec_pointers[0])


def test_missing_labels_give_a_pointer_that_fixes_can_create() -> None:
    obj = job({})
    subject = one(obj)
    assert subject.tags == {}
    ops = patch.set_entries(obj, subject.tags_pointer or "", {"team": "ml"})
    assert ops == [{"op": "add", "path": "/spec/template/metadata", "value": {"labels": {"team": "ml"}}}]


def test_other_objects_are_resources_without_a_workload() -> None:
    ns = one({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"owner": "x"}}})
    assert (ns.kind, ns.name, ns.namespace, dict(ns.tags)) == ("Namespace", "team-a", "team-a", {"owner": "x"})
    assert ns.workload.workload_class == "unknown" and ns.pod_spec_pointers == ()
    svc = one({"kind": "Service", "metadata": {"name": "s", "namespace": "n"}, "spec": {"ports": []}})
    assert (svc.namespace, svc.workload.gpus, svc.tags_pointer, svc.provider) == ("n", 0, "/metadata/labels",
                                                                                   "kubernetes")


def test_workload_class_label_refines_but_never_loosens_the_kind() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"template": {"metadata": {"labels": {k8s.WORKLOAD_CLASS_LABEL: "batch"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert one(deployment).workload.workload_class == "batch"
    obj = job({})
    obj["metadata"]["labels"] = {k8s.WORKLOAD_CLASS_LABEL: "online"}
    assert one(obj).workload.workload_class == "batch"  # a Job cannot label itself out of batch rules
    obj["metadata"]["labels"] = {k8s.WORKLOAD_CLASS_LABEL: "nonsense"}
    assert one(obj).workload.workload_class == "batch"


def test_source_location() -> None:
    [subject] = k8s.subjects_from_object(pod({}), file="m.yaml", line=7, pointer="/items/2")
    assert subject.source.to_dict() == {"file": "m.yaml", "line": 7, "pointer": "/items/2"}
    assert subject.raw is not None and subject.raw["kind"] == "Pod"


# --- capacity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-spot", True),  # unquoted in YAML
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
])
def test_spot_via_node_selector(key: str, value: Any) -> None:
    assert one(job({"nodeSelector": {key: value}})).capacity == "spot"


@pytest.mark.parametrize(("selector", "capacity"), [
    ({"karpenter.sh/capacity-type": "on-demand"}, "on-demand"),
    ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, "on-demand"),
    ({"karpenter.sh/capacity-type": "reserved"}, "reserved"),
    ({"eks.amazonaws.com/capacityType": "spot"}, "unknown"),  # label values are case-sensitive
    ({"kubernetes.io/arch": "amd64"}, "unknown"),
])
def test_other_node_selector_pins(selector: dict[str, str], capacity: str) -> None:
    assert one(job({"nodeSelector": selector})).capacity == capacity


def test_spot_via_affinity_needs_every_ored_term_to_pin_spot() -> None:
    spot = term(("karpenter.sh/capacity-type", "In", ["spot"]))
    either = term(("karpenter.sh/capacity-type", "In", ["spot", "on-demand"]))
    zone = term(("topology.kubernetes.io/zone", "In", ["us-east-1a"]))
    assert one(job({"affinity": affinity(spot)})).capacity == "spot"
    assert one(job({"affinity": affinity(spot, term(("cloud.google.com/gke-spot", "Exists", [])))})).capacity \
        == "spot"
    assert one(job({"affinity": affinity(spot, zone)})).capacity == "unknown"
    assert one(job({"affinity": affinity(either)})).capacity == "unknown"
    assert one(job({"affinity": affinity(term(("karpenter.sh/capacity-type", "NotIn", ["spot"])))})).capacity \
        == "on-demand"


def test_a_toleration_alone_is_not_spot() -> None:
    toleration = {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot",
                  "effect": "NoSchedule"}
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": term(("kubernetes.azure.com/scalesetpriority", "In", ["spot"]))}]}}
    assert one(job({"tolerations": [toleration], "affinity": preferred})).capacity == "unknown"


def test_multi_template_objects_are_spot_when_every_gpu_template_is() -> None:
    spot = {"cloud.google.com/gke-spot": "true", "cloud.google.com/gke-accelerator": "nvidia-l4"}

    def ray(worker_selector: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "r"}, "spec": {
            "entrypoint": "python x.py",
            "rayClusterSpec": {
                "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head"}]}}},
                "workerGroupSpecs": [
                    {"replicas": 2, "template": {"spec": {"nodeSelector": worker_selector,
                                                          "containers": [gpu(4)]}}},
                    {"replicas": 1, "template": {"spec": {"nodeSelector": spot, "containers": [gpu(1)]}}},
                ],
            }}}

    subject = one(ray(spot))
    assert (subject.capacity, subject.workload.workload_class) == ("spot", "batch")
    assert (subject.workload.gpus, subject.workload.replicas, subject.workload.gpu_type) == (9, 1, "nvidia-l4")
    assert subject.pod_spec_pointers == (
        "/spec/rayClusterSpec/headGroupSpec/template/spec",
        "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec",
        "/spec/rayClusterSpec/workerGroupSpecs/1/template/spec",
    )
    assert one(ray({"cloud.google.com/gke-accelerator": "nvidia-l4"})).capacity == "unknown"


# --- GPUs -----------------------------------------------------------------------------------------


def test_gpu_counting_per_container_and_pod() -> None:
    assert container_gpus({"resources": {"limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": 2}}}) == 2
    assert container_gpus({"resources": {"requests": {"amd.com/gpu": 1}}}) == 1
    assert container_gpus({"resources": {"limits": {"cpu": "4", "memory": "8Gi"}}}) == 0
    assert container_gpus({"resources": {"limits": {"nvidia.com/mig-3g.40gb": 2}}}) == pytest.approx(6 / 7)
    spec = {"containers": [gpu(1), gpu(2)], "initContainers": [gpu(8), {**gpu(1), "restartPolicy": "Always"}]}
    assert pod_gpus(spec) == 8  # the largest init container runs alone; app containers + sidecar = 4
    assert pod_gpus({"containers": [gpu(1)], "nodeSelector": {
        "cloud.google.com/gke-gpu-partition-size": "1g.5gb"}}) == pytest.approx(1 / 7)
    assert pod_gpus({"containers": [{}]}, {"annotations": {"gpu-fraction": "0.5"}}) == 0.5


def test_mig_profile_and_node_selected_gpu_and_instance_types() -> None:
    mig = one(job({"containers": [gpu(1, "nvidia.com/mig-1g.10gb")]}))
    assert mig.workload.gpu_type == "mig-1g.10gb" and mig.workload.gpus == pytest.approx(1 / 7)
    typed = one(job({"containers": [gpu(8)], "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
                     "affinity": affinity(term(("nvidia.com/gpu.product", "In", ["NVIDIA-H100-80GB-HBM3"])))}))
    assert (typed.workload.gpu_type, typed.workload.instance_type) == ("NVIDIA-H100-80GB-HBM3", "p5.48xlarge")


def test_leader_worker_set_counts_a_group_per_replica() -> None:
    lws = {"kind": "LeaderWorkerSet", "metadata": {"name": "l"}, "spec": {"replicas": 2, "leaderWorkerTemplate": {
        "size": 4,
        "leaderTemplate": {"spec": {"containers": [gpu(8)]}},
        "workerTemplate": {"spec": {"containers": [gpu(8)]}},
    }}}
    subject = one(lws)
    assert (subject.workload.gpus, subject.workload.replicas) == (32, 2)
    assert subject.workload.workload_class == "online"


def test_jobset_and_pytorchjob_sum_their_replicated_pods() -> None:
    jobset = {"kind": "JobSet", "metadata": {"name": "js"}, "spec": {"replicatedJobs": [
        {"name": "w", "replicas": 2, "template": {"spec": {"parallelism": 3, "template": {
            "spec": {"containers": [gpu(1)]}}}}}]}}
    subject = one(jobset)  # one pod template: GPUs per pod, replicas = pods
    assert (subject.workload.gpus, subject.workload.replicas, subject.workload.workload_class) == (1, 6, "batch")
    assert subject.pod_spec_pointers == ("/spec/replicatedJobs/0/template/spec/template/spec",)
    pytorch = {"kind": "PyTorchJob", "metadata": {"name": "pt"}, "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "template": {"spec": {"containers": [gpu(1)]}}},
        "Worker": {"replicas": 3, "template": {"spec": {"containers": [gpu(2)]}}},
    }}}
    subject = one(pytorch)
    assert (subject.workload.gpus, subject.workload.workload_class) == (7, "batch")
    assert subject.pod_spec_pointers[1] == "/spec/pytorchReplicaSpecs/Worker/template/spec"


def test_inference_service_counts_the_model_server() -> None:
    isvc = {"kind": "InferenceService", "metadata": {"name": "m"}, "spec": {"predictor": {
        "minReplicas": 2,
        "nodeSelector": {"cloud.google.com/gke-spot": "true"},
        "model": {"modelFormat": {"name": "huggingface"}, "resources": {"limits": {"nvidia.com/gpu": "1"}}},
    }}}
    subject = one(isvc)
    assert (subject.workload.gpus, subject.workload.replicas, subject.capacity) == (1, 2, "spot")
    assert subject.pod_spec_pointers == ("/spec/predictor",)
    assert subject.workload.workload_class == "online"


def test_unknown_kinds_are_searched_for_pod_templates() -> None:
    volcano = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "v"},
               "spec": {"tasks": [{"replicas": 4, "template": {"spec": {"containers": [gpu(1)]}}}]}}
    subject = one(volcano)
    assert (subject.workload.workload_class, subject.workload.gpus) == ("batch", 1)
    assert subject.workload.replicas == 4 and subject.pod_spec_pointers == ("/spec/tasks/0/template/spec",)
    crd = {"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t"},
           "spec": {"workerTemplate": {"spec": {"containers": [gpu(2)]}}}}
    assert one(crd).workload.gpus == 2
    policy = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
              "spec": {"rules": [{"template": {"spec": {"containers": [gpu(1)]}}}]}}
    assert one(policy).pod_spec_pointers == ()


def test_json_arrays_give_each_object_its_index_pointer() -> None:
    subjects = k8s.subjects_from_text(json.dumps([pod({}), job({})]), "many.json")
    assert [(s.kind, s.source.pointer) for s in subjects] == [("Pod", "/0"), ("Job", "/1")]


def test_pathological_nesting_is_an_adapter_error_not_a_crash() -> None:
    with pytest.raises(AdapterError, match="nested too deeply"):
        k8s.load_documents("[" * 100_000 + "]" * 100_000, "deep.json")
    with pytest.raises(AdapterError, match="nesting depth"):
        k8s.load_documents("a: " + "[" * 5_000 + "]" * 5_000, "deep.yaml")
    looped = "kind: X\nspec: {x: &b [*b, *b], template: {spec: {containers: [{name: c}]}}}\n"
    assert k8s.subjects_from_text(looped, "loop.yaml")[0].pod_spec_pointers == ("/spec/template/spec",)


# --- contradictory pins and sidecars (review findings) --------------------------------------------


@pytest.mark.parametrize(("pod_spec", "capacity"), [
    # nodeSelector and required affinity are ANDed: spot AND on-demand matches no node
    ({"nodeSelector": {"karpenter.sh/capacity-type": "spot"},
      "affinity": affinity(term(("karpenter.sh/capacity-type", "In", ["on-demand"])))}, "unknown"),
    # two platforms' labels in one nodeSelector that disagree
    ({"nodeSelector": {"karpenter.sh/capacity-type": "spot", "eks.amazonaws.com/capacityType": "ON_DEMAND"}},
     "unknown"),
    # one term whose expressions disagree can never be satisfied
    ({"affinity": affinity(term(("karpenter.sh/capacity-type", "In", ["spot"]),
                                ("eks.amazonaws.com/capacityType", "In", ["ON_DEMAND"])))}, "unknown"),
    # consistent pins from both places stay pinned
    ({"nodeSelector": {"karpenter.sh/capacity-type": "spot"},
      "affinity": affinity(term(("karpenter.sh/capacity-type", "In", ["spot"])))}, "spot"),
    ({"nodeSelector": {"karpenter.sh/capacity-type": "spot"},
      "affinity": affinity(term(("topology.kubernetes.io/zone", "In", ["us-east-1a"])))}, "spot"),
])
def test_contradictory_capacity_pins_are_not_spot(pod_spec: dict[str, Any], capacity: str) -> None:
    assert one(job(pod_spec)).capacity == capacity


def test_an_init_container_after_a_gpu_sidecar_runs_beside_it() -> None:
    sidecar = {**gpu(1), "restartPolicy": "Always"}
    # the sidecar starts first and keeps running while the 8-GPU init container runs: 9 GPUs at once
    assert pod_gpus({"containers": [gpu(1)], "initContainers": [sidecar, gpu(8)]}) == 9
    # an init container that runs before the sidecar starts runs alone
    assert pod_gpus({"containers": [gpu(1)], "initContainers": [gpu(8), sidecar]}) == 8


@pytest.mark.parametrize(("key", "values"), [
    ("cloud.google.com/gke-spot", ["false"]),  # on-demand GKE nodes have no gke-spot label at all
    ("kubernetes.azure.com/scalesetpriority", ["regular"]),  # AKS regular pools carry no such label
    ("karpenter.sh/capacity-type", ["on-demand", "reserved"]),  # nodes Karpenter did not make lack it
])
def test_not_in_never_pins_spot_because_nodes_without_the_label_match_it(key: str, values: list[str]) -> None:
    assert one(job({"affinity": affinity(term((key, "NotIn", values)))})).capacity == "unknown"
