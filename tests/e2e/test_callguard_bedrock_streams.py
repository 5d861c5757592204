"""Amazon Bedrock streams under the call-guard: ``AnthropicBedrock`` (sync and async, the real
``anthropic`` SDK, which reads the stream with botocore) against the fake API's
``/model/<id>/invoke-with-response-stream``, which answers AWS event-stream frames shaped as
Bedrock's. The guard decodes the frames itself (``costwarden.adapters.eventstream``): its decoder
is checked here against botocore's on the same bytes."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import struct
import subprocess
import sys
import zlib
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

import botocore.eventstream as eventstream_botocore  # noqa: E402  (a dev dependency: the SDK reads Bedrock streams)
import httpx2  # noqa: E402
from fake_llm_server import (  # noqa: E402
    BEDROCK_STREAM,
    CountingLedger,
    FakeLlmServer,
    ListSink,
    bedrock_chunk,
    eventstream_frame,
)
from genai_prices import Usage, calc_price  # noqa: E402

from costwarden.adapters.eventstream import Frame, FrameDecoder  # noqa: E402
from costwarden.enforcers.anthropic_stream import CHARS_PER_TOKEN, AnthropicStream  # noqa: E402
from costwarden.enforcers.bedrock_stream import BedrockStreamTap  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.errors import AdapterError  # noqa: E402

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
HI = [{"role": "user", "content": "Hello there"}]
SLOW = {"x-fake-event-delay-ms": "30"}  # one frame per read: the guard has seen exactly what the app read


def bedrock_price(input_tokens: int, output_tokens: int, cache_read_tokens: int = 0) -> float:
    """What genai-prices itself charges under provider ``bedrock`` (its input includes cache reads)."""
    usage = Usage(input_tokens=input_tokens + cache_read_tokens, cache_read_tokens=cache_read_tokens,
                  output_tokens=output_tokens)
    return float(calc_price(usage, model_ref=MODEL, provider_id="bedrock").total_price)


def bedrock(server: FakeLlmServer, guard: CallGuard) -> Any:
    return anthropic.AnthropicBedrock(base_url=server.url, api_key="test", aws_region="us-east-1",
                                      middleware=[guard], max_retries=0)


def async_bedrock(server: FakeLlmServer, guard: CallGuard) -> Any:
    return anthropic.AsyncAnthropicBedrock(base_url=server.url, api_key="test", aws_region="us-east-1",
                                           middleware=[guard], max_retries=0)


def settled_once(ledger: CountingLedger, cost: float) -> None:
    """One hold, settled at ``cost`` (never released, never left to lapse)."""
    assert [op for op, _, _ in ledger.calls] == ["reserve", "settle"]
    assert ledger.calls[1][2] == pytest.approx(cost)


# --- the frame decoder against botocore's ---------------------------------------------------------


def typed_frame(payload: bytes) -> bytes:
    """A frame with one header of each of the format's ten value types."""
    values = [
        (0, b""), (1, b""), (2, struct.pack("!b", -7)), (3, struct.pack("!h", -300)),
        (4, struct.pack("!i", 70_000)), (5, struct.pack("!q", -(2**40))), (6, struct.pack("!H", 3) + b"\x00\xffz"),
        (7, struct.pack("!H", 5) + "héllo".encode()[:5]), (8, struct.pack("!q", 1_764_500_000_000)),
        (9, bytes(range(16))),
    ]
    head = b"".join(bytes([len(f"h{t}")]) + f"h{t}".encode() + bytes([t]) + v for t, v in values)
    prelude = struct.pack("!II", 16 + len(head) + len(payload), len(head))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


def botocore_frames(data: bytes, cuts: list[int]) -> list[Frame]:
    buffer = eventstream_botocore.EventStreamBuffer()
    frames = []
    for start, end in itertools.pairwise([0, *cuts, len(data)]):
        buffer.add_data(data[start:end])
        frames += [Frame(message.headers, message.payload) for message in buffer]
    return frames


