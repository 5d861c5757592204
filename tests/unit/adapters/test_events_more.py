"""Cost-event sinks under the conditions a platform team runs them in: OpenTelemetry backends that
read the GenAI conventions, log rotation, a full disk."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from costwarden.adapters.events import CostEvent, JsonlSink
from costwarden.adapters.events.jsonl import read_events

START = datetime(2026, 11, 30, 15, 0, 0, 123457, tzinfo=UTC)


def event(**changes: Any) -> CostEvent:
    values: dict[str, Any] = {
        "provider": "anthropic", "api": "messages", "model_requested": "claude-haiku-4-5",
        "model": "claude-haiku-4-5", "model_served": "claude-haiku-4-5-20251001", "outcome": "ok",
        "verdict": "allow", "started_at": START, "finished_at": START + timedelta(microseconds=820_333),
        "feature": "search", "team": "growth", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01,
        "charged": True, "usage_source": "response", "latency_ms": 820.333,
    }
    values.update(changes)
    return CostEvent(**values)


# --- OpenTelemetry ----------------------------------------------------------------------------------


def _spans(*events: CostEvent) -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costwarden.adapters.events import OtelSink

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OtelSink(provider.get_tracer("test"))
    for e in events:
        sink.emit(e)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_otel_provider_name_uses_the_conventions_values() -> None:
    """AnthropicBedrock / AnthropicVertex calls are reported by the guard as ``bedrock`` and
    ``vertex_ai``; the GenAI conventions' values are ``aws.bedrock`` and ``gcp.vertex_ai`` (a
    backend grouping by provider put them under unknown providers)."""
    bedrock, vertex, anthropic = _spans(event(provider="bedrock"), event(provider="vertex_ai"), event())
    assert bedrock.attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert bedrock.attributes["costwarden.provider"] == "bedrock"
    assert vertex.attributes["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert anthropic.attributes["gen_ai.provider.name"] == "anthropic"
    assert "costwarden.provider" not in anthropic.attributes


def test_otel_error_type_is_low_cardinality_and_only_on_failures() -> None:
    """``error.type`` was the text before the first colon of the event's error note: ``HTTP 429``,
    ``stream ended early (ConnectionError`` (a partial stream, no error status), ``response has no
    readable usage (KeyError`` on a call that succeeded and was charged its estimate."""
    spans = _spans(
        event(outcome="error", error="HTTP 429", status_code=429),
        event(outcome="error", error="APIConnectionError: Connection error."),
        event(outcome="error", error="response body closed before its end"),
        event(outcome="partial", error="stream ended early (ConnectionError: reset by peer)"),
        event(outcome="ok", error="response has no readable usage (KeyError: 'usage'); charged the estimate"),
        event(outcome="denied", verdict="deny", error="denied: [budget/daily] over the daily budget: $3.10 > $3"),
    )
    types = [s.attributes.get("error.type") for s in spans]
    assert types == ["429", "APIConnectionError", "_OTHER", None, None, "denied"]
    from opentelemetry.trace import StatusCode

    assert [s.status.status_code for s in spans] == [StatusCode.ERROR] * 3 + [StatusCode.UNSET] * 2 + [
        StatusCode.ERROR]
    assert spans[0].status.description == "HTTP 429"


def test_otel_span_times_are_the_calls_to_the_nanosecond() -> None:
    """``int(ts.timestamp() * 1e9)`` rounded through a float: most start times were a few hundred
    nanoseconds off, and the duration of an 820,333 µs call was not 820,333,000 ns."""
    (span,) = _spans(event())
    expected = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert span.start_time == expected
    assert span.end_time - span.start_time == 820_333_000


def test_otel_streaming_and_audio_use_the_standard_attributes() -> None:
    streamed, plain = _spans(event(stream=True, input_audio_tokens=7, output_audio_tokens=3), event())
    assert streamed.attributes["gen_ai.request.stream"] is True
    assert streamed.attributes["gen_ai.usage.audio.input_tokens"] == 7
    assert streamed.attributes["gen_ai.usage.audio.output_tokens"] == 3
    assert "gen_ai.request.stream" not in plain.attributes  # set if and only if the request streamed
    assert "gen_ai.usage.audio.input_tokens" not in plain.attributes


# --- JSONL ------------------------------------------------------------------------------------------


def test_jsonl_follows_a_rotated_file(tmp_path: Path) -> None:
    """logrotate renames the file (then compresses or deletes it) and expects the writer to start a
    new one: before, every later event went into the rotated file, or a deleted one, and was lost."""
    path = tmp_path / "spend.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(event(feature="before"))
        path.rename(tmp_path / "spend.jsonl.1")
        sink.emit(event(feature="after-rename"))
        (tmp_path / "spend.jsonl.1").unlink()
        path.unlink()
        sink.emit(event(feature="after-delete"))
        sink.emit(event(feature="same-file"))
    assert [e["feature"] for e in read_events(path)] == ["after-delete", "same-file"]


_FULL_DISK = textwrap.dedent("""
    import json, os, resource, signal, sys
    from datetime import UTC, datetime
    from costwarden.adapters.events import CostEvent, JsonlSink

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    sink = JsonlSink(sys.argv[1])
    written, failed = [], []
    def emit(i):
        e = CostEvent(provider="openai", api="responses", model_requested="m", model="m", outcome="ok",
                      verdict="allow", started_at=now, finished_at=now, feature=f"f-{i}")
        try:
            sink.emit(e)
            written.append(i)
        except OSError as exc:
            failed.append([i, exc.errno, " ".join(getattr(exc, "__notes__", []))])
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, resource.RLIM_INFINITY))   # the disk fills up
    for i in range(10):
        emit(i)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space freed
    for i in range(10, 13):
        emit(i)
    print(json.dumps({"written": written, "failed": failed}))
