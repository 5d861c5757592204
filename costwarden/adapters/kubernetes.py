"""Kubernetes manifests → ``resource`` subjects.

::

    >>> docs = load_documents("kind: Job\\nmetadata: {name: train}\\nspec: {template: {spec: {\\n"
    ...                       "  nodeSelector: {karpenter.sh/capacity-type: spot}, containers: []}}}\\n", "j.yaml")
    >>> [(r.kind, r.name, r.capacity, r.workload.workload_class) for d, line in docs
    ...  for r in subjects_from_object(d, file="j.yaml", line=line)]
    [('Job', 'train', 'spot', 'batch')]

Reading the text is :mod:`.kubernetes_manifests`; where each kind keeps its pod templates,
:mod:`.kubernetes_workloads`; which accelerators a pod asks for, :mod:`.kubernetes_accelerators`.
Decisions worth knowing:

* **Tags.** The built-in pod controllers (Deployment, StatefulSet, DaemonSet, ReplicaSet,
  ReplicationController, Job, CronJob) are judged by their *pod template* labels, as Kyverno's
  autogen judges them; ``tags_pointer`` is that map (``/spec/template/metadata/labels``,
  ``/spec/jobTemplate/spec/template/metadata/labels``). Everything else, CRDs included, is judged by
  ``metadata.labels``. Label values are coerced to strings (``true`` → ``"true"``, ``8`` → ``"8"``).
* **GPUs and replicas.** ``gpus`` counts every accelerator (GPUs, Gaudi, TPU chips, Neuron
  devices), ``gpu_type`` names it. ``gpus × replicas`` is what the whole object asks for when it runs.
  With one pod template, ``gpus`` is per pod and ``replicas`` the pod count (Deployment replicas,
  Job parallelism). With several (Ray head + workers, LeaderWorkerSet leader + workers,
  PyTorchJob roles, JobSet jobs), ``gpus`` is the sum over templates of pods × GPUs per pod for
  one replica of the object, and ``replicas`` the object's own count (1 for most CRDs).
* **Capacity** is ``spot`` only when pinned: the nodeSelector names a spot value, or *every*
  required node-affinity term (terms are ORed) restricts a capacity label to spot values. A
  toleration alone allows spot but does not force it. Pinned to on-demand or reserved values
  gives those; anything else is ``unknown``. With several templates, the GPU-bearing ones (all
  of them when none asks for a GPU) must agree.
* **Workload class** comes from the kind (batch: Job, CronJob, RayJob, PyTorchJob, JobSet...;
  online: Deployment, StatefulSet, InferenceService, RayService, LeaderWorkerSet...; else
  unknown), refined by the label ``costwarden.dev/workload-class`` (a batch kind stays batch).
* A Namespace's ``namespace`` is its own name, so namespace matches and exclusions apply to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

from costwarden.adapters.kubernetes_accelerators import (
    ACCELERATOR_TYPE_LABELS,
    accelerator_family,
    mig_profile,
    pod_gpus,
)
from costwarden.adapters.kubernetes_manifests import load_documents, read_manifests
from costwarden.adapters.kubernetes_workloads import PodTemplate, Shape, workload_shape
from costwarden.engine.patch import resolve
from costwarden.engine.subjects import (
    WORKLOAD_CLASSES,
    Capacity,
    Resource,
    SourceLocation,
    Workload,
    WorkloadClass,
)
from costwarden.errors import AdapterError

PROVIDER = "kubernetes"
WORKLOAD_CLASS_LABEL = "costwarden.dev/workload-class"

# Node label → {value: capacity}. Values are case-sensitive, as the scheduler compares them.
CAPACITY_LABELS: dict[str, dict[str, Capacity]] = {
    "karpenter.sh/capacity-type": {"spot": "spot", "on-demand": "on-demand", "reserved": "reserved"},
    "eks.amazonaws.com/capacityType": {"SPOT": "spot", "ON_DEMAND": "on-demand", "CAPACITY_BLOCK": "reserved"},
    "cloud.google.com/gke-spot": {"true": "spot", "false": "on-demand"},
    "cloud.google.com/gke-preemptible": {"true": "spot", "false": "on-demand"},
    "kubernetes.azure.com/scalesetpriority": {"spot": "spot", "regular": "on-demand"},
}
# Labels only spot nodes carry: ``Exists`` pins spot, ``DoesNotExist`` pins the rest.
SPOT_ONLY_LABELS = frozenset({"cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible"})
GPU_TYPE_LABELS = ACCELERATOR_TYPE_LABELS
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
_OWN_LABELS = "/metadata/labels"
_EMPTY: Mapping[str, Any] = {}


# --- placement: capacity, GPU type, instance type -----------------------------------------------


def _label_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def labels(value: Any) -> dict[str, str]:
    """A labels map with every key and value as a string; anything else gives ``{}``."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): _label_str(v) for k, v in value.items()}


