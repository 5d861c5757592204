"""A Terraform plan walked into ``resource`` subjects: which resources are judged, the provider
settings each one uses, and its name, namespace and region (see the package docstring)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from costwarden.adapters.terraform.capacity import capacity
from costwarden.adapters.terraform.default_tags import DefaultTags, from_configuration, inferred
from costwarden.adapters.terraform.tags import UNKNOWN_VALUE, planned_tags, unknown_tag_maps, uses_default_tags
from costwarden.adapters.terraform.values import _mapping
from costwarden.adapters.terraform.workload import workload
from costwarden.engine.subjects import Resource, SourceLocation, UnknownTags
from costwarden.errors import AdapterError

PROVIDER = "terraform"
_CHANGING = frozenset({"create", "update"})
_GCP_ZONE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
_AWS_AZ = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$")
_INDEX = re.compile(r'\[(?:\d+|"(?:[^"\\]|\\.)*")\]')


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
    default_tags: DefaultTags | None = None


_NO_PROVIDER = _Provider()


class _Configuration:
    """Constant provider settings from ``configuration``, and which provider each resource uses.
    Default tags the configuration does not hold are read off the plan's other resources (see
    :mod:`.default_tags`)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        config = _mapping(plan.get("configuration"))
        variables = _mapping(plan.get("variables"))
        self.providers = {
            str(k): _provider(_mapping(v), variables if ":" not in str(k) else {})  # root variables: root providers
            for k, v in _mapping(config.get("provider_config")).items()
        }
        self.keys: dict[str, str] = {}
        self._walk(_mapping(config.get("root_module")), "")
        self._infer_default_tags(plan.get("resource_changes"))

    def _walk(self, module: Mapping[str, Any], prefix: str) -> None:
        for res in module.get("resources") or ():
            if isinstance(res, Mapping) and isinstance(res.get("address"), str):
                self.keys[prefix + res["address"]] = str(res.get("provider_config_key") or "")
        for name, call in _mapping(module.get("module_calls")).items():
            self._walk(_mapping(_mapping(call).get("module")), f"{prefix}module.{name}.")

    def _infer_default_tags(self, changes: Any) -> None:
        unresolved = {k for k, p in self.providers.items() if p.default_tags and p.default_tags.unresolved}
        if not unresolved or not isinstance(changes, list):
            return
        siblings: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {k: [] for k in unresolved}
        for rc in changes:
            change = _mapping(_mapping(rc).get("change"))
            after = change.get("after")
            if rc.get("mode", "managed") != "managed" or not isinstance(after, Mapping):
                continue
            key = self._key(str(rc.get("module_address") or ""), str(rc.get("type") or ""), str(rc.get("name") or ""))
            if key in siblings:
                siblings[key].append((after, _mapping(change.get("after_unknown"))))
        for key, found in siblings.items():
            p = self.providers[key]
            if p.default_tags is not None:
                self.providers[key] = _Provider(p.region, p.project, inferred(p.default_tags, found))

    def _key(self, module_address: str, rtype: str, name: str) -> str:
        module = _INDEX.sub("", module_address)
        local = f"{rtype}.{name}"
        key = self.keys.get(f"{module}.{local}" if module else local) or rtype.split("_", 1)[0]
        # A module that inherits its parent's provider names it "<module>:<name>".
        return key if key in self.providers else key.rsplit(":", 1)[-1]

    def provider(self, entry: _Entry) -> _Provider:
        return self.providers.get(self._key(entry.module, entry.type, entry.name)) or _NO_PROVIDER


def _provider(pc: Mapping[str, Any], variables: Mapping[str, Any]) -> _Provider:
    exprs = _mapping(pc.get("expressions"))

    def constant(name: str) -> Any:
        return _mapping(exprs.get(name)).get("constant_value")

    region, project = constant("region"), constant("project")
    return _Provider(
        region=region if isinstance(region, str) else None,
        project=project if isinstance(project, str) else None,
        default_tags=from_configuration(exprs.get("default_tags"), variables),
    )


# --- one resource ---------------------------------------------------------------------------


def _resource(entry: _Entry, config: _Configuration, source: SourceLocation) -> Resource:
    provider = config.provider(entry)
    tags, unknown = _tags(entry, provider)
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
        unknown_tags=unknown,
    )


def _tags(entry: _Entry, provider: _Provider) -> tuple[dict[str, str], UnknownTags]:
    """The effective tags, and what of them the plan cannot show: values known only after apply,
    keys in a tag map known only after apply (any key), or in default tags it does not hold."""
    defaults = provider.default_tags
    tags, values = planned_tags(entry.type, entry.after, entry.unknown, defaults.tags if defaults else None)
    whole = unknown_tag_maps(entry.type, entry.after, entry.unknown)
    if whole:
        return tags, UnknownTags(values, f"{' and '.join(whole)} = {UNKNOWN_VALUE}")
    if defaults is not None and uses_default_tags(entry.type, entry.after, entry.unknown):
        return tags, UnknownTags(values, *defaults.incomplete(tags))
    return tags, UnknownTags(values)


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
