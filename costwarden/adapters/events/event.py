"""One guarded LLM call as a cost record, and the protocol every sink implements.

A :class:`CostEvent` is emitted by the call-guard once per logical call — allowed, rewritten,
denied, failed or cancelled — after its reservation was settled or released, so the sum of
``cost_usd`` over the events of calls that held budget equals what the ledger was charged.
Prompts and completions are never recorded unless the guard was built with ``record_content=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from costwarden.engine.subjects import TokenUsage

Outcome = Literal["ok", "denied", "error", "cancelled", "partial"]
"""``ok`` — the call returned its usage; ``partial`` — a stream ended before its final usage and
was charged for what it used; ``error`` — the provider answered with an error or the connection
failed; ``cancelled`` — the caller cancelled or dropped the call; ``denied`` — refused before sending."""

UsageSource = Literal["response", "stream", "estimate", "none"]


@dataclass(frozen=True, slots=True)
class CostEvent:
    """What one LLM call cost, who it is attributed to, and what the guard did to it."""

    provider: str
    api: str
    model_requested: str
    model: str
    """The model as sent, after rewrites."""
    outcome: Outcome
    verdict: Literal["allow", "deny"]
    started_at: datetime
    finished_at: datetime
    model_served: str | None = None
    feature: str | None = None
    user: str | None = None
    team: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False
    batch: bool = False
    batch_requests: int = 0
    input_tokens: int = 0
    """Uncached input tokens (Anthropic's convention; OpenAI's ``prompt_tokens`` minus cache reads)."""
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    input_audio_tokens: int = 0
    """The audio share of the input (OpenAI audio models), priced at the audio rate."""
    output_audio_tokens: int = 0
    """The audio share of ``output_tokens``."""
    input_image_tokens: int = 0
    """The image share of the input (input images, GPT Image edits), priced at the image rate."""
    output_image_tokens: int = 0
    """The image share of ``output_tokens`` (GPT Image generation)."""
    web_search_requests: int = 0
    """Server-side web searches (Anthropic's web search tool), priced per search."""
    audio_seconds: int = 0
    """Seconds of input audio billed by duration (``whisper-1`` transcriptions and translations)."""
    input_characters: int = 0
    """Characters of input text billed per character (``tts-1`` / ``tts-1-hd`` speech)."""
    cost_usd: float = 0.0
    """What the call cost and, when it held budget, what the ledger was charged."""
    estimated_cost_usd: float | None = None
    """The worst case reserved before the call (estimated input plus clamped max output)."""
    charged: bool = False
    """Whether ``cost_usd`` was settled into the budget ledger."""
    usage_source: UsageSource = "none"
    latency_ms: float | None = None
    status_code: int | None = None
    rewrites: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    """Warnings before the call and post-call results (``policy/rule: message``)."""
    alerts: tuple[str, ...] = ()
    reservation_id: str | None = None
    error: str | None = None
    prompt: Any = None
    """The request's messages — only with ``record_content=True``."""
    completion: Any = None
    """The response content — only with ``record_content=True``."""

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; timestamps as ISO 8601, content only when it was recorded."""
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value.__class__ not in _PLAIN:  # (most fields are: skip the isinstance checks)
                if isinstance(value, datetime):
                    value = value.isoformat()
                elif isinstance(value, tuple):
                    value = list(value)
                elif isinstance(value, Mapping):
                    value = dict(value)
            elif value is None and name in _CONTENT:
                continue
            out[name] = value
        return out


_FIELD_NAMES = tuple(f.name for f in fields(CostEvent))
_PLAIN = frozenset({str, int, float, bool, type(None)})
_CONTENT = frozenset({"prompt", "completion"})


def usage_counts(usage: TokenUsage | None) -> dict[str, int]:
    """The token, search and other unit counts of ``usage`` as :class:`CostEvent` fields (all 0 without usage):
    every place that builds an event from a usage passes them alike."""
    u = usage if usage is not None else TokenUsage()
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "input_audio_tokens": u.input_audio_tokens,
        "output_audio_tokens": u.output_audio_tokens,
        "input_image_tokens": u.input_image_tokens,
        "output_image_tokens": u.output_image_tokens,
        "web_search_requests": u.web_search_requests,
        "audio_seconds": u.audio_seconds,
        "input_characters": u.input_characters,
    }


@runtime_checkable
class EventSink(Protocol):
    """Receives cost events. ``emit`` must not raise for a well-formed event; the guard logs and
    drops a sink's exception rather than fail a call that already happened.

    Example::

        class PrintSink:
            def emit(self, event: CostEvent) -> None:
                print(event.feature, event.model, f"${event.cost_usd:.6f}")

            def close(self) -> None:
                pass

    A sink whose ``emit`` does no I/O may say so with a class attribute ``in_process = True``; the
    async call-guard edges otherwise finish calls in a worker thread so a slow sink cannot block
    the event loop.

    A sink may also define ``alert(alert: Alert) -> None``: the guard calls it once for each budget
    alert threshold crossed (``alertAt``), as it calls ``on_alert``. The event of the call that
    crossed it lists the alert too (``CostEvent.alerts``).
    """

    def emit(self, event: CostEvent) -> None: ...

    def close(self) -> None: ...


__all__ = ["CostEvent", "EventSink", "Outcome", "UsageSource", "usage_counts"]
