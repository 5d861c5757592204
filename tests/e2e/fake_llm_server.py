"""A local HTTP server that speaks enough of the Anthropic and OpenAI APIs for the real SDKs.

Runs on 127.0.0.1 on an ephemeral port, in a daemon thread, one thread per connection::

    with FakeLlmServer() as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="test")

Endpoints: ``POST /v1/messages`` (JSON, or SSE shaped like the recorded streams in
``shared/corpora/llm-requests/anthropic/sse`` when ``stream`` is true), ``POST /v1/messages/batches``,
``POST /v1/chat/completions`` (JSON, or SSE chunks with the usage chunk last when
``stream_options.include_usage``), ``POST /v1/responses`` (JSON, or SSE events in OpenAI's order:
``response.created``, ``response.in_progress``, each output item's ``output_item.added`` ... ``done``
with a message's content-part and text events between, ``response.completed``), the Messages paths
of ``AnthropicBedrock`` (``/model/<id>/invoke``, JSON, and ``/model/<id>/invoke-with-response-stream``:
the Messages events in AWS event-stream frames as Bedrock sends them, see :func:`bedrock_chunk`, the
last with ``amazon-bedrock-invocationMetrics``; ``x-fake-stream-error`` there answers an exception
frame of that type, and ``x-fake-bedrock-usage: metrics`` leaves ``usage`` out of the events, so
that only the metrics count the call) and ``AnthropicVertex`` (``...:rawPredict`` /
``:streamRawPredict``), and for batches
created here ``GET /v1/messages/batches/<id>`` (ended at once, unless created with the header
``x-fake-batch-status: in_progress``: then processing, without results, until its id leaves
``processing``) and ``GET .../results`` (JSON Lines,
sent in small chunks so lines arrive split; header ``x-fake-batch-results`` at creation maps a
``custom_id`` to ``errored``, ``canceled`` or ``expired``, and ``x-fake-usage`` / ``x-fake-model``
apply to every succeeded result).

Every request is recorded (``server.requests``) so a test can assert that none was made. Control:

* ``server.fail_next(529, 500)`` — the next requests answer these statuses (with ``retry-after-ms: 1``);
* request headers ``x-fake-usage`` (JSON usage counts to return), ``x-fake-model`` (served model),
  ``x-fake-truncate`` (N: a stream stops after N events and the connection is shut without ending
  the chunked body, as when a server dies: the client raises, compressed or not),
  ``x-fake-delay-ms`` (sleep before answering), ``x-fake-event-delay-ms`` (sleep between stream
  events), ``x-fake-store`` (a plain Responses answer is also kept for
  ``GET /v1/responses/<id>``, with ``background: false``; a streamed one in background mode always
  is, and ``GET /v1/responses/<id>?stream=true`` sends a kept response's events again), ``x-fake-content-encoding`` (the
  Content-Encoding of a stream or a results download, sent as given; the body is gzip-compressed
  when the value names gzip), ``x-fake-stream-error`` (an error type: a Messages stream answers 200
  with only an ``error`` event of that type, as Anthropic does when overloaded as a stream starts),
  ``x-fake-service-tier`` / ``x-fake-speed`` (the tier / speed that served the call: OpenAI's
  top-level ``service_tier`` on a response, every chunk and every Responses object; Anthropic's
  ``usage.service_tier`` / ``usage.speed``, in ``message_start`` when streamed), ``x-fake-web-searches``
  (N: a Responses answer's output starts with N ``web_search_call`` items), ``x-fake-reasoning-text``
  (the ``reasoning_tokens`` shown as words, 16 a delta, before the answer: on Chat Completions in the
  delta / message fields it names, comma-separated, ``reasoning_content`` as DeepSeek and
  ``reasoning`` as vLLM and OpenRouter send them; on Responses in the reasoning item's
  ``reasoning_text`` content (``response.reasoning_text.delta`` events, as open models' servers
  send it) or, with ``summary``, its summary (``response.reasoning_summary_text.delta``));
* ``server.usage`` — the default usage (``input_tokens`` etc.); output defaults to
  ``min(max_tokens, 10)``. OpenAI answers take ``reasoning_tokens``: the hidden share of the output
  tokens (``*_tokens_details.reasoning_tokens``; the text shows only the rest, and a Responses
  answer's output starts with a ``reasoning`` item). Messages pass ``server_tool_use`` through
  (in ``message_start`` and ``message_delta`` of a stream, as running totals); Chat Completions
  take ``audio_tokens`` and ``output_audio_tokens`` as the audio share of the prompt and completion.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from costwarden.enforcers.settler import flush_all

REASONING_WORDS = 16  # words of reasoning text a delta carries (``x-fake-reasoning-text``)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeLlmServer:
    """See the module docstring."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.usage: dict[str, int] = {"input_tokens": 42}
        self.batches: dict[str, list[dict[str, Any]]] = {}
        self.processing: set[str] = set()  # batches created with ``x-fake-batch-status: in_progress``
        self.responses: dict[str, dict[str, Any]] = {}  # background Responses, completed, by id
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLlmServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeLlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self._failures.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def posts(self, suffix: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith(suffix)]

    def _record(self, recorded: Recorded) -> int | None:
        with self._lock:
            self.requests.append(recorded)
            return self._failures.popleft() if self._failures else None


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the proof opens 160 connections at once; the default backlog is 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients closing streams early reset connections; that is what the tests do


