"""The Terraform plan adapter on small hand-built plans: selection, tags, capacity, workload, source."""

from __future__ import annotations

import json
from typing import Any

import pytest

from costwarden.adapters.terraform import (
    UNKNOWN_VALUE,
    accelerators_of,
    capacity,
    effective_tags,
    is_plan,
    subjects_from_plan,
    subjects_from_plan_text,
)
from costwarden.engine.subjects import Resource, subject_from_dict
from costwarden.errors import AdapterError


def rc(
    address: str,
    after: dict[str, Any] | None,
    *,
    actions: tuple[str, ...] = ("create",),
    unknown: dict[str, Any] | None = None,
    mode: str = "managed",
    module: str | None = None,
) -> dict[str, Any]:
    """One ``resource_changes`` entry; type and name come from the address."""
    rtype, name = address.split(".")[-2:]
    entry: dict[str, Any] = {
        "address": address,
        "mode": mode,
        "type": rtype,
        "name": name.split("[")[0],
        "change": {"actions": list(actions), "before": None, "after": after, "after_unknown": unknown or {}},
    }
    if module:
        entry["module_address"] = module
    return entry


def plan(*changes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format_version": "1.2", "terraform_version": "1.9.0", "resource_changes": list(changes), **extra}


def one(after: dict[str, Any], address: str = "aws_instance.web", **kw: Any) -> Resource:
    [subject] = subjects_from_plan(plan(rc(address, after, **kw)))
    return subject


# --- recognising and selecting ---------------------------------------------------------------


def test_is_plan() -> None:
    assert is_plan({"format_version": "1.2", "resource_changes": []})
    assert is_plan({"format_version": "0.1", "planned_values": {}})
    assert not is_plan({"format_version": "1.0", "values": {}})  # a state file
    assert not is_plan({"resource_changes": []})


@pytest.mark.parametrize("actions, judged", [
    (("create",), True), (("update",), True), (("delete", "create"), True), (("create", "delete"), True),
    (("no-op",), False), (("read",), False),
])  # fmt: skip
def test_only_created_or_updated_resources_by_default(actions: tuple[str, ...], judged: bool) -> None:
    subjects = subjects_from_plan(plan(rc("aws_s3_bucket.b", {"tags": {}}, actions=actions)))
    assert len(subjects) == int(judged)
    assert len(subjects_from_plan(plan(rc("aws_s3_bucket.b", {}, actions=actions)), include_all=True)) == 1


def test_data_sources_and_deletions_are_never_subjects() -> None:
    p = plan(
        rc("data.aws_ami.ubuntu", {"id": "x"}, actions=("read",), mode="data"),
        rc("aws_instance.old", None, actions=("delete",)),
        rc("aws_instance.new", {"instance_type": "t3.micro"}),
    )
    assert [s.name for s in subjects_from_plan(p, include_all=True)] == ["aws_instance.new"]


def test_subject_fields() -> None:
    after = {"instance_type": "t3.micro", "tags": {"team": "ml"}}
    [s] = subjects_from_plan(plan(rc("module.app.aws_instance.web[0]", after, module="module.app")), file="p.json")
    assert (s.provider, s.kind, s.namespace) == ("terraform", "aws_instance", None)
    assert s.name == "module.app.aws_instance.web[0]"
    assert s.raw == after and s.tags_pointer is None
    assert s.source.to_dict() == {"file": "p.json", "line": None, "pointer": "/resource_changes/0"}
    assert subject_from_dict({"type": "resource", **s.as_cel}).tags == s.tags  # plain data round-trips


def test_planned_values_fallback_walks_child_modules() -> None:
    p = {
        "format_version": "0.1",
        "planned_values": {
            "root_module": {
                "resources": [
                    {
                        "address": "aws_s3_bucket.a",
                        "mode": "managed",
                        "type": "aws_s3_bucket",
                        "name": "a",
                        "values": {"tags": {"x": "1"}},
                    },
                    {
                        "address": "data.aws_caller_identity.me",
                        "mode": "data",
                        "type": "aws_caller_identity",
                        "name": "me",
                        "values": {},
                    },
                ],
                "child_modules": [
                    {
                        "address": "module.m",
                        "resources": [
                            {
                                "address": "module.m.aws_instance.w",
                                "mode": "managed",
                                "type": "aws_instance",
                                "name": "w",
                                "values": {"instance_type": "g5.xlarge"},
                            }
                        ],
                    }
                ],
            }
        },
    }
    a, w = subjects_from_plan(p)
    assert (a.name, dict(a.tags)) == ("aws_s3_bucket.a", {"x": "1"})
    assert a.source.pointer == "/planned_values/root_module/resources/0"
    assert (w.name, w.workload.gpus, w.source.pointer) == (
        "module.m.aws_instance.w",
        1.0,
        "/planned_values/root_module/child_modules/0/resources/0",
    )


@pytest.mark.parametrize("bad, message", [
    ({"format_version": "1.0", "values": {}}, "not a Terraform plan"),
    ({"format_version": "1.0", "resource_changes": {}}, "must be a list"),
    ({"format_version": "1.0", "resource_changes": [{"address": "x"}]}, "/resource_changes/0"),
    ({"format_version": "1.0", "resource_changes": [
        {"address": 1, "type": "t", "change": {"actions": ["create"], "after": {}}}]}, "'address' and 'type'"),
])  # fmt: skip
def test_malformed_plans_raise_adapter_errors(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        subjects_from_plan(bad, file="bad.json")


def test_lines_from_text() -> None:
    p = plan(rc("aws_s3_bucket.a", {}), rc('aws_s3_bucket.b["k<1>"]', {}))
    p["planned_values"] = {"root_module": {"resources": [{"address": "aws_s3_bucket.a"}]}}  # decoy before
    pretty = json.dumps({"planned_values": p.pop("planned_values"), **p}, indent=2)
    a, b = subjects_from_plan_text(pretty, file="p.json")
    lines = pretty.splitlines()
    changes_line = next(i for i, text in enumerate(lines, 1) if '"resource_changes"' in text)
    assert a.source.line is not None and b.source.line is not None
    assert changes_line < a.source.line < b.source.line  # not the planned_values decoy
    assert '"address": "aws_s3_bucket.a"' in lines[a.source.line - 1]
    assert "aws_s3_bucket.b" in lines[b.source.line - 1]
    go_style = json.dumps(p).replace("<", "\\u003c").replace(">", "\\u003e")  # Go's HTML escaping
    assert [s.source.line for s in subjects_from_plan_text(go_style)] == [1, 1]
    with pytest.raises(AdapterError, match="p.json:1: invalid JSON"):
        subjects_from_plan_text("{", file="p.json")


# --- tags ------------------------------------------------------------------------------------


def test_tags_all_includes_provider_default_tags() -> None:
    s = one({"tags": {"foo": "bar"}, "tags_all": {"foo": "bar", "env": "prod"}})
    assert dict(s.tags) == {"foo": "bar", "env": "prod"}


def test_unknown_tags_all_falls_back_to_tags_over_constant_default_tags() -> None:
    config = {
        "provider_config": {
            "aws": {
                "name": "aws",
                "expressions": {
                    "region": {"constant_value": "eu-west-1"},
                    "default_tags": [{"tags": {"constant_value": {"env": "prod", "team": "default"}}}],
                },
            }
        },
        "root_module": {
            "module_calls": {
                "m": {
                    "module": {
                        "resources": [
                            {
                                "address": "aws_instance.w",
                                "mode": "managed",
                                "type": "aws_instance",
                                "name": "w",
                                "provider_config_key": "m:aws",
                            }
                        ]
                    }
                }
            }
        },
    }
    change = rc("module.m.aws_instance.w", {"tags": {"team": "ml"}}, unknown={"tags_all": True}, module="module.m")
    [s] = subjects_from_plan(plan(change, configuration=config))
    assert dict(s.tags) == {"env": "prod", "team": "ml"}
    assert s.region == "eu-west-1"


def test_unknown_tags_all_falls_back_to_default_tags_from_a_root_variable() -> None:
    # `default_tags { tags = var.default_tags }`, and a tag known only after apply makes tags_all unknown
    config = {
        "provider_config": {
            "aws": {"name": "aws", "expressions": {"default_tags": [{"tags": {"references": ["var.default_tags"]}}]}}
        },
        "root_module": {"resources": [{"address": "aws_instance.w", "provider_config_key": "aws"}]},
    }
    variables = {"default_tags": {"value": {"team": "ml", "environment": "prod"}}}
    change = rc("aws_instance.w", {"tags": {"feature": "chat"}}, unknown={"tags": {"Name": True}, "tags_all": True})
    [s] = subjects_from_plan(plan(change, configuration=config, variables=variables))
    assert dict(s.tags) == {"team": "ml", "environment": "prod", "feature": "chat", "Name": UNKNOWN_VALUE}


def test_unknown_tag_values_are_present() -> None:
    s = one(
        {"tags": {"team": "ml"}, "tags_all": {"team": "ml"}},
        unknown={"tags": {"owner": True}, "tags_all": {"owner": True}},
    )
    assert dict(s.tags) == {"team": "ml", "owner": UNKNOWN_VALUE}
    assert dict(one({"tags": None}, unknown={"tags": True}).tags) == {}  # keys unknowable


def test_asg_tag_blocks_and_list_tags() -> None:
    after = {
        "desired_capacity": 4,
        "tags": [{"key": "a", "value": "1", "propagate_at_launch": "true"}],
        "tag": [{"key": "b", "value": "2", "propagate_at_launch": True}, {"key": "c", "propagate_at_launch": True}],
    }
    s = one(after, "aws_autoscaling_group.g", unknown={"tag": [{}, {"value": True}]})
    assert dict(s.tags) == {"a": "1", "b": "2", "c": UNKNOWN_VALUE}
    assert s.workload.replicas == 4


def test_asg_tags_not_propagated_at_launch_do_not_tag_the_instances() -> None:
    after = {
        "tag": [{"key": "team", "value": "ml", "propagate_at_launch": False},
                {"key": "env", "value": "prod", "propagate_at_launch": True}],
        "tags": [{"key": "feature", "value": "chat", "propagate_at_launch": "false"}],
    }
    assert dict(one(after, "aws_autoscaling_group.g").tags) == {"env": "prod"}


def test_launch_template_tag_specifications_merge_instance_last() -> None:
    after = {
        "tags_all": {"team": "lt", "env": "dev"},
        "tag_specifications": [
            {"resource_type": "instance", "tags": {"team": "ml"}},
            {"resource_type": "volume", "tags": {"team": "storage", "disk": "yes"}},
        ],
    }
    assert dict(one(after, "aws_launch_template.t").tags) == {"team": "ml", "env": "dev", "disk": "yes"}


def test_gcp_labels_prefer_effective_labels() -> None:
    labels = {
        "labels": {"team": "ml"},
        "terraform_labels": {"team": "ml", "env": "prod"},
        "effective_labels": {"team": "ml", "env": "prod", "goog-terraform-provisioned": "true"},
        "tags": ["allow-ssh"],
    }  # network tags, not labels
    assert effective_tags("google_compute_instance", labels) == labels["effective_labels"]
    assert effective_tags(
        "google_compute_instance", {"labels": {"a": "1"}, "terraform_labels": {"a": "1", "b": "2"}}
    ) == {"a": "1", "b": "2"}
    assert effective_tags("google_project", {"labels": {"a": "1"}}) == {"a": "1"}


def test_node_pool_labels_are_the_vms_resource_labels() -> None:
    after = {"node_config": [{"resource_labels": {"team": "ml"}, "labels": {"k8s-node-label": "x"}}]}
    assert effective_tags("google_container_node_pool", after) == {"team": "ml"}


def test_eks_node_group_uses_tags_not_node_labels() -> None:
    s = one(
        {
            "tags_all": {"team": "ml"},
            "labels": {"role": "gpu"},
            "capacity_type": "SPOT",
            "instance_types": ["g6e.12xlarge"],
            "scaling_config": [{"desired_size": 3, "min_size": 1}],
        },
        "aws_eks_node_group.gpu",
    )
    assert dict(s.tags) == {"team": "ml"}
    assert (s.capacity, s.workload.gpus, s.workload.gpu_type, s.workload.replicas) == ("spot", 4.0, "L40S", 3)


def test_datadog_style_string_tags() -> None:
    assert effective_tags("datadog_monitor", {"tags": ["env:dev", "owner:a:b", "bare"]}) == {
        "env": "dev",
        "owner": "a:b",
        "bare": "",
    }


# --- capacity --------------------------------------------------------------------------------

SPOT_CASES = [
    ("aws_instance", {"instance_market_options": [{"market_type": "spot"}]}, "spot"),
    ("aws_instance", {"instance_market_options": []}, "on-demand"),
    ("aws_instance", {}, "on-demand"),
    ("aws_instance", {"instance_market_options": [{"market_type": "capacity-block"}]}, "reserved"),
    ("aws_instance", {"launch_template": [{"id": "lt-1"}]}, "unknown"),
    ("aws_spot_instance_request", {"spot_price": "0.5"}, "spot"),
    ("aws_launch_template", {"instance_market_options": [{"market_type": "spot"}]}, "spot"),
    ("aws_launch_template", {}, "on-demand"),
    ("aws_eks_node_group", {"capacity_type": "SPOT"}, "spot"),
    ("aws_eks_node_group", {"capacity_type": "ON_DEMAND"}, "on-demand"),
    ("aws_eks_node_group", {}, "on-demand"),
    ("aws_batch_compute_environment", {"compute_resources": [{"type": "SPOT"}]}, "spot"),
    ("aws_batch_compute_environment", {"compute_resources": [{"type": "FARGATE_SPOT"}]}, "spot"),
    ("aws_batch_compute_environment", {"compute_resources": [{"type": "EC2"}]}, "on-demand"),
    ("aws_batch_compute_environment", {"compute_resources": [{"type": "FARGATE"}]}, "on-demand"),
    ("aws_batch_compute_environment", {"type": "UNMANAGED"}, "unknown"),
    ("aws_autoscaling_group", {"mixed_instances_policy": [{"instances_distribution": [
        {"on_demand_base_capacity": 0, "on_demand_percentage_above_base_capacity": 0}]}]}, "spot"),
    ("aws_autoscaling_group", {"mixed_instances_policy": [{"instances_distribution": [
        {"on_demand_base_capacity": 2, "on_demand_percentage_above_base_capacity": 50}]}]}, "unknown"),
    ("aws_autoscaling_group", {"launch_template": [{"id": "lt-1"}]}, "unknown"),
    ("aws_sagemaker_training_job", {"enable_managed_spot_training": True}, "spot"),
    ("aws_sagemaker_training_job", {"enable_managed_spot_training": False}, "on-demand"),
    ("google_compute_instance", {"scheduling": [{"provisioning_model": "SPOT"}]}, "spot"),
    ("google_compute_instance", {"scheduling": [{"preemptible": True, "provisioning_model": "STANDARD"}]}, "spot"),
    ("google_compute_instance", {"scheduling": [{"provisioning_model": "STANDARD", "preemptible": False}]},
     "on-demand"),
    ("google_compute_instance_template", {"scheduling": [{"provisioning_model": "SPOT"}]}, "spot"),
    ("google_container_node_pool", {"node_config": [{"spot": True}]}, "spot"),
    ("google_container_node_pool", {"node_config": [{"preemptible": True}]}, "spot"),
    ("google_container_node_pool", {"node_config": [{"spot": False, "preemptible": False}]}, "on-demand"),
    ("azurerm_linux_virtual_machine", {"priority": "Spot"}, "spot"),
    ("azurerm_kubernetes_cluster_node_pool", {"priority": "Regular"}, "on-demand"),
    ("aws_s3_bucket", {"tags": {}}, "unknown"),
]  # fmt: skip


@pytest.mark.parametrize("rtype, after, expected", SPOT_CASES)
def test_capacity(rtype: str, after: dict[str, Any], expected: str) -> None:
    assert capacity(rtype, after) == expected
    assert one(after, f"{rtype}.x").capacity == expected


# --- workload --------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_type, expected", [
    ("p5.48xlarge", (8.0, "H100")), ("p4d.24xlarge", (8.0, "A100")), ("p5en.48xlarge", (8.0, "H200")),
    ("p6-b200.48xlarge", (8.0, "B200")), ("g4dn.xlarge", (1.0, "T4")), ("g5.12xlarge", (4.0, "A10G")),
    ("g6.48xlarge", (8.0, "L4")), ("inf2.48xlarge", (12.0, "INFERENTIA2")), ("trn1.32xlarge", (16.0, "TRAINIUM")),
    ("m5.4xlarge", (0.0, None)), ("g5.unknownsize", (0.0, None)),
    ("a3-highgpu-8g", (8.0, "H100")), ("a2-ultragpu-1g", (1.0, "A100-80GB")), ("g2-standard-24", (2.0, "L4")),
    ("zones/us-central1-a/machineTypes/a2-highgpu-2g", (2.0, "A100")), ("n2-standard-8", (0.0, None)),
    (None, (0.0, None)),
])  # fmt: skip
def test_accelerators_of_instance_types(instance_type: str | None, expected: tuple[float, str | None]) -> None:
    assert accelerators_of(instance_type) == expected


