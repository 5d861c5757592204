"""Terraform plans (``terraform show -json``) → ``resource`` subjects.

One subject per managed resource the plan creates or updates (``include_all=True``: every
managed resource that exists after the apply, no-ops included); data sources and pure deletions
are skipped. Values come from ``change.after``; a plan without ``resource_changes`` falls back to
``planned_values`` (every planned resource: without actions nothing can be left out)::

    >>> plan = {"format_version": "1.2", "resource_changes": [{"address": "aws_instance.web",
    ...     "mode": "managed", "type": "aws_instance", "name": "web", "change": {
    ...     "actions": ["create"], "after": {"instance_type": "p5.48xlarge",
    ...     "tags_all": {"team": "ml"}}, "after_unknown": {}}}]}
    >>> [web] = subjects_from_plan(plan)
    >>> web.kind, web.capacity, web.workload.gpus, dict(web.tags)
    ('aws_instance', 'on-demand', 8.0, {'team': 'ml'})

Tags are the *effective* tags, what billing will see:

* AWS and others: ``tags_all`` (provider ``default_tags`` merged) when the plan knows it, else
  ``tags`` over the provider's constant ``default_tags`` from ``configuration``. ``tags`` may be
  a map, a list of ``{key, value}`` objects (old ``aws_autoscaling_group``) or ``"key:value"``
  strings (Datadog). ASG ``tag`` blocks and launch-template ``tag_specifications[].tags`` are
  merged in (they tag what gets launched, which is what costs). ``volume_tags`` and EKS node
  ``labels`` are not: they label other objects (EBS volumes, Kubernetes nodes).
* GCP: ``effective_labels``, else ``terraform_labels``, else ``labels`` (``tags`` on GCP are
  network tags). A node pool adds ``node_config[0].resource_labels``, the labels its VMs are
  billed under; ``node_config[0].labels`` are Kubernetes node labels and are left out.
* A tag whose value is unknown until apply (``after_unknown``) is present with the value
  :data:`UNKNOWN_VALUE`, so key checks pass and value regexes see that placeholder. A tag map
  that is unknown as a whole contributes no keys (they cannot be known).

Capacity follows what the plan states: a compute resource without a spot option is on-demand
(the provider default), non-compute resources are ``unknown``, and so are instances whose market
options live in a launch template (``aws_instance`` with ``launch_template``, ASGs without a
mixed-instances policy). ``workload.gpus`` counts GPUs, or Inferentia/Trainium chips, from GCE
``guest_accelerator`` blocks or the instance-type tables below; ``replicas`` is a node group's
desired size, a node pool's node count (per zone), an ASG's desired capacity, else 1. The
workload class is ``batch`` for AWS Batch and SageMaker training, else ``unknown``, unless the
tag ``costwarden.dev/workload-class`` (GCP: ``costwarden-workload-class``) names a class.
``tags_pointer`` is None: fixes do not patch plans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from costwarden.engine.catalog import normalize_gpu
from costwarden.engine.subjects import (
    WORKLOAD_CLASSES,
    Capacity,
    Resource,
    SourceLocation,
    Workload,
    WorkloadClass,
)
from costwarden.errors import AdapterError

PROVIDER = "terraform"
UNKNOWN_VALUE = "(known after apply)"
# Tag keys that override the workload class; GCP label keys cannot hold '.' or '/'.
WORKLOAD_CLASS_TAGS = ("costwarden.dev/workload-class", "costwarden-workload-class")
_CHANGING = frozenset({"create", "update"})

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
_GCP_ZONE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
_AWS_AZ = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$")
_INDEX = re.compile(r'\[(?:\d+|"(?:[^"\\]|\\.)*")\]')

Path = tuple[str | int, ...]
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


def is_plan(doc: Mapping[str, Any]) -> bool:
    """True for a ``terraform show -json`` plan (not a state file, which has ``values``)."""
    return (
        isinstance(doc, Mapping) and "format_version" in doc and ("planned_values" in doc or "resource_changes" in doc)
    )


def subjects_from_plan(
    plan: Mapping[str, Any], *, file: str | None = None, include_all: bool = False
) -> list[Resource]:
    """Resource subjects for a parsed plan; raises AdapterError for a malformed one."""
    return _subjects(plan, file, include_all, lines=None)


def subjects_from_plan_text(text: str, *, file: str | None = None, include_all: bool = False) -> list[Resource]:
    """Like :func:`subjects_from_plan` for the plan's JSON text, with the line of each
    resource's ``"address"`` in ``source.line`` (always 1 in Terraform's own one-line output)."""
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdapterError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from exc
    return _subjects(plan, file, include_all, lines=text)


# --- walking the plan ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    address: str
    type: str
    name: str
    module: str
    after: Mapping[str, Any]
    unknown: Mapping[str, Any]
    pointer: str


def _subjects(plan: Any, file: str | None, include_all: bool, lines: str | None) -> list[Resource]:
    if not isinstance(plan, Mapping) or not is_plan(plan):
        raise AdapterError(
            "not a Terraform plan (terraform show -json): no format_version and planned_values/resource_changes",
            file=file,
        )
    if plan.get("resource_changes") is not None:
        entries, anchor = list(_changes(plan["resource_changes"], include_all, file)), '"resource_changes"'
    else:
        root = _mapping(plan.get("planned_values")).get("root_module")
        entries, anchor = list(_planned(root, "", "/planned_values/root_module", file)), '"planned_values"'
    config = _Configuration(plan)
    found = _address_lines(lines, anchor, [e.address for e in entries]) if lines else [None] * len(entries)
    return [_resource(e, config, SourceLocation(file, line, e.pointer)) for e, line in zip(entries, found, strict=True)]


def _changes(changes: Any, include_all: bool, file: str | None) -> Iterator[_Entry]:
    if not isinstance(changes, list):
        raise AdapterError("/resource_changes: must be a list", file=file)
    for i, rc in enumerate(changes):
        pointer = f"/resource_changes/{i}"
        if not isinstance(rc, Mapping) or not isinstance(rc.get("change"), Mapping):
            raise AdapterError(f"{pointer}: must be an object with a 'change' object", file=file)
        change = rc["change"]
        after, actions = change.get("after"), change.get("actions") or ()
        if rc.get("mode", "managed") != "managed" or after is None:
            continue  # data sources; deletions and forgets leave nothing behind to judge
        if not include_all and _CHANGING.isdisjoint(actions):
            continue
        if not isinstance(after, Mapping):
            raise AdapterError(f"{pointer}/change/after: must be an object", file=file)
        yield _entry(
            rc, after, _mapping(change.get("after_unknown")), str(rc.get("module_address") or ""), pointer, file
        )


def _planned(module: Any, module_address: str, pointer: str, file: str | None) -> Iterator[_Entry]:
    if not isinstance(module, Mapping):
        return
    for i, res in enumerate(module.get("resources") or ()):
        if isinstance(res, Mapping) and res.get("mode", "managed") == "managed":
            yield _entry(res, _mapping(res.get("values")), {}, module_address, f"{pointer}/resources/{i}", file)
    for j, child in enumerate(module.get("child_modules") or ()):
        address = str(_mapping(child).get("address") or "")
        yield from _planned(child, address, f"{pointer}/child_modules/{j}", file)


def _entry(
    res: Mapping[str, Any],
    after: Mapping[str, Any],
    unknown: Mapping[str, Any],
    module: str,
    pointer: str,
    file: str | None,
) -> _Entry:
    address, rtype = res.get("address"), res.get("type")
    if not isinstance(address, str) or not isinstance(rtype, str):
        raise AdapterError(f"{pointer}: 'address' and 'type' must be strings", file=file)
    return _Entry(address, rtype, str(res.get("name") or ""), module, after, unknown, pointer)


def _address_lines(text: str, anchor: str, addresses: Sequence[str]) -> list[int | None]:
    """Line of each ``"address": "<addr>"`` after ``anchor``, found in document order."""
    pos = text.find(anchor)
    line, counted = 1 + text.count("\n", 0, max(pos, 0)), max(pos, 0)
    out: list[int | None] = []
    for address in addresses:
        plain = json.dumps(address, ensure_ascii=False)
        go = plain.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        pattern = r'"address"\s*:\s*(?:' + re.escape(plain) + "|" + re.escape(go) + ")"
        match = re.compile(pattern).search(text, counted) if pos >= 0 else None
        if match is None:
            out.append(None)
            continue
        line += text.count("\n", counted, match.start())
        counted = match.start()
        out.append(line)
    return out


# --- configuration: provider region, project and default tags -------------------------------


@dataclass(frozen=True, slots=True)
class _Provider:
    region: str | None = None
    project: str | None = None
    default_tags: Mapping[str, str] | None = None


_NO_PROVIDER = _Provider()


class _Configuration:
    """Constant provider settings from ``configuration``, and which provider each resource uses."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        config = _mapping(plan.get("configuration"))
        self.providers = {str(k): _provider(_mapping(v)) for k, v in _mapping(config.get("provider_config")).items()}
        self.keys: dict[str, str] = {}
        self._walk(_mapping(config.get("root_module")), "")

    def _walk(self, module: Mapping[str, Any], prefix: str) -> None:
        for res in module.get("resources") or ():
            if isinstance(res, Mapping) and isinstance(res.get("address"), str):
                self.keys[prefix + res["address"]] = str(res.get("provider_config_key") or "")
        for name, call in _mapping(module.get("module_calls")).items():
            self._walk(_mapping(_mapping(call).get("module")), f"{prefix}module.{name}.")

    def provider(self, entry: _Entry) -> _Provider:
        module = _INDEX.sub("", entry.module)
        local = f"{entry.type}.{entry.name}"
        key = self.keys.get(f"{module}.{local}" if module else local) or entry.type.split("_", 1)[0]
        # A module that inherits its parent's provider names it "<module>:<name>".
        return self.providers.get(key) or self.providers.get(key.rsplit(":", 1)[-1]) or _NO_PROVIDER