class _Brotli:
    """A brotli compressor with the two calls of zlib's the handler makes (``flush(Z_SYNC_FLUSH)``
    ends a frame's block; ``flush()`` ends the stream)."""

    def __init__(self) -> None:
        import brotli

        self._c = brotli.Compressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.process(data))

    def flush(self, mode: int | None = None) -> bytes:
        return bytes(self._c.flush() if mode is not None else self._c.finish())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        fake: FakeLlmServer = self.server.fake
        fake._record(Recorded("GET", self.path, dict(self.headers), None))
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["v1", "responses"] and len(parts) == 3 and parts[2] in fake.responses:
            done = fake.responses[parts[2]]
            running = parts[2] in fake.processing
            if "stream=true" in self.path.partition("?")[2].split("&") and not running:
                self._resumed_stream(done)  # ``responses.retrieve(id, stream=True)``: the events again
                return
            self._json(200, {**done, "status": "in_progress", "output": [], "usage": None} if running else done)
            return
        results = fake.batches.get(parts[3]) if parts[:3] == ["v1", "messages", "batches"] and len(parts) > 3 else None
        if results is None:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
        elif len(parts) == 4:
            self._json(200, _batch_object(parts[3], results, fake.url, ended=parts[3] not in fake.processing))
        elif parts[4:] == ["results"] and parts[3] not in fake.processing:
            self._jsonl(results)
        else:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

    def do_POST(self) -> None:
        fake: FakeLlmServer = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        failure = fake._record(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        delay = self.headers.get("x-fake-delay-ms")
        if delay:
            time.sleep(int(delay) / 1000)
        if failure is not None:
            self._json(failure, {"type": "error", "error": {"type": "overloaded_error", "message": "try again"}},
                       {"retry-after-ms": "1"})
            return
        path = self.path.split("?")[0]
        routes = {
            "/v1/messages": self._messages,
            "/v1/messages/batches": self._batches,
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
        }
        handler = routes.get(path)
        platform_model = _platform_model(path)
        if platform_model is not None and isinstance(body, dict):  # Bedrock / Vertex: the model is in the URL
            body = {**body, "model": body.get("model", platform_model)}
            if path.endswith(BEDROCK_STREAM):  # the SDK moves ``stream`` into the path
                body["stream"] = True
            handler = self._messages
        if handler is None or not isinstance(body, dict):
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
            return
        handler(body)

    # --- helpers --------------------------------------------------------------------------------

    def _usage(self, body: dict[str, Any], cap_key: str) -> dict[str, int]:
        usage = dict(self.server.fake.usage)
        extra = self.headers.get("x-fake-usage")
        if extra:
            usage.update(json.loads(extra))
        cap = body.get(cap_key) or body.get("max_completion_tokens") or body.get("max_output_tokens") or 10
        usage.setdefault("output_tokens", min(int(cap), 10))
        return usage

    def _model(self, body: dict[str, Any]) -> str:
        return self.headers.get("x-fake-model") or str(body.get("model"))

    def _served(self, *names: str) -> dict[str, str]:
        """The served ``service_tier`` / ``speed`` the request's ``x-fake-*`` headers ask to report."""
        headers = {"service_tier": "x-fake-service-tier", "speed": "x-fake-speed"}
        return {n: v for n in names if (v := self.headers.get(headers[n]))}

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        """Chunked SSE; with ``x-fake-truncate: N`` the connection drops after N events."""
        truncate = self.headers.get("x-fake-truncate")
        limit = int(truncate) if truncate else None
        pause = int(self.headers.get("x-fake-event-delay-ms") or 0) / 1000
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        gzipped = self._content_encoding()
        self.end_headers()
        for index, (name, data) in enumerate(events):
            if limit is not None and index >= limit:
                self._drop()
                return
            if pause and index:
                time.sleep(pause)
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            raw = frame.encode()
            self._chunk(gzipped.compress(raw) + gzipped.flush(zlib.Z_SYNC_FLUSH) if gzipped else raw)
        if gzipped:
            self._chunk(gzipped.flush())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Drop the connection as a server that dies mid-stream does: the chunked body (and a
        compressed stream) never ends, and the socket is shut both ways at once, so the client's
        next read meets the end of the connection in the middle of the body, never a clean end."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client went first
            self.connection.shutdown(socket.SHUT_RDWR)

    def _jsonl(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        self.send_response(200)
        self.send_header("content-type", "application/binary")
        self.send_header("transfer-encoding", "chunked")
        gzipped = self._content_encoding()
        if gzipped:
            data = gzipped.compress(data) + gzipped.flush()
        self.end_headers()
        for start in range(0, len(data), 97):  # lines split across chunks, as a real download may be
            self._chunk(data[start : start + 97])
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _content_encoding(self) -> Any:
        """Send ``x-fake-content-encoding`` as the Content-Encoding; a compressor (zlib's interface)
        when it names gzip or br."""
        value = self.headers.get("x-fake-content-encoding")
        if value is None:
            return None
        self.send_header("content-encoding", value)
        if "gzip" in value.lower():
            return zlib.compressobj(wbits=31)
        return _Brotli() if value.strip().lower() == "br" else None

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # --- Anthropic ------------------------------------------------------------------------------

    def _messages(self, body: dict[str, Any]) -> None:
        usage = self._usage(body, "max_tokens")
        model = self._model(body)
        full = {
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage["output_tokens"],
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
            **self._served("service_tier", "speed"),
        }
        if "server_tool_use" in usage:  # e.g. {"web_search_requests": 3}, passed through as given
            full["server_tool_use"] = usage["server_tool_use"]
        msg_id = f"msg_{uuid.uuid4().hex[:20]}"
        text = _text(usage["output_tokens"])
        if not body.get("stream"):
            self._json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": full,
            })
            return
        failure = self.headers.get("x-fake-stream-error")
        if failure and self.path.split("?")[0].endswith(BEDROCK_STREAM):
            self._bedrock_frames([eventstream_frame({":exception-type": failure, ":content-type": "application/json",
                                                     ":message-type": "exception"},
                                                    json.dumps({"message": "Try again"}).encode())])
            return
        if failure:
            self._sse([("error", {"type": "error", "error": {"type": failure, "message": "Overloaded"}})])
            return
        start_usage = {**full, "output_tokens": 1}
        events: list[tuple[str | None, Any]] = [
            ("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}}) for piece in _pieces(text)]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": usage["output_tokens"],
                                         **({"server_tool_use": usage["server_tool_use"]}
                                            if "server_tool_use" in usage else {})}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        if self.path.split("?")[0].endswith(BEDROCK_STREAM):
            self._bedrock_stream(events, full)
            return
        self._sse(events)

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

    def _batches(self, body: dict[str, Any]) -> None:
        count = len(body.get("requests") or [])
        batch_id = f"msgbatch_{uuid.uuid4().hex[:20]}"
        outcomes = json.loads(self.headers.get("x-fake-batch-results") or "{}")
        results = []
        for item in body.get("requests") or []:
            params, kind = item.get("params") or {}, outcomes.get(item.get("custom_id"), "succeeded")
            result: dict[str, Any] = {"type": kind}
            if kind == "succeeded":
                usage = self._usage(params, "max_tokens")
                result["message"] = {
                    "id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                    "model": self._model(params), "content": [{"type": "text", "text": _text(usage["output_tokens"])}],
                    "stop_reason": "end_turn", "stop_sequence": None, "usage": {
                        "input_tokens": usage.get("input_tokens", 0), "output_tokens": usage["output_tokens"],
                        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
                        "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
                        **({"server_tool_use": usage["server_tool_use"]} if "server_tool_use" in usage else {})}}
            elif kind == "errored":
                result["error"] = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
            results.append({"custom_id": item.get("custom_id"), "result": result})
        with self.server.fake._lock:
            self.server.fake.batches[batch_id] = results
            if self.headers.get("x-fake-batch-status") == "in_progress":
                self.server.fake.processing.add(batch_id)
        self._json(200, {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": count, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "ended_at": None, "created_at": "2026-11-30T15:00:00Z", "expires_at": "2026-12-01T15:00:00Z",
            "archived_at": None, "cancel_initiated_at": None, "results_url": None,
        })

    # --- OpenAI ---------------------------------------------------------------------------------

    def _openai_usage(self, body: dict[str, Any], responses: bool) -> tuple[dict[str, Any], int]:
        """The usage object to report, and how many of its output tokens are visible text (the rest,
        ``reasoning_tokens``, are the hidden reasoning a reasoning model bills as output)."""
        usage = self._usage(body, "max_tokens")
        cached = usage.get("cached_tokens", 0)
        prompt = usage.get("input_tokens", 0) + cached
        output = usage["output_tokens"]
        reasoning = usage.get("reasoning_tokens", 0)
        visible = max(output - reasoning, 0)
        if responses:
            return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                    "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
                    "total_tokens": prompt + output}, visible
        chat: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                                "prompt_tokens_details": {"cached_tokens": cached}}
        if "audio_tokens" in usage:  # the audio share of the prompt
            chat["prompt_tokens_details"]["audio_tokens"] = usage["audio_tokens"]
        if "output_audio_tokens" in usage or reasoning:  # the audio / reasoning shares of the completion
            chat["completion_tokens_details"] = {"audio_tokens": usage.get("output_audio_tokens", 0),
                                                 "reasoning_tokens": reasoning}
        return chat, visible

    def _chat(self, body: dict[str, Any]) -> None:
        usage, output = self._openai_usage(body, responses=False)
        model = self._model(body)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "created": int(time.time()), "model": model,
                **self._served("service_tier")}
        text = _text(output)
        fields = [f.strip() for f in (self.headers.get("x-fake-reasoning-text") or "").split(",") if f.strip()]
        hidden = usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0)
        reasoning = _text(hidden) if fields and hidden else ""
        if not body.get("stream"):
            self._json(200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text, **dict.fromkeys(fields, reasoning)},
                 "finish_reason": "stop"}], "usage": usage})
            return
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[tuple[str | None, Any]] = [
            (None, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}], **extra})]
        events += [(None, {**chunk, "choices": [{"index": 0, "delta": dict.fromkeys(fields, piece),
                                                 "finish_reason": None}], **extra})
                   for piece in _pieces(reasoning, REASONING_WORDS)]
        events += [(None, {**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                           **extra}) for piece in _pieces(text)]
        events.append((None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra}))
        if with_usage:
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self._sse(events)

    def _responses(self, body: dict[str, Any]) -> None:
        usage, output = self._openai_usage(body, responses=True)
        model = self._model(body)
        text = _text(output)
        resp_id = f"resp_{uuid.uuid4().hex[:20]}"
        base: dict[str, Any] = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model,
                "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
                "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {},
                "temperature": 1.0, "top_p": 1.0, **self._served("service_tier")}
        message = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed",
                   "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
        searches = [{"type": "web_search_call", "id": f"ws_{uuid.uuid4().hex[:12]}", "status": "completed",
                     "action": {"type": "search", "query": "q"}}
                    for _ in range(int(self.headers.get("x-fake-web-searches") or 0))]
        reasoning = ([self._reasoning_item(usage["output_tokens_details"]["reasoning_tokens"])]
                     if usage["output_tokens_details"]["reasoning_tokens"] else [])
        done = {**base, "status": "completed", "output": [*reasoning, *searches, message], "usage": usage}
        if body.get("background") and not body.get("stream"):  # kept for GET /v1/responses/<id>
            self.server.fake.responses[resp_id] = {**done, "background": True}
            self._json(200, {**base, "status": "queued", "output": [], "usage": None, "background": True})
            return
        if self.headers.get("x-fake-store") and not body.get("stream"):  # a stored response, not background:
            self.server.fake.responses[resp_id] = {**done, "background": False}  # also readable with GET
        if not body.get("stream"):
            self._json(200, done)
            return
        if body.get("background"):  # runs on after the connection drops; readable with GET
            self.server.fake.responses[resp_id] = {**done, "background": True}
        self._sse(_response_events(done))

    def _reasoning_item(self, tokens: int) -> dict[str, Any]:
        """A Responses ``reasoning`` item: hidden, or its ``tokens`` shown as ``x-fake-reasoning-text`` asks."""
        item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{uuid.uuid4().hex[:12]}", "summary": []}
        shown = self.headers.get("x-fake-reasoning-text")
        if shown == "summary":
            item["summary"] = [{"type": "summary_text", "text": _text(tokens)}]
        elif shown:
            item["content"] = [{"type": "reasoning_text", "text": _text(tokens)}]
        return item

    def _resumed_stream(self, done: dict[str, Any]) -> None:
        """A stored response's events again, as ``GET /v1/responses/<id>?stream=true`` sends them."""
        self._sse(_response_events(done))


