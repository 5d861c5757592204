"""The fake Anthropic API: Messages (JSON or SSE, also through Bedrock and Vertex) and Message Batches."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fake_bedrock import BEDROCK_STREAM, BedrockHandlers, eventstream_frame
from fake_wire import _pieces, _text


class AnthropicHandlers(BedrockHandlers):
    """``POST /v1/messages`` and ``/v1/messages/batches`` (see the ``fake_llm_server`` docstring)."""

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
