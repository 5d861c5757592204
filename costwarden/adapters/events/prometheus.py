"""Cost events as Prometheus metrics with bounded label cardinality.

Labels are ``feature``, ``model`` and ``team`` (plus ``user`` only with ``user_label=True``, and
``outcome`` on the call counter). Each label keeps at most ``max_label_values`` distinct values;
later new values are reported as ``other`` so a caller that puts request ids in ``feature``
cannot blow up the time-series count. Metrics (``costwarden_`` prefix by default):

* ``llm_calls_total{feature,model,team,outcome}``
* ``llm_cost_usd_total{feature,model,team}`` and ``llm_estimated_cost_usd_total{...}``
* ``llm_tokens_total{feature,model,team,kind}`` — kind ``input | output | cache_read | cache_write``
* ``llm_rewrites_total{feature,model,team}`` — requests the guard rewrote
* ``llm_call_latency_seconds{feature,model,team}`` — histogram
* ``budget_alerts_total{budget,threshold}`` — alert thresholds crossed (``alertAt``), by budget
  rule (``policy/rule``, not the user or feature it counts for) and fraction of the limit
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from costwarden.adapters.events.event import CostEvent
from costwarden.engine.ledger import Alert
from costwarden.engine.rules.budget import split_key

OTHER = "other"
NONE = "none"


class _BoundedLabel:
    """Maps label values to themselves until ``limit`` distinct values were seen, then to ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        text = value or NONE
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(text)
                return text
        return OTHER


class PrometheusSink:
    """Counts calls, tokens and dollars per feature, model and team into a Prometheus registry.

    ``registry`` defaults to ``prometheus_client.REGISTRY``; pass a fresh
    ``CollectorRegistry()`` to keep several sinks (tests) apart.
    """

    in_process = True
    """Emitting only updates counters in memory: the async call-guard edges need not leave the event loop."""

    def __init__(
        self,
        registry: Any = None,
        *,
        user_label: bool = False,
        namespace: str = "costwarden",
        max_label_values: int = 200,
    ) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        self.registry = registry if registry is not None else REGISTRY
        self.user_label = user_label
        self._labels = ("feature", "model", "team", *(("user",) if user_label else ()))
        self._bound = {name: _BoundedLabel(max_label_values) for name in self._labels}
        kw: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        labels = list(self._labels)
        self.calls = Counter("llm_calls", "Guarded LLM calls", [*labels, "outcome"], **kw)
        self.cost = Counter("llm_cost_usd", "USD spent on LLM calls", labels, **kw)
        self.estimated = Counter("llm_estimated_cost_usd", "USD reserved before LLM calls", labels, **kw)
        self.tokens = Counter("llm_tokens", "Tokens of LLM calls", [*labels, "kind"], **kw)
        self.searches = Counter("llm_web_searches", "Server-side web searches of LLM calls", labels, **kw)
        self.rewrites = Counter("llm_rewrites", "LLM requests rewritten by the call-guard", labels, **kw)
        self.latency = Histogram(
            "llm_call_latency_seconds",
            "Latency of guarded LLM calls",
            labels,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            **kw,
        )
        self.alerts = Counter("budget_alerts", "Budget alert thresholds crossed", ["budget", "threshold"], **kw)
        self._budget = _BoundedLabel(max_label_values)

    def _label_values(self, event: CostEvent) -> list[str]:
        values = {"feature": event.feature, "model": event.model_served or event.model, "team": event.team}
        if self.user_label:
            values["user"] = event.user
        return [self._bound[name](values[name]) for name in self._labels]

    def emit(self, event: CostEvent) -> None:
        labels = self._label_values(event)
        self.calls.labels(*labels, event.outcome).inc()
        if event.cost_usd:
            self.cost.labels(*labels).inc(event.cost_usd)
        if event.estimated_cost_usd:
            self.estimated.labels(*labels).inc(event.estimated_cost_usd)
        for kind, count in (
            ("input", event.input_tokens),
            ("output", event.output_tokens),
            ("cache_read", event.cache_read_tokens),
            ("cache_write", event.cache_write_tokens),
        ):
            if count:
                self.tokens.labels(*labels, kind).inc(count)
        if event.web_search_requests:
            self.searches.labels(*labels).inc(event.web_search_requests)
        if event.rewrites:
            self.rewrites.labels(*labels).inc()
        if event.latency_ms is not None:
            self.latency.labels(*labels).observe(event.latency_ms / 1000)

    def alert(self, alert: Alert) -> None:
        """Count a budget alert under its budget rule and threshold."""
        parts = split_key(alert.key)
        self.alerts.labels(self._budget(parts[0] if parts else alert.key), f"{alert.threshold:g}").inc()

    def close(self) -> None:
        """Unregister the metrics from the registry."""
        for metric in (self.calls, self.cost, self.estimated, self.tokens, self.searches, self.rewrites, self.latency,
                       self.alerts):
            with contextlib.suppress(KeyError):
                self.registry.unregister(metric)


__all__ = ["PrometheusSink"]