def _response_events(done: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """The events of a streamed Responses call that ends as ``done``, in the order OpenAI sends them
    (``openai.types.responses``; the SDK's ``responses.stream()`` accumulates them and refuses a
    content event for an item it was not told of): ``response.created``, ``response.in_progress``;
    for each output item ``response.output_item.added`` (in progress, empty), its own events (a
    message's ``content_part.added``, ``output_text.delta`` per word, ``output_text.done``,
    ``content_part.done``; a web search's ``in_progress``, ``searching``, ``completed``), then
    ``response.output_item.done`` (the finished item); last ``response.completed``."""
    events: list[tuple[str | None, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    running = {**done, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=running)
    emit("response.in_progress", response=running)
    for index, item in enumerate(done["output"]):
        where = {"output_index": index}
        if item["type"] == "message":
            emit("response.output_item.added", item={**item, "status": "in_progress", "content": []}, **where)
            at = {"item_id": item["id"], **where}
            for part_index, part in enumerate(item["content"]):
                emit("response.content_part.added", part={**part, "text": ""}, content_index=part_index, **at)
                for piece in _pieces(part["text"]):
                    emit("response.output_text.delta", delta=piece, logprobs=[], content_index=part_index, **at)
                emit("response.output_text.done", text=part["text"], logprobs=[], content_index=part_index, **at)
                emit("response.content_part.done", part=part, content_index=part_index, **at)
        elif item["type"] == "web_search_call":
            emit("response.output_item.added", item={**item, "status": "in_progress"}, **where)
            for stage in ("in_progress", "searching", "completed"):
                emit(f"response.web_search_call.{stage}", item_id=item["id"], **where)
        else:  # reasoning: its tokens are billed, its text shown only when the item carries it
            emit("response.output_item.added", item={**item, "summary": [],
                                                      **({"content": []} if "content" in item else {})}, **where)
            _reasoning_events(emit, item, where)
        emit("response.output_item.done", item=item, **where)
    emit("response.completed", response=done)
    return events


def _reasoning_events(emit: Any, item: dict[str, Any], where: dict[str, int]) -> None:
    """A reasoning item's shown text as OpenAI's events carry it: its summary parts
    (``reasoning_summary_part.added``, ``reasoning_summary_text.delta`` ... ``done``,
    ``reasoning_summary_part.done``), its ``reasoning_text`` content parts (``content_part.added``,
    ``reasoning_text.delta`` ... ``done``, ``content_part.done``)."""
    at = {"item_id": item["id"], **where}
    for index, part in enumerate(item["summary"]):
        emit("response.reasoning_summary_part.added", part={**part, "text": ""}, summary_index=index, **at)
        for piece in _pieces(part["text"], REASONING_WORDS):
            emit("response.reasoning_summary_text.delta", delta=piece, summary_index=index, **at)
        emit("response.reasoning_summary_text.done", text=part["text"], summary_index=index, **at)
        emit("response.reasoning_summary_part.done", part=part, summary_index=index, **at)
    for index, part in enumerate(item.get("content") or ()):
        emit("response.content_part.added", part={**part, "text": ""}, content_index=index, **at)
        for piece in _pieces(part["text"], REASONING_WORDS):
            emit("response.reasoning_text.delta", delta=piece, content_index=index, **at)
        emit("response.reasoning_text.done", text=part["text"], content_index=index, **at)
        emit("response.content_part.done", part=part, content_index=index, **at)


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


def _batch_object(batch_id: str, results: list[dict[str, Any]], base_url: str, *, ended: bool = True) -> dict[str, Any]:
    counts = {k: 0 for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    for line in results:
        counts[line["result"]["type"] if ended else "processing"] += 1
    return {
        "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
        "request_counts": counts, "ended_at": "2026-11-30T16:00:00Z" if ended else None,
        "created_at": "2026-11-30T15:00:00Z", "expires_at": "2026-12-01T15:00:00Z", "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
    }


def _text(output_tokens: int) -> str:
    return " ".join(["word"] * max(output_tokens, 1))


def _pieces(text: str, words_per_piece: int = 1) -> list[str]:
    """``text`` in the deltas a stream sends it in: ``words_per_piece`` words each (1: word by word)."""
    words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" ") if text else ())]
    return ["".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)]