def _provider(pc: Mapping[str, Any]) -> _Provider:
    exprs = _mapping(pc.get("expressions"))

    def constant(name: str) -> Any:
        return _mapping(exprs.get(name)).get("constant_value")

    block = exprs.get("default_tags")
    tags = _mapping(_dig(block, (0, "tags", "constant_value")))
    region, project = constant("region"), constant("project")
    return _Provider(
        region=region if isinstance(region, str) else None,
        project=project if isinstance(project, str) else None,
        default_tags={str(k): _text(v) for k, v in tags.items()} or None,
    )


# --- one resource ---------------------------------------------------------------------------


def _resource(entry: _Entry, config: _Configuration, source: SourceLocation) -> Resource:
    provider = config.provider(entry)
    tags = effective_tags(entry.type, entry.after, entry.unknown, provider.default_tags)
    return Resource(
        provider=PROVIDER,
        kind=entry.type,
        name=entry.address,
        namespace=_namespace(entry, provider),
        region=_region(entry.type, entry.after, provider),
        tags=tags,
        capacity=capacity(entry.type, entry.after),
        workload=workload(entry.type, entry.after, tags),
        source=source,
        raw=entry.after,
    )


def _namespace(entry: _Entry, provider: _Provider) -> str | None:
    if not entry.type.startswith("google_"):
        return None
    key = "project_id" if entry.type == "google_project" else "project"
    value = entry.after.get(key)
    return value if isinstance(value, str) else provider.project


