"""Anthropic Messages API bodies → ``llm_call`` subjects; usage from responses and SSE streams.

Reads the request body exactly as it goes over the wire (``model``, ``max_tokens``, ``system`` as a
string or text blocks, ``messages`` with string or block content, ``tools``, ``stream``,
``metadata.user_id``, ``cache_control`` on blocks or at the top level) and never imports the
``anthropic`` SDK::

    >>> call = subject_from_request({"model": "claude-sonnet-4-5", "max_tokens": 1024,
    ...     "system": "Be terse.", "messages": [{"role": "user", "content": "Hi"}]})
    >>> call.request.prefix_pointer, call.request.max_tokens
    ('/system', 1024)

Usage follows Anthropic's convention, which is also :class:`TokenUsage`'s: ``input_tokens``
excludes cache reads and writes. The input-token estimate is described in
:mod:`costwarden.adapters.llm_payload`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from costwarden.adapters.llm_payload import (
    UNCAPPED_WEB_SEARCHES,
    TokenTally,
    flag,
    mapping,
    optional_int,
    optional_str,
    require_body,
    stream_events,
)
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation, TokenUsage
from costwarden.errors import AdapterError

_NO_SOURCE = SourceLocation()
PROVIDER = "anthropic"
_WHAT = "Anthropic Messages"

# Fixed parts of the estimate. Anthropic publishes 346 (auto/none) and 313 (any/tool) tokens for
# the tool-use system prompt of Claude 4 models; recorded calls in shared/corpora bill 320-505
# (Sonnet and Haiku 4.5 at the top), so the middle is used and the forced choice keeps the gap.
REQUEST_TOKENS = 4
MESSAGE_TOKENS = 4
TOOL_SYSTEM_TOKENS = 420
TOOL_SYSTEM_TOKENS_FORCED = 387
TOOL_BLOCK_TOKENS = 30  # framing of each tool_use / tool_result block in messages
OUTPUT_FORMAT_TOKENS = 120
IMAGE_TOKENS = 1_600
MIN_THINKING_BUDGET = 1_024
"""The smallest ``thinking.budget_tokens`` the Messages API accepts."""
_TOOL_BLOCKS = frozenset({"tool_use", "tool_result", "server_tool_use"})


def subject_from_request(
    body: Mapping[str, Any],
    *,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    tags: Mapping[str, str] | None = None,
    response: Mapping[str, Any] | None = None,
    batch: bool = False,
    source: SourceLocation | None = None,
    provider: str = PROVIDER,
) -> LlmCall:
    """An ``llm_call`` subject for a Messages request body; ``phase="post"`` when ``response`` is given.

    ``batch=True`` marks a request sent through the Message Batches API (``api="batch"``).
    ``provider`` names the platform that serves and bills the call: ``anthropic``, or ``bedrock`` /
    ``vertex_ai`` for the same body sent through Amazon Bedrock or Google Vertex AI (their model ids
    and prices differ: ``us.anthropic.claude-haiku-4-5-20251001-v1:0`` is priced as Bedrock's).
    ``user`` defaults to ``metadata.user_id``. Raises AdapterError for a body that is not an
    object, has no ``model``, or carries malformed numbers.
    """
    body = require_body(body, _WHAT)
    prefix_tokens, input_tokens = _estimate(body)
    pointer = prefix_pointer(body)
    breakpoints, one_hour = cache_breakpoints(body)
    request = LlmRequest(
        api="batch" if batch else "messages",
        max_tokens=optional_int(body, "max_tokens", _WHAT),
        max_tokens_field="max_tokens",
        input_tokens=input_tokens,
        cacheable_prefix_tokens=prefix_tokens if pointer else 0,
        prefix_pointer=pointer,
        cache_breakpoints=breakpoints,
        cache_write_1h=one_hour,
        stream=flag(body, "stream"),
        batch=batch,
        max_web_searches=max_web_searches(body),
    )
    usage = usage_from_response(response) if response is not None else None
    return LlmCall(
        provider=provider,
        model=body["model"],
        feature=feature,
        user=user if user is not None else optional_str(mapping(body.get("metadata")).get("user_id")),
        team=team,
        tags=tags or {},
        phase="post" if usage is not None else "pre",
        request=request,
        usage=usage,
        body=body,
        source=source or _NO_SOURCE,
    )


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated input tokens of a Messages body: tools, system, messages, output format."""
    return _estimate(body)[1]


def _estimate(body: Mapping[str, Any]) -> tuple[int, int]:
    """(tokens of the tools + system prefix, tokens of the whole input)."""
    prefix = TokenTally()
    _add_tools(prefix, body)
    _add_system(prefix, body)
    rest = TokenTally()
    rest.fixed(REQUEST_TOKENS)
    _add_messages(rest, body)
    _add_output_format(rest, body)
    return prefix.total, prefix.total + rest.total


def prefix_pointer(body: Mapping[str, Any]) -> str | None:
    """JSON pointer of the block that ends the stable prefix: last system block, else last tool."""
    system = body.get("system")
    if isinstance(system, str) and system:
        return "/system"
    if isinstance(system, list) and system:
        return f"/system/{len(system) - 1}"
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        return f"/tools/{len(tools) - 1}"
    return None


def count_cache_breakpoints(body: Mapping[str, Any]) -> int:
    """``cache_control`` markers on tools, system blocks and message blocks; a top-level one counts 1."""
    return cache_breakpoints(body)[0]


def cache_breakpoints(body: Mapping[str, Any]) -> tuple[int, bool]:
    """The ``cache_control`` markers (as :func:`count_cache_breakpoints`), and whether any asks for
    the 1h TTL (its writes cost 2x input, against 1.25x for 5m)."""
    marks = [body.get("cache_control")] if body.get("cache_control") else []
    _marks(body.get("tools"), marks)
    _marks(body.get("system"), marks)
    for message in _list(body.get("messages")):
        if message.__class__ is dict or isinstance(message, Mapping):
            _marks(message.get("content"), marks)
    return len(marks), any(isinstance(m, Mapping) and m.get("ttl") == "1h" for m in marks)


def max_web_searches(body: Mapping[str, Any]) -> int:
    """The web searches the worst case holds: the sum of ``max_uses`` over the request's web search
    tools (``web_search_20250305`` and later), each tool without a limit counted as
    :data:`~costwarden.adapters.llm_payload.UNCAPPED_WEB_SEARCHES` (the API allows it any number; a
    malformed ``max_uses``, which the API refuses, counts the same)."""
    total = 0
    for tool in _list(body.get("tools")):
        if isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("web_search_"):
            uses = tool.get("max_uses")
            if isinstance(uses, int) and not isinstance(uses, bool) and uses > 0:
                total += uses
            else:
                total += UNCAPPED_WEB_SEARCHES
    return total


def _marks(blocks: object, marks: list[object]) -> None:
    if not isinstance(blocks, list):  # None or a string: no blocks
        return
    for block in blocks:
        if block.__class__ is dict or isinstance(block, Mapping):
            if control := block.get("cache_control"):
                marks.append(control)
            if block.get("type") == "tool_result":
                _marks(block.get("content"), marks)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else _NO_ITEMS


_NO_ITEMS: list[Any] = []  # never appended to: read-only by convention


def _image_tokens(block: Mapping[str, Any]) -> int:
    return IMAGE_TOKENS


def _add_tools(tally: TokenTally, body: Mapping[str, Any]) -> None:
    tools = _list(body.get("tools"))
    if tools:  # one dump of the whole list: per-call overhead dominates for many small tools
        tally.json([_unmarked(tool) for tool in tools])
        forced = mapping(body.get("tool_choice")).get("type") in ("any", "tool")
        tally.fixed(TOOL_SYSTEM_TOKENS_FORCED if forced else TOOL_SYSTEM_TOKENS)


def _unmarked(tool: object) -> object:
    if isinstance(tool, Mapping) and "cache_control" in tool:
        return {k: v for k, v in tool.items() if k != "cache_control"}
    return tool


def _add_system(tally: TokenTally, body: Mapping[str, Any]) -> None:
    tally.content(body.get("system"), _image_tokens)


def _add_messages(tally: TokenTally, body: Mapping[str, Any]) -> None:
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise AdapterError(f"{_WHAT}: 'messages' must be a list, got {type(messages).__name__}")
    for message in messages or ():
        tally.fixed(MESSAGE_TOKENS)
        if message.__class__ is dict or isinstance(message, Mapping):
            content = message.get("content")
            tally.content(content, _image_tokens)
            for block in _list(content):
                if isinstance(block, Mapping) and block.get("type") in _TOOL_BLOCKS:
                    tally.fixed(TOOL_BLOCK_TOKENS)


def _add_output_format(tally: TokenTally, body: Mapping[str, Any]) -> None:
    fmt = mapping(body.get("output_config")).get("format") or body.get("output_format")
    if isinstance(fmt, Mapping):
        tally.json(fmt.get("schema", fmt))
        tally.fixed(OUTPUT_FORMAT_TOKENS)


def fit_thinking(
    body: Mapping[str, Any], asked: Mapping[str, Any], *, interleaved: bool = False
) -> tuple[Mapping[str, Any], str | None]:
    """``body`` (``asked`` rewritten, e.g. ``max_tokens`` clamped by a policy) made valid again for
    extended thinking, and what was changed; ``(body, None)`` when nothing needs to change.

    Thinking tokens are output and count within ``max_tokens``, and the API refuses a
    ``thinking.budget_tokens`` that is not below ``max_tokens`` or is under 1,024. A clamp can break
    a request the caller made valid: the budget is then scaled down with ``max_tokens`` (keeping the
    caller's share for the answer), at least 1,024; below that thinking is turned off. A budget the
    caller set themselves is left to the API to judge, and so is one sent with ``interleaved``
    thinking (its budget spans the whole turn and may exceed ``max_tokens``)."""
    thinking = body.get("thinking")
    if interleaved or not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return body, None
    budget, limit, was = _count(thinking.get("budget_tokens")), _count(body.get("max_tokens")), _count(
        asked.get("max_tokens"))
    if budget is None or limit is None or was is None:
        return body, None
    if budget < limit or limit >= was or budget >= was:  # valid, not lowered by a rewrite, or the caller's own
        return body, None
    if limit <= MIN_THINKING_BUDGET:
        note = f"turn thinking off: max_tokens {limit} leaves no room for the {MIN_THINKING_BUDGET}-token minimum"
        return {**body, "thinking": {"type": "disabled"}}, note
    scaled = min(max(budget * limit // was, MIN_THINKING_BUDGET), limit - 1)
    return {**body, "thinking": {**thinking, "budget_tokens": scaled}}, (
        f"lower thinking.budget_tokens {budget} to {scaled}, below max_tokens {limit}")


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- usage -----------------------------------------------------------------------------------


class _UsageState:
    """Usage counts merged from one response or from every usage object of a stream."""

    __slots__ = ("input", "output", "read", "write", "split_5m", "split_1h", "searches")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.read: int | None = None
        self.write: int | None = None
        self.split_5m: int | None = None
        self.split_1h: int | None = None
        self.searches: int | None = None

    def update(self, usage: Mapping[str, Any]) -> None:
        """Take every non-null count in ``usage``; later values replace earlier ones."""
        for key, slot in (
            ("input_tokens", "input"),
            ("output_tokens", "output"),
            ("cache_read_input_tokens", "read"),
            ("cache_creation_input_tokens", "write"),
        ):
            value = optional_int(usage, key, f"{_WHAT} usage")
            if value is not None:
                setattr(self, slot, value)
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            self.split_5m = optional_int(split, "ephemeral_5m_input_tokens", f"{_WHAT} usage") or 0
            self.split_1h = optional_int(split, "ephemeral_1h_input_tokens", f"{_WHAT} usage") or 0
        server = usage.get("server_tool_use")  # running totals in a stream, like output_tokens
        if isinstance(server, Mapping):
            searches = optional_int(server, "web_search_requests", f"{_WHAT} usage")
            if searches is not None:
                self.searches = searches

    def result(self) -> TokenUsage:
        # The TTL split may be older than the total (a message_delta can update only the
        # total), so the 1h part is kept and the rest of the total counts as 5m writes.
        write = self.write
        if write is None:
            write = (self.split_5m or 0) + (self.split_1h or 0)
        write_1h = min(self.split_1h or 0, write)
        return TokenUsage(
            input_tokens=self.input or 0,
            output_tokens=self.output or 0,
            cache_read_tokens=self.read or 0,
            cache_write_5m_tokens=write - write_1h,
            cache_write_1h_tokens=write_1h,
            web_search_requests=self.searches or 0,
        )


def usage_from_response(response: Mapping[str, Any]) -> TokenUsage:
    """Token usage of a Messages response, a Message Batches result line, or a bare ``usage`` object.

    Only ``cache_creation_input_tokens`` without the ``cache_creation`` TTL split counts as 5m writes.
    """
    if not isinstance(response, Mapping):
        raise AdapterError(f"{_WHAT} response must be a JSON object, got {type(response).__name__}")
    result = response.get("result")
    if isinstance(result, Mapping):  # a Message Batches results line
        response = mapping(result.get("message"))
    if response.get("type") == "error":
        error = mapping(response.get("error"))
        raise AdapterError(f"{_WHAT} response is an error ({error.get('type')}), it has no usage")
    usage = response.get("usage", response if "input_tokens" in response else None)
    if not isinstance(usage, Mapping):
        raise AdapterError(f"{_WHAT} response has no 'usage' object")
    state = _UsageState()
    state.update(usage)
    return state.result()


def usage_from_sse(lines: Iterable[str]) -> TokenUsage:
    """Token usage of a streamed Messages response, from its SSE lines (or JSON-lines chunks).

    ``message_start`` carries input and cache counts; each ``message_delta.usage.output_tokens``
    is a running total, so the last one replaces earlier ones, and any input or cache count a
    ``message_delta`` carries replaces the earlier one. Raises AdapterError when the stream has
    no ``message_start`` (nothing to bill from) or carries an ``error`` event before any usage.
    """
    state = _UsageState()
    started = False
    for event in stream_events(lines):
        kind = event.get("type")
        if kind == "message_start":
            started = True
            state.update(mapping(mapping(event.get("message")).get("usage")))
        elif kind == "message_delta":
            state.update(mapping(event.get("usage")))
        elif kind == "error" and not started:
            error = mapping(event.get("error"))
            raise AdapterError(f"{_WHAT} stream failed before message_start: {error.get('message')!r}")
    if not started:
        raise AdapterError(f"{_WHAT} stream has no message_start event, so no usage")
    return state.result()


__all__ = [
    "PROVIDER",
    "cache_breakpoints",
    "count_cache_breakpoints",
    "estimate_input_tokens",
    "fit_thinking",
    "max_web_searches",
    "prefix_pointer",
    "subject_from_request",
    "usage_from_response",
    "usage_from_sse",
]
