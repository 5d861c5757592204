"""Where each Kubernetes workload kind keeps its pod templates.

A *shape* is what :mod:`costwarden.adapters.kubernetes` needs from an object: its workload class,
its pod templates (with JSON pointers into the object, so fixes can patch them), how many pods of
each template one replica of the object runs, and the object's own replica count::

    >>> s = workload_shape({"kind": "Job", "spec": {"parallelism": 2, "template": {"spec": {
    ...     "containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}})
    >>> s.workload_class, s.replicas, [t.spec_pointer for t in s.templates]
    ('batch', 2, ['/spec/template/spec'])

Kinds the table does not know, and known kinds whose templates are not where the table looks
(Volcano's ``batch.volcano.sh`` Job, say), are searched for pod templates generically: any
``template`` / ``*Template`` mapping whose ``spec`` has ``containers``, with ``replicas`` of the
enclosing objects multiplied in.

How many accelerators a pod asks for is :mod:`.kubernetes_accelerators`' business; its counting
functions are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.adapters.kubernetes_accelerators import (
    WHOLE_GPU_RESOURCES,
    container_gpus,
    mig_profile,
    pod_containers,
    pod_gpus,
)
from costwarden.engine.patch import escape
from costwarden.engine.subjects import WorkloadClass

_EMPTY: Mapping[str, Any] = {}
# Objects that embed pod specs as *policy text*, not as workloads: never searched generically.
_POLICY_GROUPS = ("kyverno.io", "gatekeeper.sh", "costwarden.dev")
_GENERIC_BUDGET = 20_000  # nodes visited by the generic search (shared YAML aliases can explode)
_GENERIC_DEPTH = 24  # pod templates sit a few levels down; deeper nesting is data, not workloads

BATCH_KINDS = frozenset({
    "Job", "CronJob", "RayJob", "RayCronJob", "JobSet", "TrainJob",
    "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob",
})
ONLINE_KINDS = frozenset({
    "Deployment", "StatefulSet", "ReplicaSet", "ReplicationController", "Rollout",
    "InferenceService", "ServingRuntime", "ClusterServingRuntime", "LLMInferenceService",
    "RayService", "LeaderWorkerSet", "RayClusterFleet", "StormService", "VLLMRuntime",
})


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """One pod shape in an object.

    ``spec_pointer`` is the JSON pointer of the pod spec (None for a spec synthesised from CRD
    fields that are not a pod spec); ``metadata`` is the template's metadata; ``pods`` is how many
    such pods one replica of the object runs.
    """

    spec_pointer: str | None
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]
    pods: int


@dataclass(frozen=True, slots=True)
class Shape:
    """What an object runs. ``labels_pointer`` is the pod-template labels map of the built-in pod
    controllers (Kyverno's autogen semantics), None where the object's own labels apply."""

    workload_class: WorkloadClass
    templates: tuple[PodTemplate, ...]
    replicas: int = 1
    labels_pointer: str | None = None


# --- small readers ------------------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _at(node: Any, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        node = _map(node).get(key)
    return _map(node)


def _count(value: Any, default: int) -> int:
    """A replica-like count; anything that is not a non-negative integer gives ``default``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return default


# --- pod templates per kind ---------------------------------------------------------------------


def _template(node: Any, pointer: str, pods: int) -> list[PodTemplate]:
    """A PodTemplateSpec (``{metadata, spec}``) at ``pointer``."""
    node = _map(node)
    spec = node.get("spec")
    if not isinstance(spec, Mapping):
        return []
    return [PodTemplate(pointer + "/spec", spec, _map(node.get("metadata")), pods)]


def _podspec(node: Any, pointer: str, pods: int, metadata: Mapping[str, Any] = _EMPTY) -> list[PodTemplate]:
    """A pod spec itself (``{containers, nodeSelector, ...}``) at ``pointer``."""
    return [PodTemplate(pointer, node, metadata, pods)] if isinstance(node, Mapping) else []


def _pod(obj: Mapping[str, Any]) -> Shape:
    return Shape("unknown", tuple(_podspec(obj.get("spec"), "/spec", 1, _map(obj.get("metadata")))))


def _controller(cls: WorkloadClass, replicated: bool) -> Callable[[Mapping[str, Any]], Shape]:
    def shape(obj: Mapping[str, Any]) -> Shape:
        spec = _map(obj.get("spec"))
        replicas = _count(spec.get("replicas"), 1) if replicated else 1
        templates = _template(spec.get("template"), "/spec/template", 1)
        return Shape(cls, tuple(templates), replicas, "/spec/template/metadata/labels")

    return shape


def _job(obj: Mapping[str, Any]) -> Shape:
    spec = _map(obj.get("spec"))
    templates = _template(spec.get("template"), "/spec/template", 1)
    return Shape("batch", tuple(templates), _count(spec.get("parallelism"), 1), "/spec/template/metadata/labels")


def _cronjob(obj: Mapping[str, Any]) -> Shape:
    job = _at(obj, "spec", "jobTemplate", "spec")
    base = "/spec/jobTemplate/spec/template"
    templates = _template(job.get("template"), base, 1)
    return Shape("batch", tuple(templates), _count(job.get("parallelism"), 1), base + "/metadata/labels")


def _ray_templates(cluster: Mapping[str, Any], base: str) -> list[PodTemplate]:
    """Head and worker groups of a RayCluster spec. A worker group counts ``replicas`` (else
    ``minReplicas``) × ``numOfHosts`` pods; one that autoscales up from zero counts one pod, so
    the cluster still shows the GPUs it will run on."""
    out = _template(_at(cluster, "headGroupSpec").get("template"), base + "/headGroupSpec/template", 1)
    groups = cluster.get("workerGroupSpecs")
    for i, group in enumerate(groups if isinstance(groups, list) else ()):
        group = _map(group)
        pods = _count(group.get("replicas"), _count(group.get("minReplicas"), 1))
        if pods == 0 and _count(group.get("maxReplicas"), 0) > 0:
            pods = 1
        pods *= _count(group.get("numOfHosts"), 1)
        out += _template(group.get("template"), f"{base}/workerGroupSpecs/{i}/template", pods)
    return out


def _ray(cls: WorkloadClass, *path: str) -> Callable[[Mapping[str, Any]], Shape]:
    base = "".join("/" + p for p in path)

    def shape(obj: Mapping[str, Any]) -> Shape:
        return Shape(cls, tuple(_ray_templates(_at(obj, *path), base)))

    return shape


def _ray_fleet(obj: Mapping[str, Any]) -> Shape:
    spec = _map(obj.get("spec"))
    templates = _ray_templates(_at(spec, "template", "spec"), "/spec/template/spec")
    return Shape("online", tuple(templates), _count(spec.get("replicas"), 1))


def _leader_worker_set(obj: Mapping[str, Any]) -> Shape:
    spec = _map(obj.get("spec"))
    lwt = _map(spec.get("leaderWorkerTemplate"))
    size = max(_count(lwt.get("size"), 1), 1)
    base = "/spec/leaderWorkerTemplate"
    leader = _template(lwt.get("leaderTemplate"), base + "/leaderTemplate", 1)
    workers = _template(lwt.get("workerTemplate"), base + "/workerTemplate", size - 1 if leader else size)
    return Shape("online", tuple(leader + workers), _count(spec.get("replicas"), 1))


def _replica_specs(obj: Mapping[str, Any]) -> Shape:
    """Kubeflow training jobs: ``spec.<x>ReplicaSpecs.<role>.{replicas, template}``."""
    out: list[PodTemplate] = []
    for key, roles in _map(obj.get("spec")).items():
        if isinstance(key, str) and key.endswith("ReplicaSpecs"):
            for role, rs in _map(roles).items():
                rs = _map(rs)
                pointer = f"/spec/{escape(key)}/{escape(str(role))}/template"
                out += _template(rs.get("template"), pointer, _count(rs.get("replicas"), 1))
    return Shape("batch", tuple(out))


def _jobset(obj: Mapping[str, Any]) -> Shape:
    out: list[PodTemplate] = []
    jobs = _map(obj.get("spec")).get("replicatedJobs")
    for i, rj in enumerate(jobs if isinstance(jobs, list) else ()):
        job = _at(rj, "template", "spec")
        pods = _count(_map(rj).get("replicas"), 1) * _count(job.get("parallelism"), 1)
        out += _template(job.get("template"), f"/spec/replicatedJobs/{i}/template/spec/template", pods)
    return Shape("batch", tuple(out))


def _inference_service(obj: Mapping[str, Any]) -> Shape:
    """KServe components embed a pod spec; the model server is ``model``, a framework key
    (``sklearn``, ``huggingface``...) or ``containers``. Scale-to-zero counts one pod."""
    out: list[PodTemplate] = []
    for name in ("predictor", "transformer", "explainer"):
        comp = _at(obj, "spec", name)
        if not comp:
            continue
        servers = [v for v in comp.values() if isinstance(v, Mapping) and "resources" in v]
        spec = {**comp, "containers": servers + pod_containers(comp)}
        pods = max(_count(comp.get("minReplicas"), 1), 1)
        out += _podspec(spec, f"/spec/{name}", pods, _map(comp.get("metadata")))
        out += _podspec(comp.get("workerSpec"), f"/spec/{name}/workerSpec", pods)
    return Shape("online", tuple(out))


def _llm_inference_service(obj: Mapping[str, Any]) -> Shape:
    """KServe LLMInferenceService: decode ``template`` (+ multi-node ``worker``), and the same
    under ``prefill``, each with its own ``replicas``. Worker pods count once per replica."""
    spec = _map(obj.get("spec"))
    out: list[PodTemplate] = []
    for base, part in (("/spec", spec), ("/spec/prefill", _map(spec.get("prefill")))):
        if part is not spec and not part:
            continue
        pods = _count(part.get("replicas"), 1)
        out += _podspec(part.get("template"), base + "/template", pods)
        out += _podspec(part.get("worker"), base + "/worker", pods)
    return Shape("online", tuple(out))


def _serving_runtime(obj: Mapping[str, Any]) -> Shape:
    return Shape("online", tuple(_podspec(obj.get("spec"), "/spec", 1)))


def _vllm_runtime(obj: Mapping[str, Any]) -> Shape:
    """production-stack VLLMRuntime: ``resources.gpu`` is a CRD field, not a pod spec, so the
    template is synthesised and has no pointer."""
    spec = _map(obj.get("spec"))
    deploy = _map(spec.get("deploymentConfig"))
    res = _map(deploy.get("resources") or spec.get("resources"))
    resource = res.get("gpuType")
    resource = resource if resource in WHOLE_GPU_RESOURCES else "nvidia.com/gpu"
    synthetic = {"containers": [{"resources": {"limits": {resource: res.get("gpu", 0)}}}]}
    replicas = _count(deploy.get("replicas", spec.get("replicas")), 1)
    return Shape("online", (PodTemplate(None, synthetic, _EMPTY, 1),), replicas)


# Replicated jobs of a TrainingRuntime that run the trainer nodes (``node``; ``trainer`` in some
# runtimes), as a TrainJob's pod overrides name them in ``targetJobs``.
TRAINER_JOBS = frozenset({"node", "trainer"})
_PLACEMENT = ("affinity", "tolerations")


def _trainer_overrides(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(pointer, pod fields) of each TrainJob pod override aimed at the trainer nodes, in the
    order they apply: ``podSpecOverrides[]`` (pod fields inline, the early alphas),
    ``podTemplateOverrides[].spec`` (Trainer v2.0), ``templateOverrides[].pod[].spec`` (later)."""
    def entries(node: Any, pointer: str, nested: bool) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for i, entry in enumerate(node if isinstance(node, list) else ()):
            entry = _map(entry)
            targets = entry.get("targetJobs")
            names = {_map(t).get("name") for t in targets} if isinstance(targets, list) else set()
            fields = entry.get("spec") if nested else entry
            if names & TRAINER_JOBS and isinstance(fields, Mapping):
                yield f"{pointer}/{i}" + ("/spec" if nested else ""), fields

    yield from entries(spec.get("podSpecOverrides"), "/spec/podSpecOverrides", False)
    yield from entries(spec.get("podTemplateOverrides"), "/spec/podTemplateOverrides", True)
    groups = spec.get("templateOverrides")
    for j, group in enumerate(groups if isinstance(groups, list) else ()):
        yield from entries(_map(group).get("pod"), f"/spec/templateOverrides/{j}/pod", True)


def _train_job(obj: Mapping[str, Any]) -> Shape:
    """Kubeflow Trainer v2 TrainJob: ``trainer.numNodes`` × ``trainer.resourcesPerNode``, placed
    by the pod overrides aimed at the trainer nodes (later ones win a field; nodeSelectors merge).
    The runtime's own template is not in the object. The pointer is the last such override, where
    a fix's nodeSelector and tolerations take effect."""
    spec = _map(obj.get("spec"))
    trainer = _map(spec.get("trainer"))
    pod: dict[str, Any] = {"containers": []}
    if "resourcesPerNode" in trainer:
        pod["containers"] = [{"resources": trainer["resourcesPerNode"]}]
    overrides = list(_trainer_overrides(spec))
    for _, fields in overrides:
        if isinstance(fields.get("nodeSelector"), Mapping):
            pod["nodeSelector"] = {**_map(pod.get("nodeSelector")), **fields["nodeSelector"]}
        pod.update({key: fields[key] for key in _PLACEMENT if key in fields})
    if not overrides and not pod["containers"]:
        return Shape("batch", ())
    pointer = overrides[-1][0] if overrides else None
    return Shape("batch", (PodTemplate(pointer, pod, _EMPTY, _count(trainer.get("numNodes"), 1)),))


def _storm_service(obj: Mapping[str, Any]) -> Shape:
    """AIBrix StormService: ``spec.template.spec.roles[].{replicas, podGroupSize, template}``."""
    spec = _map(obj.get("spec"))
    roles = _at(spec, "template", "spec").get("roles")
    out: list[PodTemplate] = []
    for i, role in enumerate(roles if isinstance(roles, list) else ()):
        role = _map(role)
        pods = _count(role.get("replicas"), 1) * _count(role.get("podGroupSize"), 1)
        out += _template(role.get("template"), f"/spec/template/spec/roles/{i}/template", pods)
    return Shape("online", tuple(out), _count(spec.get("replicas"), 1))


SHAPES: dict[str, Callable[[Mapping[str, Any]], Shape]] = {
    "Pod": _pod,
    "Deployment": _controller("online", True),
    "StatefulSet": _controller("online", True),
    "ReplicaSet": _controller("online", True),
    "ReplicationController": _controller("online", True),
    "DaemonSet": _controller("unknown", False),
    "Job": _job,
    "CronJob": _cronjob,
    "RayCluster": _ray("unknown", "spec"),
    "RayJob": _ray("batch", "spec", "rayClusterSpec"),
    "RayCronJob": _ray("batch", "spec", "jobTemplate", "rayClusterSpec"),
    "RayService": _ray("online", "spec", "rayClusterConfig"),
    "RayClusterFleet": _ray_fleet,
    "LeaderWorkerSet": _leader_worker_set,
    "PyTorchJob": _replica_specs,
    "TFJob": _replica_specs,
    "MPIJob": _replica_specs,
    "XGBoostJob": _replica_specs,
    "PaddleJob": _replica_specs,
    "JAXJob": _replica_specs,
    "TrainJob": _train_job,
    "JobSet": _jobset,
    "InferenceService": _inference_service,
    "LLMInferenceService": _llm_inference_service,
    "ServingRuntime": _serving_runtime,
    "ClusterServingRuntime": _serving_runtime,
    "VLLMRuntime": _vllm_runtime,
    "StormService": _storm_service,
}


def _search(node: Any, pointer: str, pods: int, budget: list[int], depth: int = 0) -> Iterator[PodTemplate]:
    """Every ``template`` / ``*Template`` PodTemplateSpec below ``node``; ``replicas`` of the
    enclosing mappings (below the object's own ``spec``) multiply ``pods``."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _GENERIC_DEPTH:
        return
    if isinstance(node, Mapping):
        if pointer != "/spec":
            pods *= _count(node.get("replicas"), 1)
        for key, value in node.items():
            if not isinstance(key, str) or not isinstance(value, (Mapping, list)):
                continue
            child = f"{pointer}/{escape(key)}"
            spec = _map(value).get("spec")
            if (key == "template" or key.endswith("Template")) and isinstance(_map(spec).get("containers"), list):
                yield from _template(value, child, pods)
            else:
                yield from _search(value, child, pods, budget, depth + 1)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _search(item, f"{pointer}/{i}", pods, budget, depth + 1)


def workload_shape(obj: Mapping[str, Any]) -> Shape | None:
    """The shape of a workload object, or None when the object runs no pods (Service, Namespace)."""
    kind = obj.get("kind")
    handler = SHAPES.get(kind) if isinstance(kind, str) else None
    shape = handler(obj) if handler else None
    if shape is not None and shape.templates:
        return shape
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and api_version.split("/")[0].endswith(_POLICY_GROUPS):
        return shape
    spec = obj.get("spec")
    found = tuple(_search(spec, "/spec", 1, [_GENERIC_BUDGET])) if isinstance(spec, Mapping) else ()
    if not found:
        return shape
    cls: WorkloadClass = shape.workload_class if shape else "unknown"
    return Shape(cls, found, _count(_map(spec).get("replicas"), 1))


__all__ = [
    "BATCH_KINDS",
    "ONLINE_KINDS",
    "SHAPES",
    "PodTemplate",
    "Shape",
    "container_gpus",
    "mig_profile",
    "pod_gpus",
    "workload_shape",
]
