"""The ``llm_call`` subject: one LLM API call, before it is sent or after it returned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar

from costwarden.engine.subjects.base import _fields_on_instances, _Subject
from costwarden.engine.subjects.parts import (
    _EMPTY,
    _NO_REQUEST,
    _NO_SOURCE,
    LlmRequest,
    Phase,
    SourceLocation,
    TokenUsage,
    _frozen_map,
)


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