def test_gce_guest_accelerators_and_region_and_project() -> None:
    after = {
        "machine_type": "n1-standard-8",
        "zone": "us-central1-a",
        "project": "ml-prod",
        "guest_accelerator": [{"count": 2, "type": "nvidia-tesla-t4"}],
    }
    s = one(after, "google_compute_instance.vm")
    assert (s.workload.gpus, s.workload.gpu_type, s.workload.instance_type) == (2.0, "T4", "n1-standard-8")
    assert (s.region, s.namespace, s.capacity) == ("us-central1", "ml-prod", "on-demand")


def test_node_pool_workload() -> None:
    after = {
        "location": "europe-west4",
        "node_count": None,
        "initial_node_count": 2,
        "node_config": [
            {"machine_type": "g2-standard-8", "spot": True, "guest_accelerator": [{"count": 1, "type": "nvidia-l4"}]}
        ],
    }
    s = one(after, "google_container_node_pool.gpu")
    assert (s.workload.gpus, s.workload.gpu_type, s.workload.replicas) == (1.0, "L4", 2)
    assert (s.region, s.capacity, s.workload.instance_type) == ("europe-west4", "spot", "g2-standard-8")


def test_node_pool_counts_are_per_zone() -> None:
    # a regional pool: node_count 2 in each of three zones is six a3-highgpu-8g nodes
    after = {"location": "us-central1", "node_count": 2,
             "node_locations": ["us-central1-a", "us-central1-b", "us-central1-c"],
             "node_config": [{"machine_type": "a3-highgpu-8g"}]}
    s = one(after, "google_container_node_pool.gpu")
    assert (s.workload.gpus, s.workload.replicas) == (8.0, 6)
    assert one({**after, "node_locations": ["us-central1-a"]}, "google_container_node_pool.gpu").workload.replicas == 2


def test_batch_workload_class_and_tag_override() -> None:
    ce = one(
        {"compute_resources": [{"type": "SPOT", "instance_type": ["p4d.24xlarge"]}]}, "aws_batch_compute_environment.ce"
    )
    assert (ce.workload.workload_class, ce.workload.instance_type, ce.workload.gpus) == ("batch", "p4d.24xlarge", 8.0)
    assert one({"instance_type": "t3.micro"}).workload.workload_class == "unknown"
    tagged = one({"tags_all": {"costwarden.dev/workload-class": "online"}})
    assert tagged.workload.workload_class == "online"
    labelled = one({"labels": {"costwarden-workload-class": "training"}}, "google_compute_instance.vm")
    assert labelled.workload.workload_class == "training"
    assert one({"tags_all": {"costwarden.dev/workload-class": "nonsense"}}).workload.workload_class == "unknown"


def test_region_from_availability_zone_and_resource_region() -> None:
    assert one({"availability_zone": "us-west-2b"}).region == "us-west-2"
    assert one({"region": "ap-south-1", "availability_zone": "us-west-2b"}).region == "ap-south-1"
    assert one({"location": "westeurope"}, "azurerm_linux_virtual_machine.vm").region == "westeurope"
    assert one({}).region is None
