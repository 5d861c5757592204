"""The effective tags (GCP: labels) of a planned resource, what billing will see (see the
package docstring for which fields count), and which of them the plan knows only after apply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.adapters.terraform.values import _dig, _mapping

UNKNOWN_VALUE = "(known after apply)"
"""The value ``tags`` holds for a key whose value the plan knows only after apply; the subject's
``unknown_tags.values`` names those keys, so no rule judges this text as the value."""


def effective_tags(
    rtype: str,
    after: Mapping[str, Any],
    unknown: Mapping[str, Any] | None = None,
    default_tags: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags (GCP: labels) a resource will carry after the apply; see the module docstring."""
    return planned_tags(rtype, after, unknown, default_tags)[0]


def planned_tags(
    rtype: str,
    after: Mapping[str, Any],
    unknown: Mapping[str, Any] | None = None,
    default_tags: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], frozenset[str]]:
    """:func:`effective_tags`, and the keys among them whose values are known only after apply."""
    unknown = unknown or {}
    tags = _Tags()
    if rtype.startswith("google_"):
        _gcp_labels(tags, after, unknown)
        if rtype == "google_container_node_pool":
            node = _mapping(_dig(after, ("node_config", 0)))
            tags.add(node.get("resource_labels"), _dig(unknown, ("node_config", 0, "resource_labels")))
        return tags.values, frozenset(tags.unknown)
    if isinstance(after.get("tags_all"), Mapping):
        tags.add(after["tags_all"], unknown.get("tags_all"))
    else:
        if uses_default_tags(rtype, after, unknown):
            tags.add(default_tags, None)
        tags.add(after.get("tags"), unknown.get("tags"))
    if rtype == "aws_autoscaling_group":
        tags.add(after.get("tag"), unknown.get("tag"))
    specs = after.get("tag_specifications")
    if isinstance(specs, list):  # launch templates: instance tags last, so they win
        for i in sorted(range(len(specs)), key=lambda i: _mapping(specs[i]).get("resource_type") == "instance"):
            tags.add(_mapping(specs[i]).get("tags"), _dig(unknown, ("tag_specifications", i, "tags")))
    return tags.values, frozenset(tags.unknown)


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


def _gcp_labels(tags: _Tags, after: Mapping[str, Any], unknown: Mapping[str, Any]) -> None:
    for key in ("effective_labels", "terraform_labels", "labels", "resource_labels"):
        if isinstance(after.get(key), Mapping):
            tags.add(after[key], unknown.get(key))
            return


class _Tags:
    """Tag maps merged in order (a later one wins a key), with the keys whose values are unknown."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.unknown: set[str] = set()

    def add(self, value: Any, unknown: Any) -> None:
        """A map, a list of ``{key, value}`` objects or of ``key:value`` strings; values that
        ``after_unknown`` flags are :data:`UNKNOWN_VALUE`. ASG tags with ``propagate_at_launch``
        false are left out."""
        if isinstance(value, Mapping):
            self._set({str(k): _text(v) for k, v in value.items()}, ())
            if isinstance(unknown, Mapping):
                self._set({}, [str(k) for k, flag in unknown.items() if flag is True])
        elif isinstance(value, list):
            flags = unknown if isinstance(unknown, list) else []
            for i, item in enumerate(value):
                flag = flags[i] if i < len(flags) else None
                if isinstance(item, Mapping) and item.get("propagate_at_launch") in (False, "false"):
                    continue  # an ASG tag kept off the instances it launches: not what the instances cost under
                if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                    value_unknown = flag is True or (isinstance(flag, Mapping) and flag.get("value") is True)
                    if value_unknown:
                        self._set({}, [item["key"]])
                    else:
                        self._set({item["key"]: _text(item.get("value"))}, ())
                elif isinstance(item, str):
                    key, _, text = item.partition(":")
                    self._set({key: text}, ())

    def _set(self, known: Mapping[str, str], unknown: list[str] | tuple[()]) -> None:
        self.values |= known
        self.unknown -= known.keys()
        self.values |= dict.fromkeys(unknown, UNKNOWN_VALUE)
        self.unknown |= set(unknown)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