def our_frames(data: bytes, cuts: list[int]) -> list[Frame]:
    decoder = FrameDecoder()
    frames = []
    for start, end in itertools.pairwise([0, *cuts, len(data)]):
        frames += decoder.feed(data[start:end])
    assert decoder.pending == 0
    return frames


def test_the_decoder_reads_every_frame_as_botocore_does_however_the_bytes_are_split() -> None:
    events = [{"type": "message_start", "message": {"usage": {"input_tokens": 9}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo ✓"}},
              {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9}}]
    data = b"".join([*map(bedrock_chunk, events), typed_frame(b"{}"), typed_frame(b""),
                     eventstream_frame({":message-type": "exception", ":exception-type": "throttlingException"},
                                       b'{"message":"slow down"}')])
    rng = random.Random(7)
    splits = [[], list(range(1, len(data))), *(sorted(rng.sample(range(1, len(data)), 9)) for _ in range(20))]
    expected = botocore_frames(data, [])
    assert len(expected) == 6 and expected[3].headers["h9"] == bytes(range(16))
    for cuts in splits:
        assert our_frames(data, cuts) == botocore_frames(data, cuts) == expected


@pytest.mark.parametrize("where", ["prelude", "headers", "payload", "message crc"])
def test_a_corrupt_frame_is_refused_as_botocore_refuses_it(where: str) -> None:
    frame = bytearray(bedrock_chunk({"type": "ping"}))
    frame[{"prelude": 2, "headers": 14, "payload": len(frame) - 10, "message crc": len(frame) - 1}[where]] ^= 0x20
    with pytest.raises(eventstream_botocore.ChecksumMismatch):
        botocore_frames(bytes(frame), [])
    with pytest.raises(AdapterError, match="CRC"):
        FrameDecoder().feed(bytes(frame))


def test_a_frame_longer_than_botocores_limit_is_refused_before_it_is_buffered() -> None:
    prelude = struct.pack("!II", 30 * 1024 * 1024, 0)
    with pytest.raises(AdapterError, match="payload"):
        FrameDecoder().feed(prelude + struct.pack("!I", zlib.crc32(prelude)))


def test_the_guard_reads_bedrock_streams_without_botocore() -> None:
    """Only the SDK's Bedrock client needs botocore; the guard's decoder is its own."""
    code = f"""
import sys
sys.modules["botocore"] = None  # any import of it fails
from costwarden.enforcers import anthropic_guard
from costwarden.enforcers.anthropic_stream import AnthropicStream
from costwarden.enforcers.bedrock_stream import BedrockStreamTap
observer = AnthropicStream()
tap = BedrockStreamTap(content_encoding=None, observer=observer, on_end=lambda *a: None)
tap.feed({bedrock_chunk({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}})!r})
print(observer.usage().input_tokens)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, "3"), out.stderr


def test_a_corrupt_stream_is_undecodable_and_the_events_before_it_were_read() -> None:
    """The tap stops at a bad frame (the SDK cannot read past it either); the call is then charged
    the worst case it reserved (``stream_end``), never priced from half-read usage."""
    observer = AnthropicStream()
    ended: list[bool] = []
    tap = BedrockStreamTap(content_encoding=None, observer=observer,
                           on_end=lambda tap, complete, error: ended.append(complete))
    good = bedrock_chunk({"type": "message_start", "message": {"model": MODEL, "usage": {"input_tokens": 5}}})
    bad = bytearray(bedrock_chunk({"type": "ping"}))
    bad[-1] ^= 1
    assert tap.feed(good) == good and tap.feed(bytes(bad)) == bytes(bad)  # passed through unchanged
    tap.end(True)
    assert observer.started and observer.model == MODEL and tap.undecodable and ended == [True]


# --- full streams: priced from their usage --------------------------------------------------------


def test_a_bedrock_stream_is_priced_from_its_usage_not_its_reservation(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    """Before, the guard could not read event-stream framing and charged the worst case it reserved."""
    with bedrock(server, guard) as client, attribution(user="u-bedrock-stream"):
        texts = [event.delta.text for event in client.messages.create(model=MODEL, max_tokens=2_000, messages=HI,
                                                                       stream=True)
                 if event.type == "content_block_delta"]
    assert server.posts()[-1].path == f"/model/{MODEL}{BEDROCK_STREAM}"
    assert "".join(texts) == " ".join(["word"] * 10)
    (event,) = sink.events
    assert (event.provider, event.outcome, event.usage_source, event.stream) == ("bedrock", "ok", "stream", True)
    assert (event.input_tokens, event.output_tokens, event.model_served) == (42, 10, MODEL)
    assert event.cost_usd == pytest.approx(bedrock_price(42, 10))
    assert event.estimated_cost_usd is not None and event.cost_usd < event.estimated_cost_usd / 10
    settled_once(ledger, event.cost_usd)


def test_the_messages_stream_helper_on_bedrock_settles_the_genai_prices_cost_with_cache_reads(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 30, "cache_read_input_tokens": 2_000, "output_tokens": 25}
    with bedrock(server, guard) as client, attribution(user="u-bedrock-helper"), \
            client.messages.stream(model=MODEL, max_tokens=500, messages=HI) as stream:
        message = stream.get_final_message()
    assert message.usage.output_tokens == 25
    (event,) = sink.events
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (30, 2_000, 25)
    assert event.cost_usd == pytest.approx(bedrock_price(30, 25, cache_read_tokens=2_000))
    settled_once(ledger, event.cost_usd)


def test_an_async_bedrock_stream_helper_is_priced_from_its_usage(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    async def main() -> str:
        async with async_bedrock(server, guard) as client:
            with attribution(user="u-bedrock-async"):
                async with client.messages.stream(model=MODEL, max_tokens=300, messages=HI) as stream:
                    return await stream.get_final_text()

    assert asyncio.run(main()) == " ".join(["word"] * 10)
    (event,) = sink.events
    assert (event.provider, event.outcome, event.output_tokens) == ("bedrock", "ok", 10)
    assert event.cost_usd == pytest.approx(bedrock_price(42, 10))
    settled_once(ledger, event.cost_usd)


def test_a_bedrock_stream_whose_events_carry_no_usage_is_priced_from_its_invocation_metrics(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    """Bedrock's own ``amazon-bedrock-invocationMetrics`` on ``message_stop`` count the call."""
    server.usage = {"input_tokens": 120, "cache_read_input_tokens": 900, "output_tokens": 33}
    with bedrock(server, guard) as client, attribution(user="u-bedrock-metrics"):
        events = list(client.messages.create(model=MODEL, max_tokens=500, messages=HI, stream=True,
                                             extra_headers={"x-fake-bedrock-usage": "metrics"}))
    assert events[0].message.usage is None  # nothing but the metrics count the call
    (event,) = sink.events
    assert (event.outcome, event.usage_source) == ("ok", "stream")
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (120, 900, 33)
    assert event.cost_usd == pytest.approx(bedrock_price(120, 33, cache_read_tokens=900))
    settled_once(ledger, event.cost_usd)


# --- cut streams: charged what they showed, as an SSE stream is -----------------------------------


def test_a_bedrock_stream_dropped_by_the_server_is_charged_what_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 300, "output_tokens": 40}
    shown = ""
    with bedrock(server, guard) as client, attribution(user="u-bedrock-cut"), \
            pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        for event in client.messages.create(model=MODEL, max_tokens=2_000, messages=HI, stream=True,
                                            extra_headers={"x-fake-truncate": "8"}):  # start, block, ping, 5 deltas
            if event.type == "content_block_delta":
                shown += event.delta.text
    assert shown == "word word word word word"
    (event,) = sink.events
    shown_tokens = math.ceil(len(shown) / CHARS_PER_TOKEN)
    assert (event.outcome, event.usage_source) == ("partial", "stream")
    assert (event.input_tokens, event.output_tokens) == (300, shown_tokens)
    assert "stream ended early" in (event.error or "")
    assert event.cost_usd == pytest.approx(bedrock_price(300, shown_tokens))
    settled_once(ledger, event.cost_usd)


