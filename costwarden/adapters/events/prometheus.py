"""Cost events as Prometheus metrics with bounded label cardinality.

Labels are ``feature``, ``model`` and ``team`` (plus ``user`` only with ``user_label=True``, and
``outcome`` on the call counter). Each label keeps at most ``max_label_values`` distinct values;
later new values are reported as ``(other)`` so a caller that puts request ids in ``feature`` cannot
blow up the time-series count; a missing value is ``(none)``. The parentheses keep both apart from a
real feature, model or team named ``other`` or ``none``. A value that is not valid UTF-8 text (a
lone surrogate from a header decoded with ``surrogateescape``) is written with backslash escapes,
and one longer than :data:`MAX_LABEL_LENGTH` characters is cut and suffixed with a hash of the
whole: the exposition encodes every series as UTF-8, so one such value made every scrape fail, and
backends such as Mimir discard series with overlong values. Metrics (``costwarden_`` prefix by default):

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
import hashlib
import threading
from typing import Any

from costwarden.adapters.events.event import CostEvent
from costwarden.engine.ledger import Alert
from costwarden.engine.rules.budget import split_key

OTHER = "(other)"
NONE = "(none)"
MAX_LABEL_LENGTH = 256


def label_text(value: str) -> str:
    """``value`` as a label value every scrape can encode, of at most :data:`MAX_LABEL_LENGTH` characters."""
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) > MAX_LABEL_LENGTH:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]
        value = f"{value[: MAX_LABEL_LENGTH - 13]}~{digest}"
    return value


class _BoundedLabel:
    """Maps label values to themselves until ``limit`` distinct values were seen, then to :data:`OTHER`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        text = label_text(value) if value else NONE
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
    ``CollectorRegistry()`` to keep several sinks (tests) apart. Sinks on the same registry and
    namespace share one set of metrics, which stay registered until the last of them is closed.
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
        from prometheus_client import REGISTRY

        self.registry = registry if registry is not None else REGISTRY
        self.user_label = user_label
        self._labels = ("feature", "model", "team", *(("user",) if user_label else ()))
        m = _Metrics.acquire(self.registry, namespace, self._labels, max_label_values)
        self._metrics: _Metrics | None = m
        self._bound = m.bound
        self._budget = m.budget
        self.calls, self.cost, self.estimated, self.tokens = m.calls, m.cost, m.estimated, m.tokens
        self.searches, self.rewrites, self.latency, self.alerts = m.searches, m.rewrites, m.latency, m.alerts

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
        """Unregister the metrics from the registry, once no other open sink shares them."""
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.release()


class _Metrics:
    """The metrics of the sinks on one registry under one namespace. A second sink on the same
    registry (a second guard, a guard rebuilt on reload) shares them and their label bounds:
    registering them again would raise ``Duplicated timeseries``. The last sink closed
    unregisters them."""

    _shared: dict[tuple[int, str], _Metrics] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def acquire(cls, registry: Any, namespace: str, labels: tuple[str, ...], max_label_values: int) -> _Metrics:
        with cls._shared_lock:
            key = (id(registry), namespace)
            metrics = cls._shared.get(key)
            if metrics is None:
                metrics = cls._shared[key] = cls(key, registry, namespace, labels, max_label_values)
            elif (metrics.labels, metrics.max_label_values) != (labels, max_label_values):
                raise ValueError(
                    f"a PrometheusSink with labels {list(metrics.labels)} and max_label_values="
                    f"{metrics.max_label_values} is already open on this registry under namespace {namespace!r}; "
                    "give this one the same settings or another namespace"
                )
            metrics.refs += 1
            return metrics

    def __init__(
        self, key: tuple[int, str], registry: Any, namespace: str, labels: tuple[str, ...], max_label_values: int
    ) -> None:
        from prometheus_client import Counter, Histogram

        self.key = key
        self.registry = registry
        self.labels = labels
        self.max_label_values = max_label_values
        self.refs = 0
        self.bound = {name: _BoundedLabel(max_label_values) for name in labels}
        self.budget = _BoundedLabel(max_label_values)
        names = list(labels)
        made: list[Any] = []

        def make(kind: Any, name: str, documentation: str, labelnames: list[str], **extra: Any) -> Any:
            made.append(kind(name, documentation, labelnames, namespace=namespace, registry=registry, **extra))
            return made[-1]

        try:
            self.calls = make(Counter, "llm_calls", "Guarded LLM calls", [*names, "outcome"])
            self.cost = make(Counter, "llm_cost_usd", "USD spent on LLM calls", names)
            self.estimated = make(Counter, "llm_estimated_cost_usd", "USD reserved before LLM calls", names)
            self.tokens = make(Counter, "llm_tokens", "Tokens of LLM calls", [*names, "kind"])
            self.searches = make(Counter, "llm_web_searches", "Server-side web searches of LLM calls", names)
            self.rewrites = make(Counter, "llm_rewrites", "LLM requests rewritten by the call-guard", names)
            self.latency = make(
                Histogram,
                "llm_call_latency_seconds",
                "Latency of guarded LLM calls",
                names,
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            )
            self.alerts = make(Counter, "budget_alerts", "Budget alert thresholds crossed", ["budget", "threshold"])
        except BaseException:
            for metric in made:  # a clash with metrics of another library: leave the registry as it was
                with contextlib.suppress(KeyError):
                    registry.unregister(metric)
            raise
        self.all = tuple(made)

    def release(self) -> None:
        with self._shared_lock:
            self.refs -= 1
            if self.refs > 0:
                return
            if self._shared.get(self.key) is self:
                del self._shared[self.key]
            for metric in self.all:
                with contextlib.suppress(KeyError):
                    self.registry.unregister(metric)


__all__ = ["MAX_LABEL_LENGTH", "PrometheusSink", "label_text"]
