"""Subjects built from plain JSON-shaped data (``subject_from_dict``), each field checked.

A resource in the common shape takes a one-pass fast path (``_resource_fast``); anything else goes
through the validating reader, which raises :class:`SubjectError` naming the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from costwarden.engine.subjects.llm_call import LlmCall
from costwarden.engine.subjects.parts import (
    _EMPTY,
    _NO_UNKNOWN_TAGS,
    _NO_WORKLOAD,
    CAPACITIES,
    SUBJECT_TYPES,
    WORKLOAD_CLASSES,
    LlmRequest,
    SourceLocation,
    TokenUsage,
    UnknownTags,
    Workload,
)
from costwarden.engine.subjects.resource import Resource
from costwarden.engine.subjects.serving_config import ServingConfig
from costwarden.engine.subjects.subject import Subject
from costwarden.errors import SubjectError


def subject_from_dict(data: Mapping[str, Any]) -> Subject:
    """Build a subject from JSON-shaped data; ``data["type"]`` picks the subject type.

    Raises :class:`SubjectError` naming the offending field for anything of the wrong shape.
    The optional keys ``raw`` (resource, serving_config) and ``body`` (llm_call) carry the raw
    input that fixes patch.
    """
    if not isinstance(data, Mapping):
        raise SubjectError("a subject must be a JSON object")
    kind = data.get("type")
    if kind == "resource":
        return _resource(data)
    if kind == "llm_call":
        return _llm_call(data)
    if kind == "serving_config":
        return _serving_config(data)
    raise SubjectError(f"'type' must be one of {', '.join(SUBJECT_TYPES)}, got {kind!r}", path="type")


class _Reader:
    """Typed field access on a dict that raises SubjectError with the field's path."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def _path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _get(self, key: str, types: tuple[type, ...], what: str, default: Any) -> Any:
        value = self.data.get(key, default)
        if value is None or value is default:
            return value
        if isinstance(value, bool) and bool not in types:
            raise SubjectError(f"must be {what}, got a boolean", path=self._path(key))
        if not isinstance(value, types):
            raise SubjectError(f"must be {what}, got {type(value).__name__}", path=self._path(key))
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        if required and not self.data.get(key):
            raise SubjectError("is required", path=self._path(key))
        return self._get(key, (str,), "a string", default)

    def number(self, key: str, default: float | None = None) -> Any:
        """A finite, non-negative number (costs, GPUs, latencies are never negative or NaN)."""
        value = self._get(key, (int, float), "a number", default)
        if value is None:
            return None
        if not math.isfinite(value) or value < 0:
            raise SubjectError(f"must be a finite number >= 0, got {value!r}", path=self._path(key))
        return float(value)

    def count(self, key: str, default: int) -> int:
        """A non-negative integer; 0 is kept (a workload scaled to zero)."""
        value = self.integer(key, default)
        if value is None:
            return default
        if value < 0:
            raise SubjectError(f"must be >= 0, got {value}", path=self._path(key))
        return int(value)

    def integer(self, key: str, default: int | None = None) -> Any:
        return self._get(key, (int,), "an integer", default)

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self._get(key, (bool,), "a boolean", default))

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> Any:
        value = self.text(key, default)
        if value not in choices:
            raise SubjectError(f"must be one of {', '.join(choices)}, got {value!r}", path=self._path(key))
        return value

    def map(self, key: str) -> Mapping[str, Any] | None:
        return self._get(key, (Mapping,), "an object", None)  # type: ignore[no-any-return]

    def tags(self, key: str = "tags") -> dict[str, str]:
        """A map of strings (tags, annotations); numbers and booleans are written as YAML reads them."""
        tags = self.map(key) or {}
        out: dict[str, str] = {}
        what = "tag" if key == "tags" else key.rstrip("s")
        for k, v in tags.items():
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise SubjectError(f"{what} values must be strings", path=self._path(f"{key}.{k}"))
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out

    def sub(self, key: str) -> _Reader:
        return _Reader(self.map(key) or {}, f"{self.prefix}{key}.")


def _keys(r: _Reader, key: str) -> frozenset[str] | None:
    """A list of tag keys; None when not given."""
    keys = r.data.get(key)
    if keys is None:
        return None
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise SubjectError("must be a list of tag keys", path=r._path(key))
    return frozenset(keys)