def _region(rtype: str, after: Mapping[str, Any], provider: _Provider) -> str | None:
    region = after.get("region")
    if isinstance(region, str) and region:
        return region
    if rtype.startswith("azurerm_") and isinstance(after.get("location"), str):
        return str(after["location"]) or None
    for key, pattern in (("zone", _GCP_ZONE), ("location", _GCP_ZONE), ("availability_zone", _AWS_AZ)):
        value = after.get(key)
        if isinstance(value, str) and value:
            match = pattern.match(value)
            if match:
                return match.group(1)
            if key == "location" and "-" in value:
                return value
    return provider.region


# --- tags -----------------------------------------------------------------------------------


def effective_tags(
    rtype: str,
    after: Mapping[str, Any],
    unknown: Mapping[str, Any] | None = None,
    default_tags: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags (GCP: labels) a resource will carry after the apply; see the module docstring."""
    unknown = unknown or {}
    if rtype.startswith("google_"):
        tags = _gcp_labels(after, unknown)
        if rtype == "google_container_node_pool":
            node = _mapping(_dig(after, ("node_config", 0)))
            tags |= _tag_map(node.get("resource_labels"), _dig(unknown, ("node_config", 0, "resource_labels")))
        return tags
    if isinstance(after.get("tags_all"), Mapping):
        tags = _tag_map(after["tags_all"], unknown.get("tags_all"))
    else:
        tags = dict(default_tags or {}) if unknown.get("tags_all") is True else {}
        tags |= _tag_map(after.get("tags"), unknown.get("tags"))
    if rtype == "aws_autoscaling_group":
        tags |= _tag_map(after.get("tag"), unknown.get("tag"))
    specs = after.get("tag_specifications")
    if isinstance(specs, list):  # launch templates: instance tags last, so they win
        for i in sorted(range(len(specs)), key=lambda i: _mapping(specs[i]).get("resource_type") == "instance"):
            tags |= _tag_map(_mapping(specs[i]).get("tags"), _dig(unknown, ("tag_specifications", i, "tags")))
    return tags


def _gcp_labels(after: Mapping[str, Any], unknown: Mapping[str, Any]) -> dict[str, str]:
    for key in ("effective_labels", "terraform_labels", "labels", "resource_labels"):
        if isinstance(after.get(key), Mapping):
            return _tag_map(after[key], unknown.get(key))
    return {}


def _tag_map(value: Any, unknown: Any) -> dict[str, str]:
    """A map, a list of ``{key, value}`` objects or of ``key:value`` strings → tags; unknown values
    (``after_unknown``) become :data:`UNKNOWN_VALUE`."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        out = {str(k): _text(v) for k, v in value.items()}
        if isinstance(unknown, Mapping):
            out |= {str(k): UNKNOWN_VALUE for k, flag in unknown.items() if flag is True}
    elif isinstance(value, list):
        flags = unknown if isinstance(unknown, list) else []
        for i, item in enumerate(value):
            flag = flags[i] if i < len(flags) else None
            if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                value_unknown = flag is True or (isinstance(flag, Mapping) and flag.get("value") is True)
                out[item["key"]] = UNKNOWN_VALUE if value_unknown else _text(item.get("value"))
            elif isinstance(item, str):
                key, _, text = item.partition(":")
                out[key] = text
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- capacity -------------------------------------------------------------------------------


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


# --- workload -------------------------------------------------------------------------------


def workload(rtype: str, after: Mapping[str, Any], tags: Mapping[str, str]) -> Workload:
    """Instance type, accelerators, replicas and class of one planned resource."""
    instance_type = _first_str(after, _INSTANCE_PATHS.get(rtype, _DEFAULT_INSTANCE_PATHS))
    gpus, gpu_type = _accelerators(_dig(after, _ACCELERATOR_PATHS.get(rtype, ("guest_accelerator",))))
    if not gpus:
        gpus, gpu_type = accelerators_of(instance_type)
    replicas = next((v for p in _REPLICA_PATHS.get(rtype, ()) if _is_int(v := _dig(after, p))), 1)
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


# --- plain-data helpers ---------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dig(value: Any, path: Path) -> Any:
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _first_str(after: Mapping[str, Any], paths: Sequence[Path]) -> str | None:
    return next((v for p in paths if isinstance(v := _dig(after, p), str) and v), None)


__all__ = [
    "PROVIDER",
    "UNKNOWN_VALUE",
    "WORKLOAD_CLASS_TAGS",
    "accelerators_of",
    "capacity",
    "effective_tags",
    "is_plan",
    "subjects_from_plan",
    "subjects_from_plan_text",
    "workload",
]