def test_an_async_bedrock_stream_abandoned_early_is_charged_what_it_showed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    server.usage = {"input_tokens": 300, "output_tokens": 40}

    async def main() -> str:
        async with async_bedrock(server, guard) as client:
            with attribution(user="u-bedrock-abandon"):
                async with client.messages.stream(model=MODEL, max_tokens=2_000, messages=HI,
                                                  extra_headers=SLOW) as stream:
                    shown = ""
                    async for event in stream:
                        if event.type == "content_block_delta":
                            shown += event.delta.text
                            if len(shown) > 12:
                                return shown
        raise AssertionError("the stream ended before the test stopped reading")

    shown = asyncio.run(main())
    (event,) = sink.events
    assert event.outcome == "partial" and event.input_tokens == 300
    assert event.output_tokens == math.ceil(len(shown) / CHARS_PER_TOKEN)
    assert event.cost_usd == pytest.approx(bedrock_price(300, event.output_tokens))
    settled_once(ledger, event.cost_usd)


@pytest.mark.parametrize("cut_after", [0, 5])
def test_a_bedrock_thinking_stream_cut_before_its_usage_is_charged_max_tokens(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, cut_after: int
) -> None:
    """Extended thinking is billed in full and streamed as a summary, on Bedrock as on Anthropic."""
    with bedrock(server, guard) as client, attribution(user="u-bedrock-think"), \
            pytest.raises(httpx2.RemoteProtocolError):
        for _ in client.messages.create(model=MODEL, max_tokens=1_500, messages=HI, stream=True,
                                        thinking={"type": "enabled", "budget_tokens": 1_024},
                                        extra_headers={"x-fake-truncate": str(cut_after)}):
            pass
    (event,) = sink.events
    assert (event.provider, event.outcome, event.output_tokens) == ("bedrock", "partial", 1_500)
    assert "charged max_tokens (1500)" in (event.error or "")
    assert event.cost_usd >= bedrock_price(0, 1_500)


