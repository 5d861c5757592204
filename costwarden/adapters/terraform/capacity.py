"""The capacity of a planned resource, as the plan states it: spot, on-demand or reserved for
compute, ``unknown`` for the rest and where a launch template decides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from costwarden.adapters.terraform.values import Path, _dig, _mapping
from costwarden.engine.subjects import Capacity


def _upper(after: Mapping[str, Any], path: Path) -> str:
    value = _dig(after, path)
    return value.upper() if isinstance(value, str) else ""


def _market(after: Mapping[str, Any]) -> Capacity:
    market = _upper(after, ("instance_market_options", 0, "market_type"))
    return "spot" if market == "SPOT" else "reserved" if market == "CAPACITY-BLOCK" else "on-demand"


def _aws_instance(after: Mapping[str, Any]) -> Capacity:
    if not _dig(after, ("instance_market_options", 0)) and _dig(after, ("launch_template", 0)):
        return "unknown"  # the launch template decides
    return _market(after)


def _asg(after: Mapping[str, Any]) -> Capacity:
    policy = _dig(after, ("mixed_instances_policy", 0))
    if not isinstance(policy, Mapping):
        return "unknown"  # the launch template or configuration decides
    dist = _mapping(_dig(policy, ("instances_distribution", 0)))
    base, share = dist.get("on_demand_base_capacity") or 0, dist.get("on_demand_percentage_above_base_capacity")
    share = 100 if share is None else share
    return "spot" if base == 0 and share == 0 else "on-demand" if share == 100 else "unknown"


def _batch(after: Mapping[str, Any]) -> Capacity:
    kind = _upper(after, ("compute_resources", 0, "type"))
    return "spot" if kind in ("SPOT", "FARGATE_SPOT") else "on-demand" if kind in ("EC2", "FARGATE") else "unknown"


def _eks(after: Mapping[str, Any]) -> Capacity:
    kind = _upper(after, ("capacity_type",))
    return "spot" if kind == "SPOT" else "reserved" if kind == "CAPACITY_BLOCK" else "on-demand"


def _gce(after: Mapping[str, Any]) -> Capacity:
    spot = _upper(after, ("scheduling", 0, "provisioning_model")) == "SPOT"
    return "spot" if spot or _dig(after, ("scheduling", 0, "preemptible")) is True else "on-demand"


def _node_pool(after: Mapping[str, Any]) -> Capacity:
    node = _mapping(_dig(after, ("node_config", 0)))
    return "spot" if node.get("spot") is True or node.get("preemptible") is True else "on-demand"


def _azure(after: Mapping[str, Any]) -> Capacity:
    return "spot" if _upper(after, ("priority",)) == "SPOT" else "on-demand"


def _fleet(after: Mapping[str, Any]) -> Capacity:
    kind = _upper(after, ("target_capacity_specification", 0, "default_target_capacity_type"))
    return "spot" if kind == "SPOT" else "on-demand" if kind == "ON-DEMAND" else "reserved" if kind else "unknown"


def _always(value: Capacity) -> Callable[[Mapping[str, Any]], Capacity]:
    return lambda _after: value


_CAPACITY: dict[str, Callable[[Mapping[str, Any]], Capacity]] = {
    "aws_instance": _aws_instance,
    "aws_spot_instance_request": _always("spot"),
    "aws_spot_fleet_request": _always("spot"),
    "aws_ec2_fleet": _fleet,
    "aws_launch_template": _market,
    "aws_launch_configuration": lambda a: "spot" if a.get("spot_price") else "on-demand",
    "aws_autoscaling_group": _asg,
    "aws_eks_node_group": _eks,
    "aws_batch_compute_environment": _batch,
    "aws_sagemaker_notebook_instance": _always("on-demand"),
    "google_compute_instance": _gce,
    "google_compute_instance_template": _gce,
    "google_compute_region_instance_template": _gce,
    "google_container_node_pool": _node_pool,
    "azurerm_virtual_machine": _always("on-demand"),
    "azurerm_linux_virtual_machine": _azure,
    "azurerm_windows_virtual_machine": _azure,
    "azurerm_linux_virtual_machine_scale_set": _azure,
    "azurerm_windows_virtual_machine_scale_set": _azure,
    "azurerm_orchestrated_virtual_machine_scale_set": _azure,
    "azurerm_kubernetes_cluster_node_pool": _azure,
}


def capacity(rtype: str, after: Mapping[str, Any]) -> Capacity:
    """Spot, on-demand or reserved as the plan states it; ``unknown`` for non-compute resources."""
    rule = _CAPACITY.get(rtype)
    if rule is not None:
        return rule(after)
    if rtype.startswith("aws_sagemaker_") and isinstance(after.get("enable_managed_spot_training"), bool):
        return "spot" if after["enable_managed_spot_training"] else "on-demand"
    return "unknown"
