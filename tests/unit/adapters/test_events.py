"""Cost events and their sinks: JSONL, SQLite, Prometheus and OpenTelemetry."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters.events import CostEvent, EventSink, JsonlSink, SqliteSink
from costwarden.adapters.events.jsonl import read_events

START = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def event(**changes: Any) -> CostEvent:
    values: dict[str, Any] = {
        "provider": "anthropic",
        "api": "messages",
        "model_requested": "claude-opus-4-6",
        "model": "claude-haiku-4-5",
        "model_served": "claude-haiku-4-5-20251001",
        "outcome": "ok",
        "verdict": "allow",
        "started_at": START,
        "finished_at": START + timedelta(milliseconds=820),
        "feature": "search",
        "user": "u-1",
        "team": "growth",
        "tags": {"env": "prod"},
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 50,
        "cost_usd": 0.0123,
        "estimated_cost_usd": 0.05,
        "charged": True,
        "usage_source": "response",
        "latency_ms": 820.0,
        "rewrites": ("downgrade model to claude-haiku-4-5",),
        "reservation_id": "cw-1",
    }
    values.update(changes)
    return CostEvent(**values)


def test_event_dict_is_json_ready_and_has_no_content_unless_recorded() -> None:
    data = event().to_dict()
    assert data["started_at"] == "2026-11-30T15:00:00+00:00"
    assert data["rewrites"] == ["downgrade model to claude-haiku-4-5"] and data["tags"] == {"env": "prod"}
    assert "prompt" not in data and "completion" not in data
    assert event(prompt={"messages": []}).to_dict()["prompt"] == {"messages": []}
    assert event().total_input_tokens == 1150


def test_jsonl_sink_appends_one_line_per_event_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        assert isinstance(sink, EventSink)
        threads = [threading.Thread(target=lambda: [sink.emit(event()) for _ in range(50)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = read_events(path)
    assert len(rows) == 400 and rows[0]["cost_usd"] == 0.0123 and rows[0]["user"] == "u-1"


def test_sqlite_sink_rows(tmp_path: Path) -> None:
    with SqliteSink(tmp_path / "events.db") as sink:
        sink.emit(event())
        sink.emit(event(feature="chat", cost_usd=0.5, rewrites=(), tags={}))
        rows = sink.query("SELECT feature, model, SUM(cost_usd), rewrites FROM cost_events GROUP BY feature "
                          "ORDER BY feature")
    assert rows == [("chat", "claude-haiku-4-5", 0.5, None),
                    ("search", "claude-haiku-4-5", 0.0123, '["downgrade model to claude-haiku-4-5"]')]


def test_sqlite_sink_adds_the_columns_an_older_file_lacks(tmp_path: Path) -> None:
    """A file written before the audio and web-search columns existed takes new rows with them
    (before, every insert into such a file failed, and the sink's events were lost)."""
    path = tmp_path / "events.db"
    with SqliteSink(path) as sink:
        sink.emit(event())
        for column in ("input_audio_tokens", "output_audio_tokens", "web_search_requests"):
            sink.query(f"ALTER TABLE cost_events DROP COLUMN {column}")
    with SqliteSink(path) as sink:
        sink.emit(event(web_search_requests=3, input_audio_tokens=7))
        rows = sink.query("SELECT web_search_requests, input_audio_tokens, output_audio_tokens FROM cost_events "
                          "ORDER BY id")
    assert rows == [(0, 0, 0), (3, 7, 0)]


def test_sqlite_sink_rejects_a_bad_table_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteSink(tmp_path / "x.db", table="x; DROP TABLE y")


def test_prometheus_overflow_and_missing_values_are_not_real_values() -> None:
    """A feature really named ``other`` or ``none`` stays its own series, apart from the overflow
    bucket and from calls without a feature."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry, max_label_values=4)
    for feature in ("other", "none", None, "f-1", "f-2", "f-3"):
        sink.emit(event(feature=feature))
    calls = {s.labels["feature"]: s.value for m in registry.collect() for s in m.samples
             if s.name == "costwarden_llm_calls_total"}
    assert calls == {"other": 1, "none": 1, "(none)": 1, "f-1": 1, "(other)": 2}
    sink.close()


def test_prometheus_sink_counts_with_bounded_labels() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry, max_label_values=3)
    sink.emit(event())
    sink.emit(event(outcome="denied", cost_usd=0.0, estimated_cost_usd=None, input_tokens=0, output_tokens=0,
                    cache_read_tokens=0, cache_write_tokens=0, latency_ms=None))
    labels = {"feature": "search", "model": "claude-haiku-4-5-20251001", "team": "growth"}
    value = registry.get_sample_value
    assert value("costwarden_llm_cost_usd_total", labels) == pytest.approx(0.0123)
    assert value("costwarden_llm_calls_total", {**labels, "outcome": "denied"}) == 1
    assert value("costwarden_llm_tokens_total", {**labels, "kind": "cache_read"}) == 1000
    assert value("costwarden_llm_rewrites_total", labels) == 2
    assert value("costwarden_llm_call_latency_seconds_count", labels) == 1
    sink.emit(event(web_search_requests=4))
    assert value("costwarden_llm_web_searches_total", labels) == 4
    names = {s.name for m in registry.collect() for s in m.samples}
    assert all("user" not in s.labels for m in registry.collect() for s in m.samples)
    assert "costwarden_llm_calls_total" in names
    for i in range(10):
        sink.emit(event(feature=f"f-{i}"))
    features = {s.labels["feature"] for m in registry.collect() for s in m.samples if "feature" in s.labels}
    assert features == {"search", "f-0", "f-1", "(other)"}
    sink.close()


def test_prometheus_user_label_only_when_enabled() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    PrometheusSink(registry, user_label=True).emit(event())
    assert registry.get_sample_value(
        "costwarden_llm_cost_usd_total",
        {"feature": "search", "model": "claude-haiku-4-5-20251001", "team": "growth", "user": "u-1"},
    ) == pytest.approx(0.0123)


def test_prometheus_counts_budget_alerts_by_rule_and_threshold_not_by_user() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from costwarden.adapters.events import PrometheusSink
    from costwarden.engine.ledger import Alert

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry)
    for user in ("u-1", "org:7|u-2"):
        sink.alert(Alert(f"budget:user-daily-budget/daily-user-cap:user={user}:2026-11-30", 0.8, 20.0, 25.0))
    sink.alert(Alert("budget:user-daily-budget/daily-user-cap:user=u-1:2026-11-30", 0.95, 24.0, 25.0))
    value = registry.get_sample_value
    rule = "user-daily-budget/daily-user-cap"
    assert value("costwarden_budget_alerts_total", {"budget": rule, "threshold": "0.8"}) == 2
    assert value("costwarden_budget_alerts_total", {"budget": rule, "threshold": "0.95"}) == 1
    assert {s.labels["budget"] for m in registry.collect() for s in m.samples if "budget" in s.labels} == {rule}
    sink.close()
    assert value("costwarden_budget_alerts_total", {"budget": rule, "threshold": "0.8"}) is None


def test_otel_sink_spans_carry_gen_ai_attributes() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from costwarden.adapters.events import OtelSink

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OtelSink(provider.get_tracer("test"))
    sink.emit(event())
    sink.emit(event(outcome="error", error="APITimeoutError: timed out", user="secret-user"))
    ok, failed = exporter.get_finished_spans()
    provider.shutdown()
    attrs = dict(ok.attributes or {})
    assert ok.name == "chat claude-haiku-4-5"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-haiku-4-5"
    assert attrs["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
    assert attrs["gen_ai.usage.input_tokens"] == 1150 and attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 50
    assert attrs["costwarden.cost_usd"] == 0.0123 and attrs["costwarden.model_requested"] == "claude-opus-4-6"
    assert "costwarden.user" not in attrs and "costwarden.usage.web_search_requests" not in attrs
    assert sink.attributes(event(web_search_requests=2))["costwarden.usage.web_search_requests"] == 2
    assert ok.end_time - ok.start_time == 820_000_000
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "APITimeoutError"


def test_a_second_prometheus_sink_on_the_same_registry_shares_the_metrics() -> None:
    """A second guard's sink (or one rebuilt on a policy reload) on the same registry: before, its
    constructor raised ``Duplicated timeseries``; now both count into the same series, within one
    label bound, and the metrics stay registered until the last of them is closed."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    first = PrometheusSink(registry, max_label_values=2)
    second = PrometheusSink(registry, max_label_values=2)
    first.emit(event())
    second.emit(event())
    second.emit(event(feature="f-1"))
    first.emit(event(feature="f-2"))  # a third feature: over the shared bound of 2
    labels = {"feature": "search", "model": "claude-haiku-4-5-20251001", "team": "growth"}
    value = registry.get_sample_value
    assert value("costwarden_llm_cost_usd_total", labels) == pytest.approx(2 * 0.0123)
    assert value("costwarden_llm_calls_total", {**labels, "feature": "(other)", "outcome": "ok"}) == 1
    with pytest.raises(ValueError, match="already open"):
        PrometheusSink(registry, user_label=True)
    PrometheusSink(registry, user_label=True, namespace="other").close()
    first.close()
    first.close()  # closing twice releases once
    second.emit(event())
    assert value("costwarden_llm_cost_usd_total", labels) == pytest.approx(3 * 0.0123)
    second.close()
    assert value("costwarden_llm_cost_usd_total", labels) is None
    PrometheusSink(registry).close()  # and they can be registered again


def _append_from_a_process(path: str, barrier: Any, failures: Any) -> None:
    try:
        barrier.wait()
        with SqliteSink(path) as sink:
            for _ in range(5):
                sink.emit(event(web_search_requests=1))
    except Exception as exc:
        failures.put(repr(exc))


def test_sqlite_sink_processes_starting_together_on_an_older_file(tmp_path: Path) -> None:
    """Workers that open the same file at once, on a file of an older version (no WAL yet, no new
    columns) or a new one: before, SQLite refused some of them the switch to WAL at once with
    "database is locked", busy timeout or not, and their sink raised at startup."""
    import multiprocessing
    import sqlite3

    from costwarden.adapters.events.sqlite import _COLUMNS

    ctx = multiprocessing.get_context("fork")
    new_columns = ("input_audio_tokens", "output_audio_tokens", "web_search_requests")
    columns = ", ".join(f'"{name}" {kind}' for name, kind in _COLUMNS if name not in new_columns)
    for trial in range(30):
        path = str(tmp_path / f"events-{trial}.db")
        with sqlite3.connect(path) as db:
            db.execute(f"CREATE TABLE cost_events (id INTEGER PRIMARY KEY, {columns})")
        barrier, failures = ctx.Barrier(8), ctx.Queue()
        workers = [ctx.Process(target=_append_from_a_process, args=(path, barrier, failures)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert failures.empty(), failures.get()
        db = sqlite3.connect(path)
        assert db.execute("SELECT COUNT(*), SUM(web_search_requests) FROM cost_events").fetchone() == (40, 40)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
