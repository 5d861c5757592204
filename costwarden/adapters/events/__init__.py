"""Cost events and where they go: JSONL files, a SQLite table, Prometheus metrics, OpenTelemetry spans.

The call-guard emits one :class:`CostEvent` per call to every sink it was given::

    from costwarden.adapters.events import JsonlSink, PrometheusSink
    guard = CallGuard(policies, ledger=ledger, sinks=[JsonlSink("spend.jsonl"), PrometheusSink()])

Sinks import their libraries (``prometheus_client``, ``opentelemetry``) only when built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from costwarden.adapters.events.event import CostEvent, EventSink, Outcome, UsageSource

_SINKS = {
    "JsonlSink": "costwarden.adapters.events.jsonl",
    "SqliteSink": "costwarden.adapters.events.sqlite",
    "PrometheusSink": "costwarden.adapters.events.prometheus",
    "OtelSink": "costwarden.adapters.events.otel",
}

if TYPE_CHECKING:
    from costwarden.adapters.events.jsonl import JsonlSink
    from costwarden.adapters.events.otel import OtelSink
    from costwarden.adapters.events.prometheus import PrometheusSink
    from costwarden.adapters.events.sqlite import SqliteSink


def __getattr__(name: str) -> Any:
    module = _SINKS.get(name)
    if module is None:
        raise AttributeError(f"module 'costwarden.adapters.events' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CostEvent",
    "EventSink",
    "JsonlSink",
    "OtelSink",
    "Outcome",
    "PrometheusSink",
    "SqliteSink",
    "UsageSource",
]
