"""Prometheus metrics of the webhook.

Each app owns its registry (several apps can live in one test process). With several uvicorn
workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by :func:`costwarden.webhook.server.serve` before the
workers start, and ``/metrics`` aggregates every worker's values (gauges by their
``multiprocess_mode``).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from costwarden.enforcers.admission import AdmissionResult
from costwarden.webhook.reload import ReloadResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WebhookMetrics:
    """The webhook's metrics; ``exposition()`` is what ``GET /metrics`` answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.duration = Histogram("costwarden_webhook_request_duration_seconds",
                                  "Time to answer an admission request, by endpoint",
                                  ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("costwarden_webhook_requests_total",
                                "Admission requests by endpoint and outcome "
                                "(allowed, denied, patched, skipped, deadline, bad_request, too_large, "
                                "not_ready, error)", ["endpoint", "outcome"], registry=r)
        self.results = Counter("costwarden_webhook_results_total",
                               "Rule results of judged objects (from /validate) by policy, rule and result",
                               ["policy", "rule", "result"], registry=r)
        self.in_flight = Gauge("costwarden_webhook_in_flight_requests", "Admission requests being answered",
                               registry=r, multiprocess_mode="livesum")
        self.reload_ok = Gauge("costwarden_webhook_policy_reload_success",
                               "1 when the last policy load succeeded, 0 when it failed (the last good set is kept)",
                               registry=r, multiprocess_mode="livemin")
        self.reload_errors = Counter("costwarden_webhook_policy_reload_errors_total",
                                     "Policy loads that failed", registry=r)
        self.reloads = Counter("costwarden_webhook_policy_reloads_total", "Policy sets installed", registry=r)
        self.policies = Gauge("costwarden_webhook_policies", "Policies in the set being enforced",
                              registry=r, multiprocess_mode="livemax")
        self.reload_time = Gauge("costwarden_webhook_policy_last_reload_success_timestamp_seconds",
                                 "When a policy set was last installed", registry=r, multiprocess_mode="livemax")

    def observe_reload(self, result: ReloadResult) -> None:
        self.reload_ok.set(1 if result.ok else 0)
        self.policies.set(result.policies)
        if result.ok:
            self.reloads.inc()
            self.reload_time.set(time.time())
        else:
            self.reload_errors.inc()

    def observe_admission(self, endpoint: str, result: AdmissionResult) -> None:
        self.requests.labels(endpoint, result.outcome).inc()
        if endpoint == "validate":
            for decision in result.decisions:
                for r in decision.results:
                    self.results.labels(r.policy, r.rule, r.result).inc()

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["LATENCY_BUCKETS", "MULTIPROC_ENV", "WebhookMetrics"]
