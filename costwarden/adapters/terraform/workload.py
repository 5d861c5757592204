"""What a planned resource runs: instance type, GPUs or AI chips (from accelerator blocks or the
instance-type tables here), replicas and workload class."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from costwarden.adapters.terraform.values import Path, _dig, _mapping
from costwarden.engine.catalog import normalize_gpu
from costwarden.engine.subjects import WORKLOAD_CLASSES, Workload, WorkloadClass

# Tag keys that override the workload class; GCP label keys cannot hold '.' or '/'.
WORKLOAD_CLASS_TAGS = ("costwarden.dev/workload-class", "costwarden-workload-class")

# AWS accelerated instance families: family → (accelerator type, {size: count}). Catalog names.
_ONE_TO_16 = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
_AWS_GPUS: dict[str, tuple[str, dict[str, float]]] = {
    "p3": ("V100", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    "p3dn": ("V100", {"24xlarge": 8}),
    "p4d": ("A100", {"24xlarge": 8}),
    "p4de": ("A100-80GB", {"24xlarge": 8}),
    "p5": ("H100", {"4xlarge": 1, "48xlarge": 8}),
    "p5e": ("H200", {"48xlarge": 8}),
    "p5en": ("H200", {"48xlarge": 8}),
    "p6-b200": ("B200", {"48xlarge": 8}),
    "p6-b300": ("B300", {"48xlarge": 8}),
    "p6e-gb200": ("GB200", {"36xlarge": 4}),
    "g4dn": ("T4", {**_ONE_TO_16, "12xlarge": 4, "metal": 8}),
    "g4ad": ("RADEON-PRO-V520", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 2, "16xlarge": 4}),
    "g5": ("A10G", {**_ONE_TO_16, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g5g": ("T4G", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 2, "metal": 2}),
    "g6": ("L4", {**_ONE_TO_16, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6e": ("L40S", {**_ONE_TO_16, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "inf1": ("INFERENTIA", {"xlarge": 1, "2xlarge": 1, "6xlarge": 4, "24xlarge": 16}),
    "inf2": ("INFERENTIA2", {"xlarge": 1, "8xlarge": 1, "24xlarge": 6, "48xlarge": 12}),
    "trn1": ("TRAINIUM", {"2xlarge": 1, "32xlarge": 16}),
    "trn1n": ("TRAINIUM", {"32xlarge": 16}),
    "trn2": ("TRAINIUM2", {"48xlarge": 16}),
}
# GCE accelerator-optimised machine families (``a3-highgpu-8g`` = 8 GPUs); G2 by vCPUs.
_GCE_GPUS = {
    "a2-highgpu": "A100", "a2-megagpu": "A100", "a2-ultragpu": "A100-80GB", "a3-highgpu": "H100",
    "a3-megagpu": "H100", "a3-edgegpu": "H100", "a3-ultragpu": "H200", "a4-highgpu": "B200",
    "a4x-highgpu": "GB200",
}  # fmt: skip
_G2_GPUS = {"4": 1, "8": 1, "12": 1, "16": 1, "32": 1, "24": 2, "48": 4, "96": 8}
_GCE_MACHINE = re.compile(r"^([a-z0-9]+-[a-z]+gpu)-(\d+)g$")

_INSTANCE_PATHS: dict[str, tuple[Path, ...]] = {
    "aws_eks_node_group": (("instance_types", 0),),
    "aws_batch_compute_environment": (("compute_resources", 0, "instance_type", 0),),
    "aws_autoscaling_group": (("mixed_instances_policy", 0, "launch_template", 0, "override", 0, "instance_type"),),
    "google_container_node_pool": (("node_config", 0, "machine_type"),),
    "azurerm_linux_virtual_machine": (("size",),),
    "azurerm_windows_virtual_machine": (("size",),),
    "azurerm_virtual_machine": (("vm_size",),),
    "azurerm_linux_virtual_machine_scale_set": (("sku",),),
    "azurerm_windows_virtual_machine_scale_set": (("sku",),),
    "azurerm_kubernetes_cluster_node_pool": (("vm_size",),),
}
_DEFAULT_INSTANCE_PATHS: tuple[Path, ...] = (("instance_type",), ("machine_type",))
_REPLICA_PATHS: dict[str, tuple[Path, ...]] = {
    "aws_eks_node_group": (("scaling_config", 0, "desired_size"), ("scaling_config", 0, "min_size")),
    "aws_autoscaling_group": (("desired_capacity",), ("min_size",)),
    "google_container_node_pool": (("node_count",), ("initial_node_count",), ("autoscaling", 0, "min_node_count")),
    "google_compute_instance_group_manager": (("target_size",),),
    "google_compute_region_instance_group_manager": (("target_size",),),
    "azurerm_linux_virtual_machine_scale_set": (("instances",),),
    "azurerm_windows_virtual_machine_scale_set": (("instances",),),
    "azurerm_kubernetes_cluster_node_pool": (("node_count",),),
}
_ACCELERATOR_PATHS: dict[str, Path] = {"google_container_node_pool": ("node_config", 0, "guest_accelerator")}


def workload(rtype: str, after: Mapping[str, Any], tags: Mapping[str, str]) -> Workload:
    """Instance type, accelerators, replicas and class of one planned resource."""
    instance_type = _first_str(after, _INSTANCE_PATHS.get(rtype, _DEFAULT_INSTANCE_PATHS))
    gpus, gpu_type = _accelerators(_dig(after, _ACCELERATOR_PATHS.get(rtype, ("guest_accelerator",))))
    if not gpus:
        gpus, gpu_type = accelerators_of(instance_type)
    replicas = next((v for p in _REPLICA_PATHS.get(rtype, ()) if _is_int(v := _dig(after, p))), 1)
    zones = after.get("node_locations")
    if rtype == "google_container_node_pool" and isinstance(zones, list) and zones:
        replicas *= len(zones)  # a node pool's counts are per zone: the plan names its zones
    return Workload(
        workload_class=_workload_class(rtype, after, tags),
        gpus=gpus,
        gpu_type=gpu_type,
        instance_type=instance_type,
        replicas=max(int(replicas), 1),
    )


def _workload_class(rtype: str, after: Mapping[str, Any], tags: Mapping[str, str]) -> WorkloadClass:
    override = next((tags[k] for k in WORKLOAD_CLASS_TAGS if tags.get(k) in WORKLOAD_CLASSES), None)
    if override is not None:
        return cast(WorkloadClass, override)
    sagemaker_training = rtype.startswith("aws_sagemaker_") and (
        "training" in rtype or "enable_managed_spot_training" in after
    )
    return "batch" if rtype.startswith("aws_batch_") or sagemaker_training else "unknown"


def accelerators_of(instance_type: str | None) -> tuple[float, str | None]:
    """(count, type) of the GPUs or AI chips built into an AWS instance or GCE machine type."""
    if not instance_type:
        return 0.0, None
    name = instance_type.rsplit("/", 1)[-1].lower()
    family, _, size = name.partition(".")
    if size:
        gpu_type, sizes = _AWS_GPUS.get(family, ("", {}))
        return (float(sizes[size]), gpu_type) if size in sizes else (0.0, None)
    match = _GCE_MACHINE.match(name)
    if match and match.group(1) in _GCE_GPUS:
        return float(match.group(2)), _GCE_GPUS[match.group(1)]
    if name.startswith("g2-standard-") and name[12:] in _G2_GPUS:
        return float(_G2_GPUS[name[12:]]), "L4"
    return 0.0, None


def _accelerators(blocks: Any) -> tuple[float, str | None]:
    count, kind = 0.0, None
    for block in blocks if isinstance(blocks, list) else ():
        n = _mapping(block).get("count")
        if isinstance(n, (int, float)) and n > 0:
            count += n
            name = _mapping(block).get("type")
            kind = kind or (normalize_gpu(name.rsplit("/", 1)[-1]) if isinstance(name, str) else None)
    return count, kind


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _first_str(after: Mapping[str, Any], paths: Sequence[Path]) -> str | None:
    return next((v for p in paths if isinstance(v := _dig(after, p), str) and v), None)
