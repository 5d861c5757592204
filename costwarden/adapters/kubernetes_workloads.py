"""Where each Kubernetes workload kind keeps its pod templates, and how many GPUs a pod asks for.

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

GPU counting follows the scheduler: a container asks for ``max(limits, requests)`` of
``nvidia.com/gpu`` and ``amd.com/gpu``; a MIG slice ``nvidia.com/mig-<g>g.<mem>gb`` counts as g/7
of a GPU (A100/H100 have 7 compute slices; an A30's quarter slices are under-counted); a pod asks for
its containers plus restartable init containers (sidecars), or its largest other init container
plus the sidecars started before it, if that is more. On GKE,
``cloud.google.com/gke-gpu-partition-size: <g>g.<mem>gb`` turns ``nvidia.com/gpu: 1`` into the same g/7,
and the KAI scheduler's ``gpu-fraction`` pod annotation counts as that fraction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.engine.patch import escape
from costwarden.engine.subjects import WorkloadClass

WHOLE_GPU_RESOURCES = frozenset({"nvidia.com/gpu", "amd.com/gpu"})
MIG_PREFIX = "nvidia.com/mig-"
MIG_SLICES_PER_GPU = 7
GKE_PARTITION_LABEL = "cloud.google.com/gke-gpu-partition-size"
KAI_FRACTION_ANNOTATION = "gpu-fraction"

_MIG = re.compile(r"(\d+)g\.\d+gb")
_QUANTITY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(m?)\s*")
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


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number of units; ``"500m"`` → 0.5. Unreadable → 0."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return 0.0
    number = float(match.group(1))
    return number / 1000 if match.group(2) else number


# --- GPU counting -------------------------------------------------------------------------------


def mig_fraction(profile: str) -> float:
    """``1g.10gb`` / ``nvidia.com/mig-3g.40gb`` → g/7 of a GPU; 0 when it is not a MIG profile."""
    match = _MIG.search(profile)
    return int(match.group(1)) / MIG_SLICES_PER_GPU if match else 0.0


def _gpu_amounts(resources: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for section in ("limits", "requests"):
        for name, value in _map(resources.get(section)).items():
            if name in WHOLE_GPU_RESOURCES or (isinstance(name, str) and name.startswith(MIG_PREFIX)):
                out[name] = max(out.get(name, 0.0), quantity(value))
    return out


def container_gpus(container: Mapping[str, Any]) -> float:
    """GPUs one container asks for: ``max(limits, requests)`` per GPU resource, MIG as g/7."""
    total = 0.0
    for name, amount in _gpu_amounts(_map(container.get("resources"))).items():
        total += amount if name in WHOLE_GPU_RESOURCES else amount * mig_fraction(name)
    return total


def mig_profile(spec: Mapping[str, Any]) -> str | None:
    """The first MIG resource a pod's containers ask for, as ``mig-<g>g.<mem>gb``."""
    for container in _containers(spec, "containers") + _containers(spec, "initContainers"):
        for name in _gpu_amounts(_map(container.get("resources"))):
            if name.startswith(MIG_PREFIX):
                return name.removeprefix("nvidia.com/")
    return None


def _containers(spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = spec.get(key)
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def pod_gpus(spec: Mapping[str, Any], metadata: Mapping[str, Any] = _EMPTY) -> float:
    """GPUs one pod asks for (see the module docstring for the rules)."""
    running = sum(container_gpus(c) for c in _containers(spec, "containers"))
    init_peak = 0.0
    sidecars = 0.0  # restartable init containers started so far: they keep running
    for init in _containers(spec, "initContainers"):
        if init.get("restartPolicy") == "Always":  # a sidecar runs beside the app containers
            sidecars += container_gpus(init)
        else:  # runs beside the sidecars started before it
            init_peak = max(init_peak, sidecars + container_gpus(init))
    gpus = max(running + sidecars, init_peak)
    partition = _map(spec.get("nodeSelector")).get(GKE_PARTITION_LABEL)
    if gpus and isinstance(partition, str) and mig_fraction(partition):
        gpus *= mig_fraction(partition)
    if not gpus:
        gpus = quantity(_map(metadata.get("annotations")).get(KAI_FRACTION_ANNOTATION))
    return gpus


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
        spec = {**comp, "containers": servers + _containers(comp, "containers")}
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


def _train_job(obj: Mapping[str, Any]) -> Shape:
    """Kubeflow Trainer v2 TrainJob: ``trainer.numNodes`` × ``trainer.resourcesPerNode``."""
    trainer = _at(obj, "spec", "trainer")
    if "resourcesPerNode" not in trainer:
        return Shape("batch", ())
    synthetic = {"containers": [{"resources": trainer["resourcesPerNode"]}]}
    return Shape("batch", (PodTemplate(None, synthetic, _EMPTY, _count(trainer.get("numNodes"), 1)),))


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
