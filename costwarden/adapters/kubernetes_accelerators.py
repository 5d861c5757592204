"""Which accelerators a Kubernetes pod asks for, how many devices that is, and what type.

Every accelerator counts in the subject's ``workload.gpus`` and names itself in ``gpu_type``
(the subject has one accelerator count, see DESIGN.md "Subjects"): a policy about GPU spend
(``spotOnly`` with ``minGpus``, ``maxHourlyCost``, ``subject.workload.gpus > 0`` in CEL) is a
policy about accelerator spend, and a Gaudi or TPU training job must not slip past it::

    >>> pod_gpus({"containers": [{"resources": {"limits": {"habana.ai/gaudi": 8}}}]})
    8.0
    >>> accelerator_family({"containers": [{"resources": {"limits": {"google.com/tpu": 4}}}]})
    'tpu'

What one unit of each device plugin's resource is (:data:`ACCELERATOR_RESOURCES`):

* ``nvidia.com/gpu``, ``amd.com/gpu``: one GPU. A MIG slice ``nvidia.com/mig-<g>g.<mem>gb`` counts
  as g/7 of a GPU (A100/H100 have 7 compute slices; an A30's quarter slices are under-counted).
* ``gpu.intel.com/i915``, ``gpu.intel.com/xe``: one Intel GPU (the i915 / xe kernel driver). The
  ``*_monitoring`` resources give monitoring access to every GPU of a node and are not counted.
* ``habana.ai/gaudi``: one Intel Gaudi card.
* ``google.com/tpu``: one TPU chip (GKE's resource counts chips).
* ``aws.amazon.com/neuron`` and ``aws.amazon.com/neurondevice``: one Neuron device (an Inferentia
  or Trainium chip, with all its cores). ``aws.amazon.com/neuroncore`` is one NeuronCore, a
  fraction of a device: ``1/2`` (NeuronCore-v2, two per Inferentia2 / Trainium1 device). Inf1
  devices have four cores and Trainium2 eight physical ones, so there a core is over-counted:
  the error errs towards more spend, never towards $0.

A container asks for ``max(limits, requests)`` of each resource; a pod asks for its containers
plus restartable init containers (sidecars), or its largest other init container plus the sidecars
started before it, if that is more. On GKE, ``cloud.google.com/gke-gpu-partition-size:
<g>g.<mem>gb`` turns ``nvidia.com/gpu: 1`` into the same g/7, and the KAI scheduler's
``gpu-fraction`` pod annotation counts as that fraction.

vLLM's parallel sizes count NeuronCores on AWS Neuron, not devices (:func:`neuron_cores`): a
NeuronCore asked for is one core; a device has 2 on Inf2 / Trn1, and on Trn2 its 8 physical cores
grouped by the logical-core setting (``NEURON_LOGICAL_NC_CONFIG`` 1 or 2: 8 or 4 cores). Where the
instance type does not say which device it is, a device has 2, 4 or 8. TPUs need no such
conversion: vLLM's TPU backend shards over chips, which ``google.com/tpu`` counts.

The type is the node label the pod pins (:data:`ACCELERATOR_TYPE_LABELS`), else the MIG profile,
else the accelerator's family (``tpu``, ``gaudi``, ``intel-gpu``, ``neuron``) for the
resources that say which hardware they are. No family is given for ``nvidia.com/gpu`` and
``amd.com/gpu``, which name no model. A type the price table does not know is not priced (rules
report it, as for an unknown GPU model), never priced at $0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ACCELERATOR_RESOURCES: Mapping[str, float] = {
    "nvidia.com/gpu": 1.0,
    "amd.com/gpu": 1.0,
    "gpu.intel.com/i915": 1.0,
    "gpu.intel.com/xe": 1.0,
    "habana.ai/gaudi": 1.0,
    "google.com/tpu": 1.0,
    "aws.amazon.com/neuron": 1.0,
    "aws.amazon.com/neurondevice": 1.0,
    "aws.amazon.com/neuroncore": 0.5,
}
"""Extended resource → accelerator devices per unit (the module docstring says why)."""

ACCELERATOR_FAMILIES: Mapping[str, str] = {
    "gpu.intel.com/i915": "intel-gpu",
    "gpu.intel.com/xe": "intel-gpu",
    "habana.ai/gaudi": "gaudi",
    "google.com/tpu": "tpu",
    "aws.amazon.com/neuron": "neuron",
    "aws.amazon.com/neurondevice": "neuron",
    "aws.amazon.com/neuroncore": "neuron",
}
"""The accelerator type a resource implies when no node label names the model."""

WHOLE_GPU_RESOURCES = frozenset(name for name, per_unit in ACCELERATOR_RESOURCES.items() if per_unit == 1.0)
"""Resources whose unit is one whole device (a VLLMRuntime's ``gpuType`` must be one)."""

ACCELERATOR_TYPE_LABELS = (
    "cloud.google.com/gke-accelerator",
    "nvidia.com/gpu.product",
    "karpenter.k8s.aws/instance-gpu-name",
    "karpenter.azure.com/sku-gpu-name",
    "cloud.google.com/gke-tpu-accelerator",
)
"""Node labels whose value names the accelerator model, first match wins."""

NEURONCORE_RESOURCE = "aws.amazon.com/neuroncore"
NEURON_DEVICE_RESOURCES = ("aws.amazon.com/neuron", "aws.amazon.com/neurondevice")
NEURON_LNC_ENV = "NEURON_LOGICAL_NC_CONFIG"
NEURONCORES_PER_DEVICE: Mapping[str, tuple[int, ...]] = {"inf2": (2,), "trn1": (2,), "trn1n": (2,)}
"""NeuronCores per device by EC2 instance family (NeuronCore-v2: two per Inferentia2 / Trainium1)."""
TRN2_PHYSICAL_CORES = 8
ANY_NEURON_DEVICE = (2, 4, 8)
"""NeuronCores a device of unknown generation may have: Inf2/Trn1, Trn2 with LNC=2, Trn2 with LNC=1."""
MIG_PREFIX = "nvidia.com/mig-"
MIG_SLICES_PER_GPU = 7
GKE_PARTITION_LABEL = "cloud.google.com/gke-gpu-partition-size"
KAI_FRACTION_ANNOTATION = "gpu-fraction"

_MIG = re.compile(r"(\d+)g\.\d+gb")
_QUANTITY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(m?)\s*")
_EMPTY: Mapping[str, Any] = {}


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


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


def mig_fraction(profile: str) -> float:
    """``1g.10gb`` / ``nvidia.com/mig-3g.40gb`` → g/7 of a GPU; 0 when it is not a MIG profile."""
    match = _MIG.search(profile)
    return int(match.group(1)) / MIG_SLICES_PER_GPU if match else 0.0


def _amounts(resources: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for section in ("limits", "requests"):
        for name, value in _map(resources.get(section)).items():
            if name in ACCELERATOR_RESOURCES or (isinstance(name, str) and name.startswith(MIG_PREFIX)):
                out[name] = max(out.get(name, 0.0), quantity(value))
    return out


def container_gpus(container: Mapping[str, Any]) -> float:
    """Accelerator devices one container asks for: ``max(limits, requests)`` per resource."""
    total = 0.0
    for name, amount in _amounts(_map(container.get("resources"))).items():
        per_unit = ACCELERATOR_RESOURCES.get(name)
        total += amount * (per_unit if per_unit is not None else mig_fraction(name))
    return total


def pod_containers(spec: Mapping[str, Any], key: str = "containers") -> list[Mapping[str, Any]]:
    """The mappings in a pod spec's ``containers`` (or ``initContainers``) list."""
    value = spec.get(key)
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def _resource_names(spec: Mapping[str, Any]) -> list[str]:
    """The accelerator resources a pod's containers (init containers too) ask for, in order."""
    containers = pod_containers(spec, "containers") + pod_containers(spec, "initContainers")
    return [name for c in containers for name in _amounts(_map(c.get("resources")))]


def mig_profile(spec: Mapping[str, Any]) -> str | None:
    """The first MIG resource a pod's containers ask for, as ``mig-<g>g.<mem>gb``."""
    return next((n.removeprefix("nvidia.com/") for n in _resource_names(spec) if n.startswith(MIG_PREFIX)), None)


def accelerator_family(spec: Mapping[str, Any]) -> str | None:
    """The family of the first accelerator a pod asks for whose resource names its hardware."""
    return next((ACCELERATOR_FAMILIES[n] for n in _resource_names(spec) if n in ACCELERATOR_FAMILIES), None)


def neuron_cores(container: Mapping[str, Any], instance_type: str | None = None) -> tuple[float, ...]:
    """The NeuronCores a container gets, each possible count once, smallest first; ``()`` when it
    asks for no Neuron accelerator. One count when it asks for cores, or for devices on an instance
    type whose cores per device are known; several when they are not::

        >>> neuron_cores({"resources": {"limits": {"aws.amazon.com/neuron": 1}}}, "inf2.xlarge")
        (2.0,)
        >>> neuron_cores({"resources": {"limits": {"aws.amazon.com/neuron": 1}}})
        (2.0, 4.0, 8.0)
    """
    amounts = _amounts(_map(container.get("resources")))
    cores = amounts.get(NEURONCORE_RESOURCE, 0.0)
    devices = sum(amounts.get(name, 0.0) for name in NEURON_DEVICE_RESOURCES)
    if not cores and not devices:
        return ()
    per_device = _cores_per_device(instance_type, _literal_env(container, NEURON_LNC_ENV)) if devices else (0,)
    return tuple(sorted({cores + devices * k for k in per_device}))


def _cores_per_device(instance_type: str | None, lnc: str | None) -> tuple[int, ...]:
    family = instance_type.split(".", 1)[0].lower() if instance_type else ""
    if family in NEURONCORES_PER_DEVICE:
        return NEURONCORES_PER_DEVICE[family]
    if family.startswith("trn2"):  # LNC 1 or 2; unset, it is the runtime's default for the device
        return (TRN2_PHYSICAL_CORES // int(lnc),) if lnc in ("1", "2") else (4, TRN2_PHYSICAL_CORES)
    return ANY_NEURON_DEVICE


def _literal_env(container: Mapping[str, Any], name: str) -> str | None:
    env = container.get("env")
    values = [_map(e).get("value") for e in env if _map(e).get("name") == name] if isinstance(env, list) else []
    return str(values[-1]).strip() if values and values[-1] is not None else None


def pod_gpus(spec: Mapping[str, Any], metadata: Mapping[str, Any] = _EMPTY) -> float:
    """Accelerator devices one pod asks for (see the module docstring for the rules)."""
    running = sum(container_gpus(c) for c in pod_containers(spec, "containers"))
    init_peak = 0.0
    sidecars = 0.0  # restartable init containers started so far: they keep running
    for init in pod_containers(spec, "initContainers"):
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


__all__ = [
    "ACCELERATOR_FAMILIES",
    "ACCELERATOR_RESOURCES",
    "ACCELERATOR_TYPE_LABELS",
    "GKE_PARTITION_LABEL",
    "KAI_FRACTION_ANNOTATION",
    "MIG_PREFIX",
    "MIG_SLICES_PER_GPU",
    "NEURONCORE_RESOURCE",
    "WHOLE_GPU_RESOURCES",
    "accelerator_family",
    "container_gpus",
    "mig_fraction",
    "mig_profile",
    "neuron_cores",
    "pod_containers",
    "pod_gpus",
    "quantity",
]
