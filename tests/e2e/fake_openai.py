"""The fake OpenAI API: Chat Completions, Responses and legacy Completions, JSON or streamed in
OpenAI's event order; Embeddings and Responses compaction, with usage counted from the input."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from typing import Any

from fake_wire import WireHandler, _pieces, _text

REASONING_WORDS = 16  # words of reasoning text a delta carries (``x-fake-reasoning-text``)
EMBEDDING_DIMENSIONS = 8  # without ``dimensions``: short vectors keep the answers small
COMPLETION_TOKENS = 10  # the most tokens a legacy completion generates (fewer under a smaller ``max_tokens``)
DEFAULT_MAX_TOKENS = 16  # OpenAI's ``max_tokens`` when a Completions request sets none
COMPACTION_TOKENS = 12  # the output tokens a compaction bills (its encrypted item), unless ``x-fake-usage`` says
PREVIOUS_RESPONSE_TOKENS = 200  # the input tokens a ``previous_response_id`` adds to a compaction (stored context)


def embedding_tokens(item: str | list[int]) -> int:
    """The tokens the fake Embeddings API bills for one input: a token array's length, a string's
    whitespace-separated words (so a test can compute its exact cost)."""
    return len(item) if isinstance(item, list) else len(item.split())


class OpenAIHandlers(WireHandler):
    """``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/responses/compact``, ``/v1/embeddings``
    and ``/v1/completions`` (see the ``fake_llm_server`` docstring)."""

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

    def _compact(self, body: dict[str, Any]) -> None:
        """A ``CompactedResponse`` (``object: "response.compaction"``): the input's user messages,
        then one ``compaction`` item. Usage: ``input_tokens`` is the words of ``instructions`` and of
        every text in ``input`` (:func:`compaction_input_tokens`), plus :data:`PREVIOUS_RESPONSE_TOKENS`
        with a ``previous_response_id``; ``output_tokens`` :data:`COMPACTION_TOKENS`; ``x-fake-usage``
        sets any of ``input_tokens``, ``cached_tokens`` (of the input), ``output_tokens`` and
        ``reasoning_tokens`` (of the output). No ``model`` or an ``input`` of no shape: 400."""
        items = [{"role": "user", "content": body["input"]}] if isinstance(body.get("input"), str) \
            else body.get("input") or []  # none: the stored thread of ``previous_response_id`` alone
        if not body.get("model") or not isinstance(items, list):
            param = "input" if body.get("model") else "model"
            self._json(400, {"error": {"message": f"'{param}' is not valid", "type": "invalid_request_error",
                                       "param": param, "code": None}})
            return
        asked = json.loads(self.headers.get("x-fake-usage") or "{}")
        prompt = int(asked.get("input_tokens", compaction_input_tokens(body)))
        cached, output = int(asked.get("cached_tokens", 0)), int(asked.get("output_tokens", COMPACTION_TOKENS))
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                 "output_tokens": output, "output_tokens_details": {"reasoning_tokens": int(asked.get(
                     "reasoning_tokens", 0))}, "total_tokens": prompt + output}
        kept = [{"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed", "role": "user",
                 "content": _input_parts(item.get("content"))}
                for item in items if isinstance(item, dict) and item.get("role") == "user"]
        compacted = {"type": "compaction", "id": f"cmp_{uuid.uuid4().hex[:12]}",
                     "encrypted_content": base64.b64encode(json.dumps(items).encode()).decode()}
        self._json(200, {"id": f"resp_{uuid.uuid4().hex[:20]}", "object": "response.compaction",
                         "created_at": int(time.time()), "model": self._model(body), "output": [*kept, compacted],
                         "usage": usage, **self._served("service_tier")})

    def _embeddings(self, body: dict[str, Any]) -> None:
        """An embedding per input, as OpenAI answers: floats, or with ``encoding_format: base64``
        (the SDK's default) the little-endian float32 bytes in base64; ``usage.prompt_tokens`` is
        :func:`embedding_tokens` summed, or ``x-fake-usage``'s ``input_tokens``."""
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            self._json(400, {"error": {"message": "'input' is not valid", "type": "invalid_request_error",
                                       "param": "input", "code": None}})
            return
        size = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        as_base64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": index, "embedding": _vector(item, size, as_base64)}
                for index, item in enumerate(inputs)]
        tokens = json.loads(self.headers.get("x-fake-usage") or "{}").get("input_tokens")
        tokens = sum(embedding_tokens(item) for item in inputs) if tokens is None else tokens
        self._json(200, {"object": "list", "data": data, "model": self._model(body),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _completions(self, body: dict[str, Any]) -> None:
        """A legacy ``text_completion``: for each prompt, ``n`` choices (indexed prompt by prompt)
        of ``min(max_tokens, 10)`` words (``max_tokens`` 16 when unset, as OpenAI), the prompt first
        with ``echo``. ``max(n, best_of)`` completions are generated and billed a prompt (``best_of``
        cannot be streamed: 400). Usage: ``prompt_tokens`` is :func:`embedding_tokens` of each
        prompt plus the ``suffix``'s words for each (``x-fake-usage``'s ``input_tokens`` replaces
        it), ``completion_tokens`` the words of every completion generated (``output_tokens`` there
        sets a completion's). Streamed: a chunk a word, a last chunk a choice with its
        ``finish_reason``, the usage chunk (``choices: []``) with ``stream_options.include_usage``."""
        prompts = _prompts(body.get("prompt"))
        n, best_of = int(body.get("n") or 1), int(body.get("best_of") or 1)
        if prompts is None or (body.get("stream") and best_of > 1):
            param = "prompt" if prompts is None else "best_of"
            self._json(400, {"error": {"message": f"'{param}' is not valid", "type": "invalid_request_error",
                                       "param": param, "code": None}})
            return
        asked = json.loads(self.headers.get("x-fake-usage") or "{}")
        cap = DEFAULT_MAX_TOKENS if body.get("max_tokens") is None else int(body["max_tokens"])
        each = int(asked.get("output_tokens", min(cap, COMPLETION_TOKENS)))
        suffix = len(str(body.get("suffix") or "").split())
        prompt_tokens = asked.get("input_tokens", sum(embedding_tokens(p) + suffix for p in prompts))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": each * len(prompts) * max(n, best_of),
                 "total_tokens": prompt_tokens + each * len(prompts) * max(n, best_of)}
        base = {"id": f"cmpl-{uuid.uuid4().hex[:20]}", "object": "text_completion", "created": int(time.time()),
                "model": self._model(body)}
        finish = "length" if each >= cap else "stop"
        texts = [(p if isinstance(p, str) else " ".join(map(str, p))) if body.get("echo") else "" for p in prompts]
        if not body.get("stream"):
            self._json(200, {**base, "choices": [
                {"text": texts[i] + (" " if texts[i] and each else "") + (_text(each) if each else ""),
                 "index": i * n + j, "logprobs": None, "finish_reason": finish}
                for i in range(len(prompts)) for j in range(n)], "usage": usage})
            return
        extra = {"usage": None} if (body.get("stream_options") or {}).get("include_usage") else {}

        def chunk(text: str, index: int, finish_reason: str | None = None) -> tuple[None, dict[str, Any]]:
            return None, {**base, "choices": [{"text": text, "index": index, "logprobs": None,
                                               "finish_reason": finish_reason}], **extra}

        events: list[tuple[str | None, Any]] = []
        for i in range(len(prompts)):
            for j in range(n):
                events += [chunk(texts[i], i * n + j)] if texts[i] else []
                events += [chunk(piece if not texts[i] else " " + piece.lstrip(), i * n + j)
                           for piece in (_pieces(_text(each)) if each else ())]
                events.append(chunk("", i * n + j, finish))
        if extra:
            events.append((None, {**base, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self._sse(events)

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


def compaction_input_tokens(body: dict[str, Any]) -> int:
    """The input tokens the fake compaction bills: the whitespace-separated words of ``instructions``
    and of each text in ``input`` (a string, or items whose ``content`` is a string or text parts),
    plus :data:`PREVIOUS_RESPONSE_TOKENS` for a ``previous_response_id``."""
    value = body.get("input")
    items = [{"content": value}] if isinstance(value, str) else value if isinstance(value, list) else []
    texts = [str(body.get("instructions") or "")]
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        parts = [{"text": content}] if isinstance(content, str) else content if isinstance(content, list) else []
        texts += [str(part.get("text") or "") for part in parts if isinstance(part, dict)]
    stored = PREVIOUS_RESPONSE_TOKENS if body.get("previous_response_id") else 0
    return sum(len(text.split()) for text in texts) + stored


def _input_parts(content: Any) -> list[dict[str, Any]]:
    """A user message's ``content`` as the ``input_text`` parts a compacted output item carries."""
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    return [part for part in content if isinstance(part, dict)] if isinstance(content, list) else []


def _embedding_inputs(value: Any) -> list[str | list[int]] | None:
    """The inputs of an Embeddings body (one per embedding), None when ``input`` has none of the
    API's shapes: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, int) for item in value):
        return [value]
    if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
        return list(value)
    return None


def _prompts(value: Any) -> list[str | list[int]] | None:
    """The prompts of a Completions body (one per completions request); no prompt is one empty
    prompt (OpenAI generates from the start of a document), a list of none or of no shape None."""
    return [""] if value is None else _embedding_inputs(value)


def _vector(item: str | list[int], size: int, as_base64: bool) -> list[float] | str:
    """A deterministic vector for ``item`` (from its hash), as floats or base64 float32 bytes."""
    seed = hashlib.sha256(json.dumps(item).encode()).digest()
    floats = [(seed[i % len(seed)] - 128) / 128 for i in range(size)]
    if as_base64:
        return base64.b64encode(struct.pack(f"<{size}f", *floats)).decode()
    return floats


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