# --- what the call-guard tests share --------------------------------------------------------------


class ListSink:
    """Keeps every cost event in memory (thread-safe)."""

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[Any]:
        """The events so far, once every background settlement queued before now has run."""
        flush_all(10)
        return self._events

    def emit(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)

    def close(self) -> None:
        pass


class CountingLedger:
    """Wraps a ledger and counts reserve / settle / release calls per reservation id."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._calls: list[tuple[str, str, Any]] = []

    @property
    def calls(self) -> list[tuple[str, str, Any]]:
        """The operations so far, once every background settlement queued before now has run."""
        flush_all(10)
        return self._calls

    def spent(self, keys: Any, *, now: Any) -> Any:
        return self.inner.spent(keys, now=now)

    def reserve(self, reservation_id: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        self._calls.append(("reserve", reservation_id, tuple(holds)))
        return self.inner.reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, reservation_id: str, cost_usd: float, *, now: Any) -> Any:
        self._calls.append(("settle", reservation_id, cost_usd))
        return self.inner.settle(reservation_id, cost_usd, now=now)

    def release(self, reservation_id: str, *, now: Any) -> None:
        self._calls.append(("release", reservation_id, None))
        self.inner.release(reservation_id, now=now)

    def status(self, prefix: str = "budget:", *, now: Any = None) -> Any:
        return self.inner.status(prefix, now=now)

    def count(self, op: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == op)


def compile_policies(text: str) -> Any:
    """Inline policy YAML compiled with the real genai-prices pricer."""
    from costwarden.adapters.pricing import GenaiPricer
    from costwarden.engine.compile import compile_documents
    from costwarden.engine.loader import load_text

    result = load_text(text, file="inline.yaml")
    return compile_documents(result.documents, pricer=GenaiPricer(), diagnostics=result.diagnostics)


def spent_today(ledger: Any, user: str, policy: str = "user-budget") -> float:
    """What ``user`` has spent today under :func:`budget_policy` ``policy``, once every guard's
    background settlements ran."""
    flush_all(10)
    now = datetime.now(UTC)
    return float(ledger.spent([f"budget:{policy}/cap:user={user}:{now:%Y-%m-%d}"], now=now)[0])


def budget_policy(limit_usd: float, *, name: str = "user-budget", per: str = "user", window: str = "day") -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  subject: llm_call
  enforcement: {{default: deny}}
  onError: deny
  rules:
    - name: cap
      budget: {{per: [{per}], limitUsd: {limit_usd}, window: {window}}}
"""


