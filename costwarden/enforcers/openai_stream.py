"""Reading an OpenAI response for its usage: Chat Completions and legacy Completions chunks and
Responses events as the application reads them (``OpenAIStream``), and the settlement when the body
ends (``stream_end``). The transport in ``openai_guard.py`` taps the body; this module reads what the
tap sees.

A stream that ends before its usage is charged the estimated input, the output its deltas showed
(answer text, tool-call arguments, refusals and the reasoning text some servers show: Chat's
``reasoning_content`` / ``reasoning``, Responses' reasoning text and summary) and the web
searches it showed (``web_search_call`` items, billed per call; one shown started is charged: it
runs on OpenAI's side whatever becomes of the stream). A reasoning call's is charged more (its
reasoning effort, else its model's default, is not ``none``:
:func:`~costwarden.adapters.openai.hides_reasoning`; or its Responses stream added a ``reasoning``
item): its reasoning tokens are billed as output but never shown, and nothing in the stream counts
them (a cut o3 stream may have reasoned for thousands of tokens before its first visible word).
Charging only what was shown would lose that spend, and guessing a count per reasoning effort
would be a number no invoice backs, so it is charged the worst case its reservation held: the
estimated input plus the output its max tokens allow (clamped as the reservation was) and the web
searches it allows, or what it showed where that is more, and the event says so. Setting
``max_completion_tokens`` / ``max_output_tokens`` bounds that charge as it bounds the bill.
A stream that shows its raw chain of thought (``response.reasoning_text.delta``: an open model
such as gpt-oss behind a compatible server) hides nothing, and is charged what it showed.

A legacy Completions stream shows its output as ``choices[].text`` (no ``delta``), all of it: it
has no hidden reasoning, whatever its model (a raw prompt is continued as text, and a reasoning
model's thinking is in that text). With ``echo`` its text starts with the prompt, which is billed
as input, so the characters of the prompts echoed are not counted as output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

from costwarden.adapters import openai as adapter
from costwarden.adapters import openai_completions, openai_images
from costwarden.enforcers.attempt import end_reason, finish_json_body
from costwarden.enforcers.background_responses import complete_or_hold, hold_running
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.guarded_call import GuardedCall
from costwarden.engine.pricing import price_context
from costwarden.engine.rules.budget import worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

CHARS_PER_TOKEN = 4
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_IMAGE_DONE_EVENTS = frozenset({"image_generation.completed", "image_edit.completed"})
"""The event that ends each image of a streamed GPT Image call, with that image's ``usage``."""
_DELTA_EVENTS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta",
                           "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
                           "response.refusal.delta"})


