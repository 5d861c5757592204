"""The parts of a subject: the literal types of its fields, where it came from, what it runs,
what its tags cannot show yet, the token counts of a finished call and the facts of an LLM request.

The ``_NO_*`` instances are the shared defaults of the records' fields; ``_frozen_map`` gives the
records their read-only mappings (``_EMPTY`` for an empty one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, get_args

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
class UnknownTags:
    """What a resource's ``tags`` cannot show yet: a Terraform plan knows some values only after
    the apply, and may not show every key. Empty (false) for every other source.

    ``values`` are keys present in ``tags`` whose values are not known yet: rules treat them as
    present but never judge their value (an unknown neither satisfies a value requirement nor
    proves it unmet). ``incomplete`` says why ``tags`` may lack keys the resource will carry (a
    tag map known only after apply, provider ``default_tags`` the plan does not hold), None when
    it lacks none; ``incomplete_keys`` are the only keys that can be among them (None: any key).
    A key the resource may carry is never proven absent.
    """

    values: frozenset[str] = frozenset()
    incomplete: str | None = None
    incomplete_keys: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.values) or self.incomplete is not None

    def may_hold(self, key: str) -> bool:
        """Whether ``key``, absent from ``tags``, may still be among the tags the resource carries."""
        return self.incomplete is not None and (self.incomplete_keys is None or key in self.incomplete_keys)

    def to_dict(self) -> dict[str, Any]:
        keys = self.incomplete_keys
        return {
            "values": sorted(self.values),
            "incomplete": self.incomplete,
            "incomplete_keys": None if keys is None else sorted(keys),
        }


_NO_UNKNOWN_TAGS = UnknownTags()


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of a finished call. ``input_tokens`` excludes cache reads and writes
    (Anthropic's convention); ``total_input_tokens`` adds them back.

    ``input_audio_tokens`` and ``output_audio_tokens`` are the audio share of the input (of
    ``total_input_tokens``) and of ``output_tokens``, not counts on top of them (OpenAI's
    ``*_tokens_details.audio_tokens``); ``input_image_tokens`` and ``output_image_tokens`` the image
    share alike (``*_tokens_details.image_tokens``: input images, GPT Image output), each share billed
    at its modality's rates; ``web_search_requests`` counts server-side web searches
    (Anthropic's ``usage.server_tool_use.web_search_requests``), billed per search.
    ``audio_seconds`` and ``input_characters`` are units some models bill instead of tokens: seconds
    of input audio (``whisper-1``, whole seconds) and characters of input text (``tts-1``); 0 for
    every other call.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0
    audio_seconds: int = 0
    input_characters: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    def plus(self, other: TokenUsage) -> TokenUsage:
        """The two usages summed field by field (a batch's lines, a call's attempts)."""
        return TokenUsage(*(a + b for a, b in zip(_usage_values(self), _usage_values(other), strict=True)))

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
            "web_search_requests": self.web_search_requests,
            "input_audio_tokens": self.input_audio_tokens,
            "output_audio_tokens": self.output_audio_tokens,
            "input_image_tokens": self.input_image_tokens,
            "output_image_tokens": self.output_image_tokens,
            "audio_seconds": self.audio_seconds,
            "input_characters": self.input_characters,
        }


def _usage_values(usage: TokenUsage) -> tuple[int, ...]:
    return tuple(getattr(usage, f.name) for f in fields(TokenUsage))


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """Facts about an LLM request that rules look at, computed once by the provider adapter.

    ``input_tokens`` is an estimate before the call; ``cacheable_prefix_tokens`` is the estimated
    size of the longest stable prefix (tools, then system) and ``prefix_pointer`` the JSON pointer
    of the block that ends it, where a cache breakpoint would go. ``max_tokens_field`` names the
    body field that caps output (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``; empty
    when the API has none: image generation, whose size and quality set it),
    per choice: ``choices`` completions are generated (Chat Completions' ``n``), each up to it; 0 for a
    call that generates no output (an embeddings call: its worst case is its input alone).
    ``cache_write_1h`` is set when a cache breakpoint asks for the 1h TTL (writes cost 2x input,
    not 1.25x). ``max_web_searches`` is the server-side web searches the worst case holds (the web search
    tool's ``max_uses``; an assumed number, the adapter's, for a tool without a limit), 0 without the
    tool. ``output_audio`` is set when the
    request asks for audio output (Chat Completions' ``modalities`` with ``"audio"``), ``output_image``
    when its output is image tokens (GPT Image generation): the worst case bills its output at that
    modality's rate. ``input_image_tokens`` is the image share of ``input_tokens`` (the images an
    image edit sends), reserved at the input image rate.
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
    choices: int = 1
    max_web_searches: int = 0
    output_audio: bool = False
    cache_write_1h: bool = False
    output_image: bool = False
    input_image_tokens: int = 0

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
            "choices": self.choices,
            "max_web_searches": self.max_web_searches,
            "output_audio": self.output_audio,
            "cache_write_1h": self.cache_write_1h,
            "output_image": self.output_image,
            "input_image_tokens": self.input_image_tokens,
        }


_NO_REQUEST = LlmRequest()