LOAD_PROMPT = "Summarise the following paragraph in one line. " * 8
"""~100 estimated input tokens: more than the 42 the fake server bills, so a call never costs more
than it reserved and the concurrency proof can hold the total under the limit exactly."""


@dataclass
class LoadResult:
    admitted: int = 0
    denied: int = 0
    failed: int = 0
    ledger_total: float = 0.0
    errors: list[str] = field(default_factory=list)
    """The proof budget's spend as this worker's ledger saw it at its end (the only view of memory://)."""


def run_load(
    server_url: str, ledger_url: str, events_path: str, policy_text: str, threads: int, calls: int, provider: str,
    background: bool = False,
) -> LoadResult:
    """Guarded calls from ``threads`` threads through the real SDK (a worker process of the proof);
    ``background``: the guard settles on its settler thread."""
    from concurrent.futures import ThreadPoolExecutor

    from costwarden.adapters.events.jsonl import JsonlSink
    from costwarden.adapters.ledger import open_ledger
    from costwarden.enforcers.callguard import CallGuard, attribution
    from costwarden.errors import BudgetExceeded

    ledger = open_ledger(ledger_url)
    sink = JsonlSink(events_path)
    guard = CallGuard(compile_policies(policy_text), ledger=ledger, sinks=[sink], settle_in_background=background)
    client = _load_client(provider, server_url, guard)
    result = LoadResult()
    lock = threading.Lock()

    def one() -> None:
        for _ in range(calls):
            try:
                with attribution(user="load", feature="proof"):
                    _load_call(provider, client)
                outcome = "admitted"
            except BudgetExceeded:
                outcome = "denied"
            except Exception as exc:
                outcome = "failed"
                result.errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                setattr(result, outcome, getattr(result, outcome) + 1)

    try:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(one) for _ in range(threads)]:
                future.result()
        if not guard.flush(60):
            result.errors.append("background settlements still queued after 60 s")
        result.ledger_total = proof_total(ledger)
    finally:
        client.close()
        guard.close()
        ledger.close()
    return result


def proof_total(ledger: Any) -> float:
    """Today's spend of user ``load`` under the ``proof-budget`` policy."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return float(ledger.spent([f"budget:proof-budget/cap:user=load:{now:%Y-%m-%d}"], now=now)[0])


def _load_client(provider: str, server_url: str, guard: Any) -> Any:
    if provider == "anthropic":
        import anthropic

        return anthropic.Anthropic(base_url=server_url, api_key="test", middleware=[guard], max_retries=0)
    import openai

    from costwarden.enforcers.openai_guard import openai_http_client

    return openai.OpenAI(base_url=server_url + "/v1", api_key="test", max_retries=0,
                         http_client=openai_http_client(guard))


def _load_call(provider: str, client: Any) -> None:
    messages = [{"role": "user", "content": LOAD_PROMPT}]
    if provider == "anthropic":
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    else:
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=50, messages=messages)


__all__ = [
    "LOAD_PROMPT",
    "CountingLedger",
    "FakeLlmServer",
    "ListSink",
    "LoadResult",
    "Recorded",
    "budget_policy",
    "compile_policies",
    "proof_total",
    "run_load",
]