def _required_terms(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    affinity = spec.get("affinity")
    if not isinstance(affinity, Mapping):
        return []
    required = resolve(affinity, "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
    return [t for t in required if isinstance(t, Mapping)] if isinstance(required, list) else []


def _expressions(term: Mapping[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    exprs = term.get("matchExpressions")
    for expr in exprs if isinstance(exprs, list) else ():
        if isinstance(expr, Mapping):
            values = expr.get("values")
            values = [_label_str(v) for v in values] if isinstance(values, list) else []
            yield _label_str(expr.get("key")), _label_str(expr.get("operator")), values


def _term_capacity(term: Mapping[str, Any]) -> Capacity | None:
    """The capacity one node-selector term pins, if any of its (ANDed) expressions pins one (None
    when they pin different capacities: no node satisfies the term)."""
    pinned: set[Capacity] = set()
    for key, op, values in _expressions(term):
        table = CAPACITY_LABELS.get(key)
        if table is None:
            continue
        if op == "In":
            caps = {table.get(v) for v in values}
        elif op == "NotIn":
            caps = {cap for value, cap in table.items() if value not in values}
            if "spot" in caps:  # nodes without the label (on-demand ones among them) match NotIn too
                continue
            if "spot" not in caps and "on-demand" in caps:
                caps = {"on-demand"}
        elif key in SPOT_ONLY_LABELS and op in ("Exists", "DoesNotExist"):
            caps = {"spot" if op == "Exists" else "on-demand"}
        else:
            continue
        if len(caps) == 1 and None not in caps:
            pinned.add(cast(Capacity, caps.pop()))
    return pinned.pop() if len(pinned) == 1 else None


def pod_capacity(spec: Mapping[str, Any]) -> Capacity:
    """What capacity a pod spec is pinned to: by its nodeSelector and by its required node
    affinity, where every term (they are ORed) must pin the same capacity. The two are ANDed by
    the scheduler, so pins that disagree (spot in one, on-demand in the other) give ``unknown``."""
    pinned: set[Capacity] = set()
    selector = spec.get("nodeSelector")
    if isinstance(selector, Mapping):
        for key, table in CAPACITY_LABELS.items():
            if key in selector:
                cap = table.get(_label_str(selector[key]))
                if cap is not None:
                    pinned.add(cap)
    terms = _required_terms(spec)
    if terms:
        caps = {_term_capacity(t) for t in terms}
        if len(caps) == 1 and None not in caps:
            pinned.add(cast(Capacity, caps.pop()))
    return pinned.pop() if len(pinned) == 1 else "unknown"


def _pinned_value(spec: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The node-label value a pod spec selects for the first of ``keys`` it names."""
    selector = spec.get("nodeSelector")
    if isinstance(selector, Mapping):
        for key in keys:
            if selector.get(key) is not None:
                return _label_str(selector[key])
    for term in _required_terms(spec):
        for key, op, values in _expressions(term):
            if key in keys and op == "In" and values:
                return values[0]
    return None


# --- subjects -----------------------------------------------------------------------------------


def _workload_class(default: WorkloadClass, *label_maps: Mapping[str, str]) -> WorkloadClass:
    """The kind's class, which the label may refine but never loosen: a batch kind stays batch,
    so a Job cannot label itself out of batch rules (a subject cannot exempt itself)."""
    if default == "batch":
        return default
    for label_map in label_maps:
        value = label_map.get(WORKLOAD_CLASS_LABEL)
        if value in WORKLOAD_CLASSES:
            return cast(WorkloadClass, value)
    return default


def _workload(shape: Shape, cls: WorkloadClass) -> tuple[Workload, Capacity]:
    per_pod = [pod_gpus(t.spec, t.metadata) for t in shape.templates]
    bearing = [t for t, g in zip(shape.templates, per_pod, strict=True) if g > 0]
    judged: list[PodTemplate] = bearing or list(shape.templates)
    capacities = {pod_capacity(t.spec) for t in judged}
    capacity: Capacity = capacities.pop() if len(capacities) == 1 else "unknown"
    gpu_type = next((v for t in judged if (v := _pinned_value(t.spec, GPU_TYPE_LABELS))), None)
    gpu_type = gpu_type or next((v for t in bearing if (v := mig_profile(t.spec) or accelerator_family(t.spec))), None)
    instance_type = next((v for t in judged if (v := _pinned_value(t.spec, INSTANCE_TYPE_LABELS))), None)
    if len(shape.templates) == 1:
        gpus, replicas = per_pod[0], shape.replicas * shape.templates[0].pods
    else:
        gpus = sum(g * t.pods for g, t in zip(per_pod, shape.templates, strict=True))
        replicas = shape.replicas
    return Workload(cls, gpus, gpu_type, instance_type, replicas), capacity


def subjects_from_object(
    obj: Mapping[str, Any], *, file: str | None = None, line: int | None = None, pointer: str = ""
) -> list[Resource]:
    """The ``resource`` subjects of one Kubernetes object (one today; a list so that one object
    can yield several). ``pointer`` is where ``obj`` sits in its document (``/items/3``);
    ``tags_pointer`` and ``pod_spec_pointers`` are relative to ``obj``, which becomes ``raw``."""
    if not isinstance(obj, Mapping):
        raise AdapterError(f"a Kubernetes object must be a mapping, got {type(obj).__name__}", file=file, line=line)
    kind = _label_str(obj.get("kind"))
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else _EMPTY
    name = _label_str(meta.get("name"))
    namespace = meta.get("namespace")
    namespace = _label_str(namespace) if namespace is not None else (name or None if kind == "Namespace" else None)
    own_labels = labels(meta.get("labels"))
    annotations = labels(meta.get("annotations"))
    source = SourceLocation(file, line, pointer)
    shape = workload_shape(obj)
    if shape is None:
        return [Resource(PROVIDER, kind, name, namespace, tags=own_labels, source=source, raw=obj,
                         tags_pointer=_OWN_LABELS, annotations=annotations)]
    tags_pointer = shape.labels_pointer or _OWN_LABELS
    tags = own_labels if tags_pointer == _OWN_LABELS else labels(resolve(obj, tags_pointer))
    cls = _workload_class(shape.workload_class, own_labels, tags)
    workload, capacity = _workload(shape, cls)
    pointers = tuple(t.spec_pointer for t in shape.templates if t.spec_pointer is not None)
    return [Resource(PROVIDER, kind, name, namespace, tags=tags, capacity=capacity, workload=workload,
                     source=source, raw=obj, tags_pointer=tags_pointer, pod_spec_pointers=pointers,
                     annotations=annotations)]



def subjects_from_text(text: str, file: str | None = None) -> list[Resource]:
    """Every subject of a manifest text, List items with their ``/items/<i>`` pointers."""
    return [
        subject
        for doc, line, pointer in read_manifests(text, file)
        for subject in subjects_from_object(doc, file=file, line=line, pointer=pointer)
    ]


__all__ = [
    "CAPACITY_LABELS",
    "GPU_TYPE_LABELS",
    "INSTANCE_TYPE_LABELS",
    "PROVIDER",
    "SPOT_ONLY_LABELS",
    "WORKLOAD_CLASS_LABEL",
    "labels",
    "load_documents",
    "pod_capacity",
    "read_manifests",
    "subjects_from_object",
    "subjects_from_text",
]
