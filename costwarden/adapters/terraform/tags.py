"""The effective tags (GCP: labels) of a planned resource, what billing will see (see the
package docstring for which fields count)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.adapters.terraform.values import _dig, _mapping

UNKNOWN_VALUE = "(known after apply)"
INCOMPLETE = "costwarden.dev/tags-incomplete"
"""Annotation on a resource whose tags may hold keys the plan cannot show, saying why (a tag map
known only after apply, provider default tags the plan does not hold)."""
INCOMPLETE_KEYS = "costwarden.dev/tags-incomplete-keys"
"""Annotation: the only keys (comma-separated) those tags can be; absent: any key."""


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
        tags = dict(default_tags or {}) if uses_default_tags(rtype, after, unknown) else {}
        tags |= _tag_map(after.get("tags"), unknown.get("tags"))
    if rtype == "aws_autoscaling_group":
        tags |= _tag_map(after.get("tag"), unknown.get("tag"))
    specs = after.get("tag_specifications")
    if isinstance(specs, list):  # launch templates: instance tags last, so they win
        for i in sorted(range(len(specs)), key=lambda i: _mapping(specs[i]).get("resource_type") == "instance"):
            tags |= _tag_map(_mapping(specs[i]).get("tags"), _dig(unknown, ("tag_specifications", i, "tags")))
    return tags


def uses_default_tags(rtype: str, after: Mapping[str, Any], unknown: Mapping[str, Any] | None) -> bool:
    """Whether the resource's effective tags need the provider's default tags: its ``tags_all``
    (which has them merged in) is known only after apply."""
    return (
        not rtype.startswith("google_")
        and not isinstance(after.get("tags_all"), Mapping)
        and (unknown or {}).get("tags_all") is True
    )


def unknown_tag_maps(rtype: str, after: Mapping[str, Any], unknown: Mapping[str, Any] | None) -> list[str]:
    """The tag (GCP: label) maps that are known only after apply as a whole: their keys are unknown."""
    unknown = unknown or {}
    if rtype.startswith("google_"):
        fields = ("effective_labels", "terraform_labels", "labels")
        known = any(isinstance(after.get(k), Mapping) for k in fields)
        return [] if known else [k for k in fields if unknown.get(k) is True][:1]
    if isinstance(after.get("tags_all"), Mapping):
        return []
    return [k for k in ("tags", "tag") if unknown.get(k) is True and not isinstance(after.get(k), (Mapping, list))]


def _gcp_labels(after: Mapping[str, Any], unknown: Mapping[str, Any]) -> dict[str, str]:
    for key in ("effective_labels", "terraform_labels", "labels", "resource_labels"):
        if isinstance(after.get(key), Mapping):
            return _tag_map(after[key], unknown.get(key))
    return {}


def _tag_map(value: Any, unknown: Any) -> dict[str, str]:
    """A map, a list of ``{key, value}`` objects or of ``key:value`` strings → tags; unknown values
    (``after_unknown``) become :data:`UNKNOWN_VALUE`. ASG tags with ``propagate_at_launch`` false
    are left out."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        out = {str(k): _text(v) for k, v in value.items()}
        if isinstance(unknown, Mapping):
            out |= {str(k): UNKNOWN_VALUE for k, flag in unknown.items() if flag is True}
    elif isinstance(value, list):
        flags = unknown if isinstance(unknown, list) else []
        for i, item in enumerate(value):
            flag = flags[i] if i < len(flags) else None
            if isinstance(item, Mapping) and item.get("propagate_at_launch") in (False, "false"):
                continue  # an ASG tag kept off the instances it launches: not what the instances cost under
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
