"""Reading an Anthropic Messages response for its usage: the SSE events as the application reads
them (``AnthropicStream``), and the settlement when the body ends (``stream_end``). The middleware
in ``anthropic_guard.py`` taps the body; this module reads what the tap sees.

``message_start`` gives input and cache counts and the served model, each
``message_delta.usage.output_tokens`` replaces the previous one (it is a running total). A stream
that ends before its ``message_delta`` is charged its ``message_start`` input plus the output its
text deltas show (~4 characters a token); one that ends before ``message_start`` is charged the
estimated input, unless an ``error`` event ended it (an overloaded API answers so): like an error
status, that is released, not billed.

Amazon Bedrock streams carry the same events in AWS event-stream frames (read by
:mod:`.bedrock_stream`), and add Bedrock's own counts to ``message_stop``
(``amazon-bedrock-invocationMetrics``). Those fill in what the events' usage leaves out (a model or
a gateway that sends events without ``usage``); where both give a count, the events' is kept, as
it carries the cache-write TTL split and server tool use the metrics lack.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from costwarden.adapters import anthropic as adapter
from costwarden.enforcers.attempt import charge_json_body, end_reason
from costwarden.enforcers.bedrock_stream import INVOCATION_METRICS, invocation_usage
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.guarded_call import GuardedCall
from costwarden.engine.pricing import price_context
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

CHARS_PER_TOKEN = 4


def completion(data: Mapping[str, Any]) -> Any:
    return data.get("content")


class AnthropicStream:
    """Reads usage and the served model from a Messages SSE stream as it passes."""

    __slots__ = ("kept", "model", "started", "finished", "output_chars", "refused", "served", "billed")

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.model: str | None = None
        self.started = False
        self.finished = False
        self.output_chars = 0
        self.refused: str | None = None  # the error of an ``error`` event before ``message_start``
        self.served: dict[str, str] = {}  # the speed / service tier ``usage`` reports: the price's context
        self.billed: dict[str, int] = {}  # Bedrock's invocation metrics, as an Anthropic ``usage`` object

    def on_event(self, data: str) -> bool:
        if '"content_block_delta"' in data:
            delta = json.loads(data).get("delta")
            if isinstance(delta, Mapping):
                for key in ("text", "partial_json", "thinking"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        self.output_chars += len(value)
        elif '"message_' in data or '"error"' in data:
            event = json.loads(data)
            kind = event.get("type") if isinstance(event, Mapping) else None
            if kind == "message_start":
                self.started = True
                message = event.get("message")
                if isinstance(message, Mapping) and isinstance(message.get("model"), str):
                    self.model = message["model"]
                self.served.update(price_context(message))  # its ``usage`` tells the speed and tier
            elif kind in ("message_delta", "message_stop"):
                self.finished = True
                self.served.update(price_context(event))  # a ``message_delta``'s ``usage`` may too
                if kind == "message_stop":
                    self.billed = invocation_usage(event.get(INVOCATION_METRICS))
            elif kind == "error" and not self.started and self.refused is None:
                error = event.get("error")
                error = error if isinstance(error, Mapping) else {}
                self.refused = f"{error.get('type') or 'error'}: {error.get('message')}"
            if kind in ("message_start", "message_delta", "error"):
                self.kept.append(data)
        return True

    def output_estimate(self) -> int:
        return -(-self.output_chars // CHARS_PER_TOKEN)

    def usage(self) -> TokenUsage | None:
        """Usage from the events seen (and Bedrock's metrics); None before ``message_start``, unless
        the metrics came."""
        try:
            if not self.started:
                return adapter.usage_from_response(self.billed) if self.billed else None
            # the metrics go first, as a usage object the events' own counts then replace
            metrics = [json.dumps({"type": "message_delta", "usage": self.billed})] if self.billed else []
            usage = adapter.usage_from_sse([*metrics, *self.kept])
        except AdapterError:
            return None
        if not self.finished and self.output_estimate() > usage.output_tokens:
            usage = dataclasses.replace(usage, output_tokens=self.output_estimate())  # keeps searches, audio
        return usage


def stream_end(
    call: GuardedCall, observer: AnthropicStream | None, tap: BodyTap, complete: bool, error: BaseException | None
) -> None:
    if tap.undecodable or tap.truncated:
        call.charge_estimate(error="response body could not be read for usage")
        return
    if observer is None:  # a JSON body read through a streaming response
        if complete:
            charge_json_body(call, bytes(tap.body), adapter.usage_from_response, completion)
        else:
            call.charge_estimate(error="response body closed before its end")
        return
    usage = observer.usage()
    reason = end_reason(complete, error)
    if usage is None and observer.refused is not None:  # refused as it started, as a 529 status is: not billed
        call.failed(AdapterError(f"stream failed before message_start ({observer.refused})"), sent=False, final=True)
        return
    if usage is None:
        usage, note = _with_hidden_thinking(call, call.estimated_usage(observer.output_estimate()))
        call.complete(usage, source="estimate", outcome="partial",
                      error=f"stream ended before message_start ({reason}){note}")
        return
    if observer.finished:
        call.complete(usage, served_model=observer.model, source="stream", response=observer.served)
        return
    usage, note = _with_hidden_thinking(call, usage)
    call.complete(usage, served_model=observer.model, source="stream", outcome="partial",
                  error=f"stream ended early ({reason}){note}", response=observer.served)


def _with_hidden_thinking(call: GuardedCall, usage: TokenUsage) -> tuple[TokenUsage, str]:
    """A cut stream's usage, and a note. With extended thinking on, the output it showed is not
    what it was billed: Claude 4 models stream a summary of their thinking but bill all of it, and
    a stream cut before its ``message_delta`` never says how much. The only bound is ``max_tokens``
    (the reservation's): charged that, as the OpenAI edge charges a cut reasoning stream."""
    thinking = call.body.get("thinking")
    limit = call.body.get("max_tokens")
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled" or not isinstance(limit, int) \
            or isinstance(limit, bool) or limit <= usage.output_tokens:
        return usage, ""
    note = (f"; extended thinking is billed in full but streamed as a summary: charged max_tokens ({limit}) "
            "of output (set max_tokens to bound it)")
    return dataclasses.replace(usage, output_tokens=limit), note


__all__ = ["CHARS_PER_TOKEN", "AnthropicStream", "completion", "stream_end"]
