"""The cloud platforms' paths to Anthropic's Messages: the model in the URL (``AnthropicBedrock``,
``AnthropicVertex``) and Bedrock's streamed answer in AWS event-stream frames."""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from typing import Any

from fake_wire import WireHandler


class BedrockHandlers(WireHandler):
    """Bedrock's ``invoke-with-response-stream`` answer (see the ``fake_llm_server`` docstring)."""

    def _bedrock_stream(self, events: list[tuple[str | None, Any]], usage: dict[str, Any]) -> None:
        """A Messages stream as Bedrock sends it: each event in a ``chunk`` frame, and Bedrock's own
        counts added to ``message_stop``."""
        metrics = {"inputTokenCount": usage["input_tokens"], "outputTokenCount": usage["output_tokens"],
                   "invocationLatency": 812, "firstByteLatency": 305}
        if usage["cache_read_input_tokens"] or usage["cache_creation_input_tokens"]:
            metrics |= {"cacheReadInputTokenCount": usage["cache_read_input_tokens"],
                        "cacheWriteInputTokenCount": usage["cache_creation_input_tokens"]}
        metrics_only = self.headers.get("x-fake-bedrock-usage") == "metrics"
        frames = []
        for _, event in events:
            if event["type"] == "message_stop":
                event = {**event, "amazon-bedrock-invocationMetrics": metrics}
            elif metrics_only and event["type"] == "message_start":
                event = {**event, "message": {k: v for k, v in event["message"].items() if k != "usage"}}
            elif metrics_only and event["type"] == "message_delta":
                event = {k: v for k, v in event.items() if k != "usage"}
            frames.append(bedrock_chunk(event))
        self._bedrock_frames(frames)

    def _bedrock_frames(self, frames: list[bytes]) -> None:
        """Chunked ``application/vnd.amazon.eventstream``; each frame split across two chunks, as the
        network may split it; with ``x-fake-truncate: N`` the connection drops after N frames."""
        truncate = self.headers.get("x-fake-truncate")
        limit = int(truncate) if truncate else None
        pause = int(self.headers.get("x-fake-event-delay-ms") or 0) / 1000
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-amzn-bedrock-content-type", "application/json")
        self.end_headers()
        for index, frame in enumerate(frames):
            if limit is not None and index >= limit:
                self._drop()
                return
            if pause and index:
                time.sleep(pause)
            self._chunk(frame[:7])  # inside the prelude: the reader must wait for the rest
            self._chunk(frame[7:])
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _platform_model(path: str) -> str | None:
    """The model of a Messages call as ``AnthropicBedrock`` (``/model/<id>/invoke``) or
    ``AnthropicVertex`` (``.../publishers/anthropic/models/<id>:rawPredict``, ``:streamRawPredict``
    answered as SSE) send it; None for other paths."""
    from urllib.parse import unquote

    if path.startswith("/model/") and path.endswith("/invoke"):
        return unquote(path[len("/model/"):-len("/invoke")])
    if path.startswith("/model/") and path.endswith(BEDROCK_STREAM):
        return unquote(path[len("/model/"):-len(BEDROCK_STREAM)])
    head, found, model = path.rpartition("/publishers/anthropic/models/")
    if found and model.endswith((":rawPredict", ":streamRawPredict")) and not model.startswith("count-tokens"):
        return unquote(model.rpartition(":")[0])
    return None


BEDROCK_STREAM = "/invoke-with-response-stream"


def eventstream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only, as Bedrock's are): the prelude (total
    length, headers length, CRC32 of those), the headers, the payload, the CRC32 of all before it."""
    head = b"".join(bytes([len(name)]) + name.encode() + b"\x07" + struct.pack("!H", len(value.encode()))
                    + value.encode() for name, value in headers.items())
    prelude = struct.pack("!II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    """A Bedrock ``chunk`` frame carrying one Anthropic stream event: the payload is
    ``{"bytes": "<base64 of the event's JSON>", "p": "<padding>"}`` (Bedrock pads each chunk with
    letters so its length does not give its content away)."""
    data = base64.b64encode(json.dumps(event, separators=(",", ":")).encode()).decode()
    padding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + len(data) % 52]
    payload = json.dumps({"bytes": data, "p": padding}, separators=(",", ":")).encode()
    return eventstream_frame({":event-type": "chunk", ":content-type": "application/json",
                              ":message-type": "event"}, payload)
