"""Reading an Amazon Bedrock Messages stream (``InvokeModelWithResponseStream``) as it passes.

``AnthropicBedrock`` streams are AWS event-stream frames (:mod:`costwarden.adapters.eventstream`),
not SSE. Each ``chunk`` event's payload is ``{"bytes": "<base64>", "p": "<padding>"}``, and the
base64 holds one Anthropic stream event (``message_start``, ``content_block_delta``...) as JSON, the
same JSON a first-party stream sends as an SSE event's data. :class:`BedrockStreamTap` decodes the
frames as the application reads them and hands those events to the same observer as an SSE stream
(:class:`~costwarden.enforcers.anthropic_stream.AnthropicStream`), so a Bedrock stream is priced,
and charged when cut, as a first-party one is.

An ``exception`` (or ``error``) frame becomes an ``error`` event, as the SDK's own decoder turns it
into one: a throttled or unavailable stream that ends before ``message_start`` is released, not
billed. Bedrock adds its own count of the call to the last event (``message_stop``):
``amazon-bedrock-invocationMetrics``, read by :func:`invocation_usage`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from costwarden.adapters.eventstream import Frame, FrameDecoder
from costwarden.enforcers.bodytap import BodyTap, EndCallback, EventObserver
from costwarden.errors import AdapterError

INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
_METRIC_COUNTS = (
    ("inputTokenCount", "input_tokens"),
    ("outputTokenCount", "output_tokens"),
    ("cacheReadInputTokenCount", "cache_read_input_tokens"),
    ("cacheWriteInputTokenCount", "cache_creation_input_tokens"),
)


def invocation_usage(metrics: Any) -> dict[str, int]:
    """Bedrock's ``amazon-bedrock-invocationMetrics`` as an Anthropic ``usage`` object: the counts it
    carries (input without the cache, output, cache reads and writes), under Anthropic's names."""
    if not isinstance(metrics, Mapping):
        return {}
    return {
        name: value for key, name in _METRIC_COUNTS
        if isinstance(value := metrics.get(key), int) and not isinstance(value, bool) and value >= 0
    }


def event_of(frame: Frame) -> str | None:
    """The Anthropic stream event (its JSON text) a frame carries; None for frames that carry none.

    Mirrors the ``anthropic`` SDK's ``AWSEventStreamDecoder``: a ``chunk`` event's base64 ``bytes``,
    or an ``error`` event built from an ``exception`` / ``error`` frame."""
    kind = frame.headers.get(":message-type")
    if kind in ("exception", "error"):
        return json.dumps({"type": "error", "error": _error(frame, kind)})
    if frame.headers.get(":event-type") != "chunk":
        return None
    part = json.loads(frame.payload)
    encoded = part.get("bytes") if isinstance(part, Mapping) else None
    if not isinstance(encoded, str):
        raise AdapterError("Bedrock stream chunk has no base64 'bytes'")
    return base64.b64decode(encoded, validate=True).decode("utf-8")


def _error(frame: Frame, kind: str) -> dict[str, Any]:
    if kind == "exception":
        try:
            body = json.loads(frame.payload) if frame.payload else {}
        except ValueError:
            body = {}
        body = body if isinstance(body, Mapping) else {}
        return {"type": frame.headers.get(":exception-type"), "message": body.get("message", body.get("Message"))}
    return {"type": frame.headers.get(":error-code"), "message": frame.headers.get(":error-message")}


class BedrockStreamTap(BodyTap):
    """A :class:`~costwarden.enforcers.bodytap.BodyTap` for an event-stream body: each frame's
    Anthropic event goes to ``observer``; nothing is kept and every byte passes through unchanged.

    A frame that fails its CRC (or is otherwise malformed) makes the body ``undecodable``: the SDK
    cannot read on past it either, and the call is charged the worst case it reserved."""

    def __init__(
        self,
        *,
        content_encoding: str | None,
        on_end: EndCallback,
        observer: EventObserver | None = None,
        blocking: bool = False,
    ) -> None:
        super().__init__(sse=False, content_encoding=content_encoding, observer=observer, on_end=on_end,
                         blocking=blocking)
        self._frames = FrameDecoder()

    def feed(self, chunk: bytes) -> bytes:
        data = self.decode(chunk)
        if not data:
            return chunk
        try:
            frames = self._frames.feed(data)
        except AdapterError:
            self.undecodable = True
            return chunk
        for frame in frames:
            try:
                event = event_of(frame)
            except (ValueError, AdapterError):  # a malformed chunk must not break the application's stream
                self.event_errors += 1
                continue
            if event is not None:
                self.deliver(event)
        return chunk

    def flush(self) -> bytes:
        return b""


__all__ = ["INVOCATION_METRICS", "BedrockStreamTap", "event_of", "invocation_usage"]