def _unknown_tags(r: _Reader, tags: Mapping[str, str]) -> UnknownTags:
    u = r.sub("unknown_tags")
    values = _keys(u, "values") or frozenset()
    if not values <= tags.keys():
        raise SubjectError("must name keys present in 'tags' (whose values are unknown)", path=u._path("values"))
    incomplete, incomplete_keys = u.text("incomplete"), _keys(u, "incomplete_keys")
    if incomplete_keys is not None and incomplete is None:
        raise SubjectError("needs 'incomplete' (why the tags may lack keys)", path=u._path("incomplete_keys"))
    if not values and incomplete is None:
        return _NO_UNKNOWN_TAGS
    return UnknownTags(values, incomplete, incomplete_keys)


def _source(r: _Reader) -> SourceLocation:
    s = r.sub("source")
    return SourceLocation(file=s.text("file"), line=s.integer("line"), pointer=s.text("pointer"))


_OPTIONAL_TEXT = (str, type(None))
_WORKLOADS: dict[tuple[Any, ...], Workload] = {}
"""Interned workloads of the fast path (immutable, and most subjects share a handful)."""


def _resource_fast(data: Mapping[str, Any]) -> Resource | None:
    """The common shape in one pass with exact type checks: plain strings, a flat dict of string
    tags, a known capacity and workload class. Anything else returns None and goes through the
    validating reader, which names the offending field."""
    get = data.get
    provider = get("provider")
    kind = get("kind")
    name = get("name", "")
    if name is None:
        name = ""
    namespace = get("namespace")
    region = get("region")
    capacity = get("capacity", "unknown")
    tags = get("tags")
    w = get("workload")
    if (
        provider.__class__ is not str
        or kind.__class__ is not str
        or not provider
        or not kind
        or name.__class__ is not str
        or namespace.__class__ not in _OPTIONAL_TEXT
        or region.__class__ not in _OPTIONAL_TEXT
        or capacity not in CAPACITIES
        or (tags is not None and tags.__class__ is not dict)
        or (w is not None and w.__class__ is not dict)
        or get("source") is not None
        or get("raw") is not None
        or get("hourly_usd") is not None
        or get("tags_pointer") is not None
        or get("pod_spec_pointers")
        or get("annotations")
        or get("unknown_tags")
    ):
        return None
    if tags:
        for key, value in tags.items():
            if key.__class__ is not str or value.__class__ is not str:
                return None
        tags = MappingProxyType(tags.copy())
    workload = _NO_WORKLOAD
    if w:
        gpus = w.get("gpus")
        replicas = w.get("replicas")
        if (gpus is not None and gpus.__class__ not in (int, float)) or (
            replicas is not None and replicas.__class__ is not int  # True == 1: exact types only
        ):
            return None
        found = _WORKLOADS.get((w.get("class", "unknown"), gpus, w.get("gpu_type"), w.get("instance_type"), replicas))
        if found is None:
            return None
        workload = found
    return Resource(provider, kind, name, namespace, region, tags or _EMPTY, capacity, workload)


def _resource(data: Mapping[str, Any]) -> Resource:
    if data.__class__ is dict:
        fast = _resource_fast(data)
        if fast is not None:
            return fast
    return _resource_checked(data)


def _resource_checked(data: Mapping[str, Any]) -> Resource:
    r = _Reader(data)
    w = r.sub("workload")
    workload = Workload(
        workload_class=w.choice("class", WORKLOAD_CLASSES, "unknown"),
        gpus=w.number("gpus", 0.0) or 0.0,
        gpu_type=w.text("gpu_type"),
        instance_type=w.text("instance_type"),
        replicas=w.count("replicas", 1),
    )
    w_data = data.get("workload")
    if w_data.__class__ is dict and len(_WORKLOADS) < 1024:  # validated above: intern it for the fast path
        wkey = tuple(w_data.get(k) for k in ("class", "gpus", "gpu_type", "instance_type", "replicas"))
        if wkey[0] is None:
            wkey = ("unknown", *wkey[1:])
        _WORKLOADS.setdefault(wkey, workload)
    pointers = data.get("pod_spec_pointers") or ()
    if not isinstance(pointers, (list, tuple)) or not all(isinstance(p, str) for p in pointers):
        raise SubjectError("must be a list of JSON pointers", path="pod_spec_pointers")
    tags = r.tags()
    return Resource(
        provider=r.text("provider", required=True),
        kind=r.text("kind", required=True),
        name=r.text("name", "") or "",
        namespace=r.text("namespace"),
        region=r.text("region"),
        tags=tags,
        capacity=r.choice("capacity", CAPACITIES, "unknown"),
        workload=workload,
        hourly_usd=r.number("hourly_usd"),
        source=_source(r),
        raw=r.map("raw"),
        tags_pointer=r.text("tags_pointer"),
        pod_spec_pointers=tuple(pointers),
        annotations=r.tags("annotations"),
        unknown_tags=_unknown_tags(r, tags),
    )


