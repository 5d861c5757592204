"""The three subject types the engine judges: ``resource``, ``llm_call`` and ``serving_config``.

Adapters turn raw input (a Kubernetes object, a Terraform plan, an SDK request, vLLM arguments)
into one of these frozen records, so the engine never has to know where a subject came from.
They are cheap to build, hold plain values, and can be built from plain dicts (JSON)::

    >>> s = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job",
    ...                        "name": "train", "tags": {"team": "ml"}})
    >>> s.kind, s.tags["team"]
    ('Job', 'ml')

``to_dict()`` is the inverse and is also the shape CEL expressions see as ``subject``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias, TypeVar, get_args

from costwarden.errors import SubjectError

_S = TypeVar("_S")

SubjectType = Literal["resource", "llm_call", "serving_config"]
Capacity = Literal["spot", "on-demand", "reserved", "unknown"]
WorkloadClass = Literal["batch", "online", "training", "unknown"]
Phase = Literal["pre", "post"]

SUBJECT_TYPES: tuple[str, ...] = get_args(SubjectType)
CAPACITIES: tuple[str, ...] = get_args(Capacity)
WORKLOAD_CLASSES: tuple[str, ...] = get_args(WorkloadClass)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where a subject came from: a file, a line in it, and a JSON pointer into the document."""

    file: str | None = None
    line: int | None = None
    pointer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "pointer": self.pointer}


class Workload(NamedTuple):
    """What a resource runs: its class, accelerators, instance type and replica count (a named
    tuple: cheap to build per object, and hashed in C where rules memoise on it)."""

    workload_class: WorkloadClass = "unknown"
    gpus: float = 0.0
    gpu_type: str | None = None
    instance_type: str | None = None
    replicas: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.workload_class,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "instance_type": self.instance_type,
            "replicas": self.replicas,
        }


_NO_SOURCE = SourceLocation()
_NO_WORKLOAD = Workload()


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of a finished call. ``input_tokens`` excludes cache reads and writes
    (Anthropic's convention); ``total_input_tokens`` adds them back."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_5m_tokens": self.cache_write_5m_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
        }


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """Facts about an LLM request that rules look at, computed once by the provider adapter.

    ``input_tokens`` is an estimate before the call; ``cacheable_prefix_tokens`` is the estimated
    size of the longest stable prefix (tools, then system) and ``prefix_pointer`` the JSON pointer
    of the block that ends it, where a cache breakpoint would go. ``max_tokens_field`` names the
    body field that caps output (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``).
    """

    api: str = "messages"
    max_tokens: int | None = None
    max_tokens_field: str = "max_tokens"
    input_tokens: int = 0
    cacheable_prefix_tokens: int = 0
    prefix_pointer: str | None = None
    cache_breakpoints: int = 0
    stream: bool = False
    batch: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "max_tokens": self.max_tokens,
            "max_tokens_field": self.max_tokens_field,
            "input_tokens": self.input_tokens,
            "cacheable_prefix_tokens": self.cacheable_prefix_tokens,
            "prefix_pointer": self.prefix_pointer,
            "cache_breakpoints": self.cache_breakpoints,
            "stream": self.stream,
            "batch": self.batch,
        }


_NO_REQUEST = LlmRequest()