def test_a_bedrock_stream_throttled_as_it_starts_is_released_not_billed(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    """An exception frame before any chunk is what an error status is: nothing was billed."""
    with bedrock(server, guard) as client, attribution(user="u-bedrock-throttle"), \
            pytest.raises(anthropic.APIStatusError, match="throttlingException"):
        list(client.messages.create(model=MODEL, max_tokens=500, messages=HI, stream=True,
                                    extra_headers={"x-fake-stream-error": "throttlingException"}))
    (event,) = sink.events
    assert (event.outcome, event.cost_usd, event.charged) == ("error", 0.0, False)
    assert "throttlingException" in (event.error or "")
    assert [op for op, _, _ in ledger.calls] == ["reserve", "release"]


def test_the_events_usage_wins_over_the_metrics_where_both_count() -> None:
    """The events carry the cache-write TTL split (1h writes cost more) that the metrics lack."""
    observer = AnthropicStream()
    for event in (
        {"type": "message_start", "message": {"model": MODEL, "usage": {
            "input_tokens": 10, "cache_creation_input_tokens": 100, "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100}}}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 10, "outputTokenCount": 5, "cacheWriteInputTokenCount": 100,
            "cacheReadInputTokenCount": 7}},
    ):
        observer.on_event(json.dumps(event))
    usage = observer.usage()
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.cache_write_1h_tokens, usage.cache_write_5m_tokens) \
        == (10, 5, 100, 0)
    assert usage.cache_read_tokens == 7  # a count only the metrics gave