def _usage(r: _Reader) -> TokenUsage | None:
    if r.map("usage") is None:
        return None
    u = r.sub("usage")
    return TokenUsage(
        input_tokens=u.integer("input_tokens", 0) or 0,
        output_tokens=u.integer("output_tokens", 0) or 0,
        cache_read_tokens=u.integer("cache_read_tokens", 0) or 0,
        cache_write_5m_tokens=u.integer("cache_write_5m_tokens", 0) or 0,
        cache_write_1h_tokens=u.integer("cache_write_1h_tokens", 0) or 0,
        web_search_requests=u.integer("web_search_requests", 0) or 0,
        input_audio_tokens=u.integer("input_audio_tokens", 0) or 0,
        output_audio_tokens=u.integer("output_audio_tokens", 0) or 0,
        input_image_tokens=u.integer("input_image_tokens", 0) or 0,
        output_image_tokens=u.integer("output_image_tokens", 0) or 0,
        audio_seconds=u.integer("audio_seconds", 0) or 0,
        input_characters=u.integer("input_characters", 0) or 0,
    )


def _choices(q: _Reader) -> int:
    choices = q.integer("choices", 1)  # 0: the call generates no output (an embeddings call)
    if choices is None or choices < 0:
        raise SubjectError(f"must be an integer >= 0, got {choices!r}", path=q._path("choices"))
    return int(choices)


def _llm_call(data: Mapping[str, Any]) -> LlmCall:
    r = _Reader(data)
    q = r.sub("request")
    request = LlmRequest(
        api=q.text("api", "messages") or "messages",
        max_tokens=q.integer("max_tokens"),
        max_tokens_field=q.text("max_tokens_field", "max_tokens"),  # "": the API has no such field
        input_tokens=q.integer("input_tokens", 0) or 0,
        cacheable_prefix_tokens=q.integer("cacheable_prefix_tokens", 0) or 0,
        prefix_pointer=q.text("prefix_pointer"),
        cache_breakpoints=q.integer("cache_breakpoints", 0) or 0,
        stream=q.flag("stream"),
        batch=q.flag("batch"),
        choices=_choices(q),
        max_web_searches=q.integer("max_web_searches", 0) or 0,
        output_audio=q.flag("output_audio"),
        cache_write_1h=q.flag("cache_write_1h"),
        output_image=q.flag("output_image"),
        input_image_tokens=q.integer("input_image_tokens", 0) or 0,
    )
    return LlmCall(
        provider=r.text("provider", required=True),
        model=r.text("model", required=True),
        feature=r.text("feature"),
        user=r.text("user"),
        team=r.text("team"),
        tags=r.tags(),
        phase=r.choice("phase", ("pre", "post"), "pre"),
        request=request,
        usage=_usage(r),
        estimated_cost_usd=r.number("estimated_cost_usd"),
        actual_cost_usd=r.number("actual_cost_usd"),
        latency_ms=r.number("latency_ms"),
        body=r.map("body"),
        source=_source(r),
    )


def _serving_config(data: Mapping[str, Any]) -> ServingConfig:
    r = _Reader(data)
    deprecated = data.get("deprecated_args") or ()
    if not isinstance(deprecated, (list, tuple)) or not all(isinstance(a, str) for a in deprecated):
        raise SubjectError("must be a list of argument names", path="deprecated_args")
    arg_errors = data.get("arg_errors") or ()
    if not isinstance(arg_errors, (list, tuple)) or not all(isinstance(a, str) for a in arg_errors):
        raise SubjectError("must be a list of messages", path="arg_errors")
    cores = data.get("neuron_cores") or ()
    if not isinstance(cores, (list, tuple)) or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and c > 0 for c in cores
    ):
        raise SubjectError("must be a list of positive numbers (the NeuronCores a replica may have)",
                           path="neuron_cores")
    return ServingConfig(
        model=r.text("model", required=True),
        engine=r.text("engine", "vllm") or "vllm",
        engine_version=r.text("engine_version"),
        args=dict(r.map("args") or {}),
        gpus=r.number("gpus", 0.0) or 0.0,
        gpu_type=r.text("gpu_type"),
        neuron_cores=tuple(float(c) for c in cores),
        replicas=r.count("replicas", 1),
        params_b=r.number("params_b"),
        provider=r.text("provider", "kubernetes") or "kubernetes",
        kind=r.text("kind", "vllm") or "vllm",
        name=r.text("name", "") or "",
        namespace=r.text("namespace"),
        tags=r.tags(),
        deprecated_args=tuple(deprecated),
        arg_errors=tuple(arg_errors),
        source=_source(r),
        raw=r.map("raw"),
    )
