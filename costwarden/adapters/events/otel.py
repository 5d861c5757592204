"""Cost events as OpenTelemetry spans with the GenAI semantic-convention attributes.

One ``CLIENT`` span per call, named ``"{operation} {model}"``, spanning the call's start and end,
and parented to whatever span is current where the call finished. Attributes:
``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` (all input, cache reads and writes
included), ``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
``gen_ai.usage.cache_write.input_tokens``, and — no standard cost attribute exists yet —
``costwarden.cost_usd``, ``costwarden.estimated_cost_usd``, ``costwarden.outcome``,
``costwarden.feature``, ``costwarden.team`` and ``costwarden.rewrites``. The user is an attribute
only with ``user_attribute=True``.
"""

from __future__ import annotations

from typing import Any

from costwarden.adapters.events.event import CostEvent

_OPERATION = {"messages": "chat", "chat.completions": "chat", "responses": "chat", "batch": "chat"}


class OtelSink:
    """Records each event as a span of ``tracer`` (an ``opentelemetry.trace.Tracer``)."""

    def __init__(self, tracer: Any = None, *, user_attribute: bool = False) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer if tracer is not None else trace.get_tracer("costwarden")
        self.user_attribute = user_attribute

    def attributes(self, event: CostEvent) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION.get(event.api, event.api),
            "gen_ai.provider.name": event.provider,
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
            "costwarden.estimated_cost_usd": event.estimated_cost_usd,
            "costwarden.usage.input_audio_tokens": event.input_audio_tokens or None,
            "costwarden.usage.output_audio_tokens": event.output_audio_tokens or None,
            "costwarden.usage.web_search_requests": event.web_search_requests or None,
            "costwarden.model_requested": event.model_requested if event.model_requested != event.model else None,
            "costwarden.feature": event.feature,
            "costwarden.team": event.team,
            "costwarden.user": event.user if self.user_attribute else None,
            "costwarden.rewrites": list(event.rewrites) or None,
            "costwarden.findings": list(event.findings) or None,
            "costwarden.reservation_id": event.reservation_id,
            "http.response.status_code": event.status_code,
            "error.type": event.error.split(":", 1)[0] if event.error else None,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        return attrs

    def emit(self, event: CostEvent) -> None:
        trace = self._trace
        name = f"{_OPERATION.get(event.api, event.api)} {event.model}"
        span = self.tracer.start_span(
            name,
            kind=trace.SpanKind.CLIENT,
            start_time=_ns(event.started_at.timestamp()),
            attributes=self.attributes(event),
        )
        if event.outcome in ("error", "denied"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error or event.outcome))
        span.end(end_time=_ns(event.finished_at.timestamp()))

    def close(self) -> None:
        pass


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


__all__ = ["OtelSink"]