""")


def test_jsonl_a_full_disk_loses_no_event_silently_and_tears_no_later_line(tmp_path: Path) -> None:
    """The write that fills the disk is short: before, the sink ignored how much was written, so
    that event was lost without an error, and the next event, appended to the fragment, was lost
    too (and the file no longer parsed)."""
    path = tmp_path / "spend.jsonl"
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True,
                         timeout=60, check=True)
    import json

    outcome = json.loads(run.stdout)
    written, failed = outcome["written"], outcome["failed"]
    assert failed and written[-3:] == [10, 11, 12]
    assert [e["feature"] for e in read_events(path)] == [f"f-{i}" for i in written]
    assert sorted(written + [i for i, _, _ in failed]) == list(range(13))
    assert all(f'"feature":"f-{i}"' in note for i, _, note in failed)  # the log says what was lost


# --- Prometheus -------------------------------------------------------------------------------------


def test_prometheus_a_label_value_that_is_not_utf8_does_not_break_every_scrape() -> None:
    """A feature read from a header with ``surrogateescape`` holds a lone surrogate: the sink took
    it, and from then on every scrape of the registry raised UnicodeEncodeError (all metrics gone)."""
    import prometheus_client

    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry)
    sink.emit(event(feature="caf\udce9", team="ml"))
    text = prometheus_client.generate_latest(registry).decode("utf-8")
    assert 'feature="caf\\\\udce9"' in text  # backslash-escaped, then escaped again by the exposition
    sink.emit(event(feature="café"))  # valid non-ASCII text is kept as it is
    assert registry.get_sample_value("costwarden_llm_cost_usd_total",
                                     {"feature": "café", "model": "claude-haiku-4-5-20251001", "team": "growth"})
    sink.close()


def test_prometheus_overlong_label_values_are_cut_but_stay_distinct() -> None:
    """Mimir and Cortex discard series whose label values exceed their limit (2,048 by default);
    a caller putting a prompt or a JSON blob in ``feature`` lost those series."""
    import prometheus_client

    from costwarden.adapters.events import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry)
    long_a, long_b = "a" * 5000, "a" * 4999 + "b"
    sink.emit(event(feature=long_a))
    sink.emit(event(feature=long_b))
    features = {s.labels["feature"] for m in registry.collect() for s in m.samples if "feature" in s.labels}
    assert len(features) == 2 and all(len(f) <= 256 for f in features)
    assert all(f.startswith("a" * 200) for f in features)
    sink.close()


# --- text that is not UTF-8 -------------------------------------------------------------------------


def test_sqlite_keeps_the_row_of_a_call_attributed_with_invalid_text(tmp_path: Path) -> None:
    """SQLite refused the whole insert (UnicodeEncodeError): the call's spend never reached the table."""
    from costwarden.adapters.events import SqliteSink

    with SqliteSink(tmp_path / "events.db") as sink:
        sink.emit(event(feature="caf\udce9", user="u\udc80", rewrites=("to caf\udce9",)))
        sink.emit(event(feature="café"))
        rows = sink.query("SELECT feature, user, cost_usd FROM cost_events ORDER BY id")
    assert rows == [("caf\\udce9", "u\\udc80", 0.01), ("café", None, 0.01)]


def test_otel_attributes_are_always_encodable() -> None:
    """OTLP encodes attributes as protobuf strings (UTF-8); a lone surrogate failed the whole batch."""
    from costwarden.adapters.events import OtelSink

    attrs = OtelSink().attributes(event(feature="caf\udce9", findings=("p/r: caf\udce9",), model="m\udc80"))
    for value in attrs.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                item.encode("utf-8")
    assert attrs["costwarden.feature"] == "caf\\udce9" and attrs["gen_ai.request.model"] == "m\\udc80"


def test_sqlite_a_forked_child_writes_on_its_own_connection(tmp_path: Path) -> None:
    import os

    from costwarden.adapters.events import SqliteSink

    sink = SqliteSink(tmp_path / "events.db")
    inherited = sink._db
    sink.emit(event(feature="parent-before"))
    pid = os.fork()
    if pid == 0:  # the child: gunicorn --preload forks workers after the app made its sink
        try:
            sink.emit(event(feature="child"))
            code = 0 if sink._db is not inherited else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the child wrote, on a connection of its own
    sink.emit(event(feature="parent-after"))
    assert sink._db is inherited  # the parent's connection is untouched
    rows = sink.query('SELECT feature FROM "cost_events" ORDER BY id')
    assert rows == [("parent-before",), ("child",), ("parent-after",)]
    sink.close()
