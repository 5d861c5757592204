"""Cost events carry the image share of input and output (priced at the image rates) in every sink:
the event's dict (JSONL), SQLite columns (added to a file that predates them) and OpenTelemetry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters.events import CostEvent, JsonlSink, SqliteSink
from costwarden.adapters.events.jsonl import read_events

START = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def event(**changes: Any) -> CostEvent:
    values: dict[str, Any] = {
        "provider": "openai", "api": "images", "model_requested": "gpt-image-1.5", "model": "gpt-image-1.5",
        "outcome": "ok", "verdict": "allow", "started_at": START, "finished_at": START + timedelta(seconds=9),
        "input_tokens": 50, "output_tokens": 4200, "cost_usd": 0.134, "charged": True, "usage_source": "response",
    }
    values.update(changes)
    return CostEvent(**values)


def test_jsonl_events_carry_the_image_share(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(event(input_image_tokens=40, output_image_tokens=4160))
        sink.emit(event(api="chat.completions"))
    imaged, plain = read_events(path)
    assert (imaged["input_image_tokens"], imaged["output_image_tokens"]) == (40, 4160)
    assert (plain["input_image_tokens"], plain["output_image_tokens"]) == (0, 0)


def test_sqlite_rows_carry_the_image_share_and_an_older_file_gains_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SqliteSink(path) as sink:
        sink.emit(event())
        for column in ("input_image_tokens", "output_image_tokens"):
            sink.query(f"ALTER TABLE cost_events DROP COLUMN {column}")
    with SqliteSink(path) as sink:
        sink.emit(event(input_image_tokens=40, output_image_tokens=4160))
        rows = sink.query("SELECT input_image_tokens, output_image_tokens FROM cost_events ORDER BY id")
    assert rows == [(0, 0), (40, 4160)]


def test_otel_spans_carry_the_image_share_when_there_was_one() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costwarden.adapters.events import OtelSink

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OtelSink(provider.get_tracer("test"))
    sink.emit(event(input_image_tokens=40, output_image_tokens=4160))
    sink.emit(event())
    provider.shutdown()
    imaged, plain = exporter.get_finished_spans()
    assert imaged.attributes["costwarden.usage.input_image_tokens"] == 40
    assert imaged.attributes["costwarden.usage.output_image_tokens"] == 4160
    assert "costwarden.usage.output_image_tokens" not in plain.attributes
