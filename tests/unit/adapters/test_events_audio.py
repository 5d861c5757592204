"""Cost events carry the units the Audio API bills besides tokens — seconds of audio (``whisper-1``)
and characters of text (``tts-1``) — in every sink: the event's dict (JSONL), SQLite columns (added to
a file that predates them) and OpenTelemetry, whose operation name is the conventions' own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters.events import CostEvent, JsonlSink, SqliteSink
from costwarden.adapters.events.jsonl import read_events

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def event(**changes: Any) -> CostEvent:
    values: dict[str, Any] = {
        "provider": "openai", "api": "audio", "model_requested": "whisper-1", "model": "whisper-1",
        "outcome": "ok", "verdict": "allow", "started_at": START, "finished_at": START + timedelta(seconds=3),
        "audio_seconds": 13, "cost_usd": 0.0013, "charged": True, "usage_source": "response",
    }
    values.update(changes)
    return CostEvent(**values)


def test_jsonl_events_carry_seconds_and_characters(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(event())
        sink.emit(event(model="tts-1", audio_seconds=0, input_characters=16))
    whisper, speech = read_events(path)
    assert (whisper["audio_seconds"], whisper["input_characters"]) == (13, 0)
    assert (speech["audio_seconds"], speech["input_characters"]) == (0, 16)


def test_sqlite_rows_carry_seconds_and_characters_and_an_older_file_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SqliteSink(path) as sink:
        sink.emit(event(audio_seconds=0))
        for column in ("audio_seconds", "input_characters"):
            sink.query(f"ALTER TABLE cost_events DROP COLUMN {column}")
    with SqliteSink(path) as sink:
        sink.emit(event())
        sink.emit(event(model="tts-1", audio_seconds=0, input_characters=16))
        rows = sink.query("SELECT audio_seconds, input_characters FROM cost_events ORDER BY id")
    assert rows == [(0, 0), (13, 0), (0, 16)]


@pytest.mark.parametrize(("api", "operation"), [
    ("audio", "generate_content"), ("images", "generate_content"), ("completions", "text_completion"),
    ("embeddings", "embeddings"), ("chat.completions", "chat"),
])
def test_otel_spans_carry_the_units_and_the_conventions_operation_name(api: str, operation: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costwarden.adapters.events import OtelSink

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OtelSink(provider.get_tracer("test"))
    sink.emit(event(api=api))
    sink.emit(event(api=api, audio_seconds=0, input_characters=16))
    provider.shutdown()
    seconds, characters = exporter.get_finished_spans()
    assert seconds.attributes["gen_ai.operation.name"] == operation
    assert seconds.name == f"{operation} whisper-1"
    assert seconds.attributes["costwarden.usage.audio_seconds"] == 13
    assert "costwarden.usage.input_characters" not in seconds.attributes
    assert characters.attributes["costwarden.usage.input_characters"] == 16
    assert "costwarden.usage.audio_seconds" not in characters.attributes