def _fields_on_instances(cls: type[_S]) -> type[_S]:
    """Remove the class attributes ``@dataclass`` leaves for field defaults. Subjects set every
    field in ``__init__``, so the defaults are never read from the class; but a class attribute
    of the same name stops CPython from specialising reads of the instance's attribute, and rules
    read subject fields on every decision (``capacity``, ``workload``: ~2x slower with them)."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in cls.__dict__ and not isinstance(cls.__dict__[f.name], (property, cached_property)):
            delattr(cls, f.name)
    return cls


class _Subject:
    """Behaviour shared by the three subject records (not a public base class)."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """A fresh JSON-shaped dict (``subject_from_dict`` builds the same subject back)."""
        return self._build()  # type: ignore[attr-defined, no-any-return]

    def label(self) -> str:
        """A short human name: ``kubernetes/Job default/train``."""
        ns = getattr(self, "namespace", None)
        name = getattr(self, "name", None) or "-"
        kind = getattr(self, "kind", self.type)
        provider = getattr(self, "provider", "")
        where = f"{ns}/{name}" if ns else name
        return f"{provider}/{kind} {where}" if provider else f"{kind} {where}"


@_fields_on_instances
@dataclass(frozen=True, init=False)
class Resource(_Subject):
    """A cloud or cluster resource: a Kubernetes workload, an EC2 instance, a GKE node pool...

    ``kind`` is the provider's own kind name (``Job``, ``aws_instance``, ``ec2-instance``);
    ``namespace`` is the Kubernetes namespace, the AWS account or the GCP project.
    ``tags_pointer`` and ``pod_spec_pointers`` are JSON pointers into ``raw`` that fixes patch.
    """

    type: ClassVar[str] = "resource"
    provider: str
    kind: str
    name: str = ""
    namespace: str | None = None
    region: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    capacity: Capacity = "unknown"
    workload: Workload = _NO_WORKLOAD
    hourly_usd: float | None = None
    source: SourceLocation = _NO_SOURCE
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    tags_pointer: str | None = None
    pod_spec_pointers: tuple[str, ...] = ()

    def __init__(
        self,
        provider: str,
        kind: str,
        name: str = "",
        namespace: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] = _EMPTY,
        capacity: Capacity = "unknown",
        workload: Workload = _NO_WORKLOAD,
        hourly_usd: float | None = None,
        source: SourceLocation = _NO_SOURCE,
        raw: Mapping[str, Any] | None = None,
        tags_pointer: str | None = None,
        pod_spec_pointers: tuple[str, ...] = (),
    ) -> None:
        # The frozen dataclass's generated __init__ sets each field through object.__setattr__;
        # filling the instance dict directly is several times faster, and subjects are built per
        # object judged. Same signature, same fields.
        d = self.__dict__
        d["provider"] = provider
        d["_plan_entry"] = None  # the evaluator's plan key and SubjectRef, once judged
        d["kind"] = kind
        d["name"] = name
        d["namespace"] = namespace
        d["region"] = region
        d["tags"] = _frozen_map(tags)
        d["capacity"] = capacity
        d["workload"] = workload
        d["hourly_usd"] = hourly_usd
        d["source"] = source
        d["raw"] = raw
        d["tags_pointer"] = tags_pointer
        d["pod_spec_pointers"] = pod_spec_pointers

    @cached_property
    def as_cel(self) -> dict[str, Any]:
        """The subject as plain data, built once; this is what CEL sees as ``subject``."""
        return self._build()

    def _build(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "region": self.region,
            "tags": dict(self.tags),
            "capacity": self.capacity,
            "workload": self.workload.to_dict(),
            "hourly_usd": self.hourly_usd,
            "source": self.source.to_dict(),
            "tags_pointer": self.tags_pointer,
            "pod_spec_pointers": list(self.pod_spec_pointers),
        }


@_fields_on_instances
@dataclass(frozen=True, init=False)
class LlmCall(_Subject):
    """One LLM API call, before it is sent (``phase="pre"``) or after it returned (``"post"``).

    ``body`` is the request body as sent to the provider; fixes are JSON Patch operations on it.
    """

    type: ClassVar[str] = "llm_call"
    provider: str
    model: str
    feature: str | None = None
    user: str | None = None
    team: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    phase: Phase = "pre"
    request: LlmRequest = _NO_REQUEST
    usage: TokenUsage | None = None
    estimated_cost_usd: float | None = None
    actual_cost_usd: float | None = None
    latency_ms: float | None = None
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    source: SourceLocation = _NO_SOURCE

    def __init__(
        self,
        provider: str,
        model: str,
        feature: str | None = None,
        user: str | None = None,
        team: str | None = None,
        tags: Mapping[str, str] = _EMPTY,
        phase: Phase = "pre",
        request: LlmRequest = _NO_REQUEST,
        usage: TokenUsage | None = None,
        estimated_cost_usd: float | None = None,
        actual_cost_usd: float | None = None,
        latency_ms: float | None = None,
        body: Mapping[str, Any] | None = None,
        source: SourceLocation = _NO_SOURCE,
    ) -> None:
        # As Resource: the instance dict directly, not object.__setattr__ per field.
        d = self.__dict__
        d["provider"] = provider
        d["_plan_entry"] = None  # the evaluator's plan key and SubjectRef, once judged
        d["model"] = model
        d["feature"] = feature
        d["user"] = user
        d["team"] = team
        d["tags"] = _frozen_map(tags)
        d["phase"] = phase
        d["request"] = request
        d["usage"] = usage
        d["estimated_cost_usd"] = estimated_cost_usd
        d["actual_cost_usd"] = actual_cost_usd
        d["latency_ms"] = latency_ms
        d["body"] = body
        d["source"] = source

    @property
    def kind(self) -> str:
        return self.request.api

    @property
    def name(self) -> str:
        return self.feature or ""

    @property
    def namespace(self) -> str | None:
        return None

    @cached_property
    def attribution(self) -> Mapping[str, str]:
        """Tags plus feature, user and team: what budgets and selectors key on (read-only)."""
        out = dict(self.tags)
        for key in ("feature", "user", "team"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return MappingProxyType(out)

    @cached_property
    def as_cel(self) -> dict[str, Any]:
        return self._build()

    def _build(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "model": self.model,
            "feature": self.feature,
            "user": self.user,
            "team": self.team,
            "tags": dict(self.tags),
            "phase": self.phase,
            "request": self.request.to_dict(),
            "usage": self.usage.to_dict() if self.usage else None,
            "estimated_cost_usd": self.estimated_cost_usd,
            "actual_cost_usd": self.actual_cost_usd,
            "latency_ms": self.latency_ms,
            "source": self.source.to_dict(),
        }


@_fields_on_instances
@dataclass(frozen=True, init=False)
class ServingConfig(_Subject):
    """A model server's configuration, with arguments resolved as the engine would read them.

    ``args`` is keyed by the engine's own destination names (``max_num_seqs``,
    ``enable_prefix_caching``...); ``gpus`` is what one replica requests.
    """

    type: ClassVar[str] = "serving_config"
    model: str
    engine: str = "vllm"
    engine_version: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    gpus: float = 0.0
    gpu_type: str | None = None
    replicas: int = 1
    params_b: float | None = None
    provider: str = "kubernetes"
    kind: str = "vllm"
    name: str = ""
    namespace: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    deprecated_args: tuple[str, ...] = ()
    arg_errors: tuple[str, ...] = ()
    """Problems that make the engine refuse to start (unknown arguments, bad values), as messages."""
    source: SourceLocation = _NO_SOURCE
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __init__(
        self,
        model: str,
        engine: str = "vllm",
        engine_version: str | None = None,
        args: Mapping[str, Any] = _EMPTY,
        gpus: float = 0.0,
        gpu_type: str | None = None,
        replicas: int = 1,
        params_b: float | None = None,
        provider: str = "kubernetes",
        kind: str = "vllm",
        name: str = "",
        namespace: str | None = None,
        tags: Mapping[str, str] = _EMPTY,
        deprecated_args: tuple[str, ...] = (),
        arg_errors: tuple[str, ...] = (),
        source: SourceLocation = _NO_SOURCE,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        # As Resource: the instance dict directly, not object.__setattr__ per field.
        d = self.__dict__
        d["model"] = model
        d["engine"] = engine
        d["engine_version"] = engine_version
        d["args"] = _frozen_map(args)
        d["gpus"] = gpus
        d["gpu_type"] = gpu_type
        d["replicas"] = replicas
        d["params_b"] = params_b
        d["provider"] = provider
        d["_plan_entry"] = None  # the evaluator's plan key and SubjectRef, once judged
        d["kind"] = kind
        d["name"] = name
        d["namespace"] = namespace
        d["tags"] = _frozen_map(tags)
        d["deprecated_args"] = deprecated_args
        d["arg_errors"] = arg_errors
        d["source"] = source
        d["raw"] = raw

    @cached_property
    def as_cel(self) -> dict[str, Any]:
        return self._build()

    def _build(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "tags": dict(self.tags),
            "engine": self.engine,
            "engine_version": self.engine_version,
            "model": self.model,
            "args": dict(self.args),
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "replicas": self.replicas,
            "params_b": self.params_b,
            "deprecated_args": list(self.deprecated_args),
            "arg_errors": list(self.arg_errors),
            "source": self.source.to_dict(),
        }


Subject: TypeAlias = Resource | LlmCall | ServingConfig

SUBJECT_CLASSES: dict[str, type[Resource] | type[LlmCall] | type[ServingConfig]] = {
    "resource": Resource,
    "llm_call": LlmCall,
    "serving_config": ServingConfig,
}


# --- construction from plain data -----------------------------------------------------------


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
        tags = self.map(key) or {}
        out: dict[str, str] = {}
        for k, v in tags.items():
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise SubjectError("tag values must be strings", path=self._path(f"{key}.{k}"))
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out

    def sub(self, key: str) -> _Reader:
        return _Reader(self.map(key) or {}, f"{self.prefix}{key}.")


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
    return Resource(
        provider=r.text("provider", required=True),
        kind=r.text("kind", required=True),
        name=r.text("name", "") or "",
        namespace=r.text("namespace"),
        region=r.text("region"),
        tags=r.tags(),
        capacity=r.choice("capacity", CAPACITIES, "unknown"),
        workload=workload,
        hourly_usd=r.number("hourly_usd"),
        source=_source(r),
        raw=r.map("raw"),
        tags_pointer=r.text("tags_pointer"),
        pod_spec_pointers=tuple(pointers),
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
    )


def _llm_call(data: Mapping[str, Any]) -> LlmCall:
    r = _Reader(data)
    q = r.sub("request")
    request = LlmRequest(
        api=q.text("api", "messages") or "messages",
        max_tokens=q.integer("max_tokens"),
        max_tokens_field=q.text("max_tokens_field", "max_tokens") or "max_tokens",
        input_tokens=q.integer("input_tokens", 0) or 0,
        cacheable_prefix_tokens=q.integer("cacheable_prefix_tokens", 0) or 0,
        prefix_pointer=q.text("prefix_pointer"),
        cache_breakpoints=q.integer("cache_breakpoints", 0) or 0,
        stream=q.flag("stream"),
        batch=q.flag("batch"),
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
    return ServingConfig(
        model=r.text("model", required=True),
        engine=r.text("engine", "vllm") or "vllm",
        engine_version=r.text("engine_version"),
        args=dict(r.map("args") or {}),
        gpus=r.number("gpus", 0.0) or 0.0,
        gpu_type=r.text("gpu_type"),
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


def replace(subject: Subject, **changes: Any) -> Subject:
    """A copy of ``subject`` with fields changed (``dataclasses.replace`` that keeps the type)."""
    return dataclasses.replace(subject, **changes)


__all__ = [
    "CAPACITIES",
    "SUBJECT_CLASSES",
    "SUBJECT_TYPES",
    "WORKLOAD_CLASSES",
    "Capacity",
    "LlmCall",
    "LlmRequest",
    "Phase",
    "Resource",
    "ServingConfig",
    "SourceLocation",
    "Subject",
    "SubjectType",
    "TokenUsage",
    "Workload",
    "WorkloadClass",
    "replace",
    "subject_from_dict",
]