class OpenAIStream:
    """Reads usage and the served model from Chat Completions chunks or Responses events."""

    __slots__ = ("kept", "model", "finished", "output_chars", "drop_usage_chunk", "served", "response_id",
                 "reasoned", "raw_reasoning", "searches", "images")

    def __init__(self, *, drop_usage_chunk: bool = False) -> None:
        self.kept: list[Mapping[str, Any]] = []
        self.model: str | None = None
        self.finished = False
        self.output_chars = 0
        self.drop_usage_chunk = drop_usage_chunk
        self.served: dict[str, str] = {}  # the service tier the chunks or the response report: the price's context
        self.response_id: str | None = None  # a Responses stream's response (``response.created`` names it)
        self.reasoned = False  # a Responses stream added a ``reasoning`` output item: hidden tokens were billed
        self.raw_reasoning = False  # ... unless it streams the raw chain of thought (open models' servers)
        self.searches: set[str] = set()  # the ``web_search_call`` items a Responses stream showed, by id
        self.images: list[Mapping[str, Any]] = []  # an image stream's completed events, each with its usage

    def on_event(self, data: str) -> bool:
        if data == "[DONE]":
            return True
        event = json.loads(data)
        if not isinstance(event, Mapping):
            return True
        kind = event.get("type")
        if kind is None:
            return self._chat_chunk(event)
        if kind in _IMAGE_DONE_EVENTS:
            self.images.append(event)
            self.finished = True
            return True
        self._responses_event(kind, event)
        return True

    def _responses_event(self, kind: object, event: Mapping[str, Any]) -> None:
        response = event.get("response")
        if self.response_id is None and isinstance(response, Mapping) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if kind in _FINAL_EVENTS:
            self.kept.append(event)
            self.finished = True
            if isinstance(response, Mapping):
                if isinstance(response.get("model"), str):
                    self.model = response["model"]
                self.served.update(price_context(response))
        elif kind in _DELTA_EVENTS and isinstance(event.get("delta"), str):
            self.output_chars += len(event["delta"])
            self.raw_reasoning = self.raw_reasoning or kind == "response.reasoning_text.delta"
        elif kind == "response.output_item.added":
            item = event.get("item")
            self.reasoned = self.reasoned or (isinstance(item, Mapping) and item.get("type") == "reasoning")
            if isinstance(item, Mapping) and item.get("type") == "web_search_call":
                self._searched(item.get("id"), event)
        elif isinstance(kind, str) and kind.startswith("response.web_search_call."):
            self._searched(event.get("item_id"), event)

    def _searched(self, item_id: object, event: Mapping[str, Any]) -> None:
        """Count a web search call the stream showed, once whatever the events that show it (its
        item's ``added``, its ``in_progress`` / ``searching`` / ``completed``); one with no id is
        named by its output index."""
        self.searches.add(item_id if isinstance(item_id, str) else f"#{event.get('output_index')}")

    def _chat_chunk(self, chunk: Mapping[str, Any]) -> bool:
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("service_tier"), str):
            self.served.update(price_context(chunk))
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, Mapping) else None
            if isinstance(delta, Mapping):
                self.output_chars += _delta_chars(delta)
            elif isinstance(choice, Mapping) and isinstance(choice.get("text"), str):  # legacy Completions
                self.output_chars += len(choice["text"])
        if isinstance(chunk.get("usage"), Mapping):
            self.kept.append(chunk)
            self.finished = True
            return not (self.drop_usage_chunk and not choices)
        return True

    def output_estimate(self, echoed_chars: int = 0) -> int:
        """The output tokens the stream showed, about: its characters, less ``echoed_chars`` of prompt."""
        return -(-max(self.output_chars - echoed_chars, 0) // CHARS_PER_TOKEN)

    def usage(self) -> TokenUsage | None:
        if self.images:  # an image stream: each completed image carries its own usage
            try:
                used = [adapter.usage_from_response(event) for event in self.images]
            except AdapterError:
                return None
            return functools.reduce(TokenUsage.plus, used)
        if not self.kept:
            return None
        try:
            return adapter.usage_from_chunks(self.kept)
        except AdapterError:
            return None


def _delta_chars(delta: Mapping[str, Any]) -> int:
    """The output characters a Chat Completions delta shows: its content, its tool calls' arguments
    and its reasoning text, which OpenAI-compatible servers send beside the content and bill as
    output: ``reasoning_content`` (DeepSeek, SGLang, older vLLM) or ``reasoning`` (vLLM,
    OpenRouter, Ollama). A server that sends both (vLLM's compatibility with the old name) sends the
    same text twice: it is counted once."""
    arguments = sum(len(str((c.get("function") or {}).get("arguments") or ""))
                    for c in delta.get("tool_calls") or () if isinstance(c, Mapping))
    reasoning = max(len(text) if isinstance(text := delta.get(key), str) else 0
                    for key in ("reasoning_content", "reasoning"))
    return len(delta.get("content") or "") + arguments + reasoning


def stream_end(
    call: GuardedCall, observer: OpenAIStream | None, tap: BodyTap, complete: bool, error: BaseException | None
) -> None:
    if tap.undecodable or tap.truncated:
        call.charge_estimate(error="response body could not be read for usage")
        return
    if observer is None:
        if complete:
            finish_json_body(call, bytes(tap.body), complete_or_hold)
        else:
            call.charge_estimate(error="response body closed before its end")
        return
    usage = observer.usage()
    if call.subject.kind == openai_images.API and (
            usage is None or (not complete and len(observer.images) < call.subject.request.choices)):
        ended = f"image stream ended before its last image ({end_reason(complete, error)})"
        _charge_unfinished_images(call, observer, ended)
        return
    if usage is None and observer.response_id is not None and call.body.get("background") is True:
        hold_running(call, observer.response_id)  # OpenAI runs it to its end without the stream
        return
    if usage is None:
        ended = f"stream ended before its usage ({end_reason(complete, error)})"
        legacy = call.subject.kind == openai_completions.API  # all its output is text it shows
        # reasoning shown as raw text (gpt-oss behind a compatible server) hides nothing: it is counted
        hidden = observer.reasoned or adapter.hides_reasoning(call.body, call.model)
        if not legacy and hidden and not observer.raw_reasoning:
            _charge_hidden_reasoning(call, observer, ended)
            return
        echoed = openai_completions.echoed_chars(call.body) if legacy else 0
        shown = dataclasses.replace(call.estimated_usage(observer.output_estimate(echoed)),
                                    web_search_requests=len(observer.searches))
        call.complete(shown, served_model=observer.model, source="estimate", outcome="partial", error=ended,
                      response=observer.served)
        return
    call.complete(usage, served_model=observer.model, source="stream", response=observer.served)


def _charge_unfinished_images(call: GuardedCall, observer: OpenAIStream, ended: str) -> None:
    """Charge an image stream cut before its last image the worst case it was reserved for: an image
    is billed once it is generated, and partial images tell nothing of the final one's tokens."""
    call.complete(worst_case_usage(call.subject), served_model=observer.model, source="estimate", outcome="partial",
                  response=observer.served, error=f"{ended}; charged the worst case reserved for its images")


def _charge_hidden_reasoning(call: GuardedCall, observer: OpenAIStream, ended: str) -> None:
    """Charge a reasoning stream cut before its usage the worst case it was reserved for (see the
    module docstring), or what it showed when that is more."""
    worst = worst_case_usage(call.subject)
    usage = dataclasses.replace(worst, output_tokens=max(worst.output_tokens, observer.output_estimate()),
                                web_search_requests=max(worst.web_search_requests, len(observer.searches)))
    call.complete(usage, served_model=observer.model, source="estimate", outcome="partial", response=observer.served,
                  error=f"{ended}; {call.model} reasons with output tokens no stream shows: charged the worst case "
                        f"of {usage.output_tokens} output tokens (set the request's max tokens to bound it)")


__all__ = ["CHARS_PER_TOKEN", "OpenAIStream", "stream_end"]
