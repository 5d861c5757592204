"""A local HTTP server that speaks enough of the Anthropic and OpenAI APIs for the real SDKs.

Runs on 127.0.0.1 on an ephemeral port, in a daemon thread, one thread per connection::

    with FakeLlmServer() as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="test")

Endpoints: ``POST /v1/messages`` (JSON, or SSE shaped like the recorded streams in
``shared/corpora/llm-requests/anthropic/sse`` when ``stream`` is true), ``POST /v1/messages/batches``,
``POST /v1/chat/completions`` (JSON, or SSE chunks with the usage chunk last when
``stream_options.include_usage``), ``POST /v1/responses`` (JSON, or SSE events in OpenAI's order:
``response.created``, ``response.in_progress``, each output item's ``output_item.added`` ... ``done``
with a message's content-part and text events between, ``response.completed``),
``POST /v1/responses/compact`` (a ``CompactedResponse``: the input's user messages, then a
``compaction`` item; ``input_tokens`` the words of ``instructions`` and of the input's texts, plus
200 with a ``previous_response_id``: ``fake_openai.compaction_input_tokens``), ``POST /v1/embeddings``
(an embedding per input, floats or, with ``encoding_format: base64``, base64 float32 bytes;
``usage.prompt_tokens`` is each token array's length plus each string's whitespace-separated words:
``fake_openai.embedding_tokens``), ``POST /v1/completions`` (legacy ``text_completion`` objects:
``n`` choices a prompt of ``min(max_tokens, 10)`` words, ``max_tokens`` 16 when unset, the prompt
first with ``echo``; ``max(n, best_of)`` completions billed a prompt; ``prompt_tokens`` counted as for
embeddings plus the ``suffix``'s words a prompt; streamed a word a chunk, then the usage chunk when
``stream_options.include_usage``: ``fake_openai.OpenAIHandlers._completions``), the Messages paths
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

The handlers live beside this module, one per API family: ``fake_wire.py`` (the plumbing they
share), ``fake_anthropic.py`` (Messages, Message Batches), ``fake_bedrock.py`` (the Bedrock and
Vertex paths, Bedrock's event-stream frames), ``fake_openai.py`` (Chat Completions, Responses,
Embeddings, legacy Completions), ``fake_openai_images.py`` (GPT Image generations and edits),
``fake_openai_audio.py`` (transcriptions, translations, speech); ``guard_support.py`` holds what the
call-guard tests share (sinks, ledgers, policies, the load of the concurrency proof). Every name
tests and benchmarks import is importable from here.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from fake_anthropic import AnthropicHandlers, _batch_object
from fake_bedrock import BEDROCK_STREAM, _platform_model, bedrock_chunk, eventstream_frame
from fake_openai import OpenAIHandlers
from fake_openai_audio import with_openai_audio
from fake_openai_batches import clear as clear_openai_batches
from fake_openai_batches import with_openai_batches
from fake_openai_images import generate_images, with_openai_image_edits
from guard_support import (
    LOAD_PROMPT,
    CountingLedger,
    ListSink,
    LoadResult,
    budget_policy,
    compile_policies,
    proof_total,
    run_load,
    spent_today,
)


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
        self._server = _Server(("127.0.0.1", 0),
                               with_openai_audio(with_openai_image_edits(with_openai_batches(_Handler))))
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
        """Forget the requests, the queued failures and the OpenAI Batch API's files and batches."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
        clear_openai_batches(self)

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


class _Handler(AnthropicHandlers, OpenAIHandlers):
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
            "/v1/responses/compact": self._compact,
            "/v1/embeddings": self._embeddings,
            "/v1/completions": self._completions,
            "/v1/images/generations": lambda sent: generate_images(self, sent),
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


__all__ = [
    "BEDROCK_STREAM",
    "LOAD_PROMPT",
    "CountingLedger",
    "FakeLlmServer",
    "ListSink",
    "LoadResult",
    "Recorded",
    "bedrock_chunk",
    "budget_policy",
    "compile_policies",
    "eventstream_frame",
    "proof_total",
    "run_load",
    "spent_today",
]
