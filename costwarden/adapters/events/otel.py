"""Cost events as OpenTelemetry spans with the GenAI semantic-convention attributes.

One ``CLIENT`` span per call, named ``"{operation} {model}"``, spanning the call's start and end
(to the nanosecond the event's timestamps hold), and parented to whatever span is current where
the call finished. Attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name`` (the
convention's value: a Bedrock call is ``aws.bedrock``, a Vertex AI one ``gcp.vertex_ai``; the
guard's own name is ``costwarden.provider`` when it differs), ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.request.stream`` (streamed calls only),
``gen_ai.usage.input_tokens`` (all input, cache reads and writes included),
``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
``gen_ai.usage.cache_write.input_tokens``, ``gen_ai.usage.audio.input_tokens`` /
``audio.output_tokens`` (when there were any), ``costwarden.usage.input_image_tokens`` /
``output_image_tokens``, ``costwarden.usage.audio_seconds`` and ``input_characters`` (likewise: the
units ``whisper-1`` and ``tts-1`` bill), and — no standard cost attribute exists yet —
``costwarden.cost_usd``, ``costwarden.estimated_cost_usd``, ``costwarden.outcome``,
``costwarden.feature``, ``costwarden.team`` and ``costwarden.rewrites``. The user is an attribute
only with ``user_attribute=True``.

A call that failed (``error``) or was refused (``denied``) has an ``ERROR`` status and an
``error.type`` of low cardinality, as the conventions ask: the HTTP status code (``"429"``), the
exception's class name (``"APITimeoutError"``), ``"denied"`` for a refusal, else ``"_OTHER"``.
Other outcomes never carry ``error.type``, whatever their ``error`` note says (the whole note is
the span status description of failures only).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from costwarden.adapters.events.event import CostEvent

_OPERATION = {"messages": "chat", "chat.completions": "chat", "responses": "chat", "responses.compact": "chat",
              "batch": "chat", "completions": "text_completion", "images": "generate_content",
              "audio": "generate_content"}
"""The conventions' well-known ``gen_ai.operation.name`` of each API (one that applies MUST be used):
the legacy Completions API is ``text_completion``; GPT Image and the Audio API (speech, transcriptions)
generate content across modalities; a Responses compaction (``responses.compact``) is a chat
model's generation over a conversation, as a Responses call is. ``embeddings`` is its own name already."""

_PROVIDER = {
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "x-ai": "x_ai",
}
"""The guard's provider names (genai-prices ids) whose ``gen_ai.provider.name`` value differs."""

_EXCEPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): ")
_HTTP = re.compile(r"HTTP (\d{3})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OtelSink:
    """Records each event as a span of ``tracer`` (an ``opentelemetry.trace.Tracer``)."""

    def __init__(self, tracer: Any = None, *, user_attribute: bool = False) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer if tracer is not None else trace.get_tracer("costwarden")
        self.user_attribute = user_attribute

    def attributes(self, event: CostEvent) -> dict[str, Any]:
        provider = _PROVIDER.get(event.provider, event.provider)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION.get(event.api, event.api),
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": event.model,
            "gen_ai.usage.input_tokens": event.total_input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": event.cache_read_tokens,
            "gen_ai.usage.cache_write.input_tokens": event.cache_write_tokens,
            "costwarden.cost_usd": event.cost_usd,
            "costwarden.outcome": event.outcome,
            "costwarden.verdict": event.verdict,
            "costwarden.charged": event.charged,
        }
        optional = {
            "gen_ai.response.model": event.model_served,
            "gen_ai.request.stream": True if event.stream else None,
            "gen_ai.usage.audio.input_tokens": event.input_audio_tokens or None,
            "gen_ai.usage.audio.output_tokens": event.output_audio_tokens or None,
            "costwarden.provider": event.provider if provider != event.provider else None,
            "costwarden.estimated_cost_usd": event.estimated_cost_usd,
            "costwarden.usage.input_audio_tokens": event.input_audio_tokens or None,
            "costwarden.usage.output_audio_tokens": event.output_audio_tokens or None,
            "costwarden.usage.input_image_tokens": event.input_image_tokens or None,
            "costwarden.usage.output_image_tokens": event.output_image_tokens or None,
            "costwarden.usage.web_search_requests": event.web_search_requests or None,
            "costwarden.usage.audio_seconds": event.audio_seconds or None,
            "costwarden.usage.input_characters": event.input_characters or None,
            "costwarden.model_requested": event.model_requested if event.model_requested != event.model else None,
            "costwarden.feature": event.feature,
            "costwarden.team": event.team,
            "costwarden.user": event.user if self.user_attribute else None,
            "costwarden.rewrites": list(event.rewrites) or None,
            "costwarden.findings": list(event.findings) or None,
            "costwarden.reservation_id": event.reservation_id,
            "http.response.status_code": event.status_code,
            "error.type": error_type(event),
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        return {k: _utf8(v) for k, v in attrs.items()}

    def emit(self, event: CostEvent) -> None:
        trace = self._trace
        name = f"{_OPERATION.get(event.api, event.api)} {event.model}"
        span = self.tracer.start_span(
            name,
            kind=trace.SpanKind.CLIENT,
            start_time=_ns(event.started_at),
            attributes=self.attributes(event),
        )
        if event.outcome in ("error", "denied"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error or event.outcome))
        span.end(end_time=_ns(event.finished_at))

    def close(self) -> None:
        pass


def error_type(event: CostEvent) -> str | None:
    """The low-cardinality ``error.type`` of a failed or refused call; None for other outcomes."""
    if event.outcome == "denied":
        return "denied"
    if event.outcome != "error":
        return None
    if event.status_code is not None and event.status_code >= 400:
        return str(event.status_code)
    match = _EXCEPTION.match(event.error or "")
    if match:
        return match.group(1)
    http = _HTTP.fullmatch(event.error or "")
    return http.group(1) if http else "_OTHER"


def _utf8(value: Any) -> Any:
    """A string (or strings of a list) an exporter can encode: OTLP's protobuf strings must be
    UTF-8, and one lone surrogate (a header decoded with ``surrogateescape``) cannot be serialised:
    the exporter fails the whole batch of spans it is in."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (``timestamp() * 1e9`` is off by up to a few hundred ns)."""
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: local time, as datetime.timestamp() reads it
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


__all__ = ["OtelSink", "error_type"]
