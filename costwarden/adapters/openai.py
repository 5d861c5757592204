"""OpenAI Chat Completions and Responses bodies → ``llm_call`` subjects; usage from responses and streams.

A body with ``messages`` is Chat Completions (``api="chat.completions"``); one with ``input``,
``instructions``, ``prompt``, ``previous_response_id``, ``conversation`` or ``max_output_tokens``
and no ``messages`` is the Responses API (``api="responses"``). The ``openai``
SDK is never imported::

    >>> call = subject_from_request({"model": "gpt-4.1-mini", "max_tokens": 300,
    ...     "messages": [{"role": "user", "content": "Hi"}]})
    >>> call.kind, call.request.max_tokens_field
    ('chat.completions', 'max_tokens')

OpenAI caches prompt prefixes on its own, so there are no breakpoints: ``cache_breakpoints`` is 0,
``prefix_pointer`` None, and ``cacheable_prefix_tokens`` the estimate of tools, structured-output
schema, instructions and leading system/developer messages. OpenAI's ``prompt_tokens`` include
cached tokens; :class:`TokenUsage` does not, so cache reads (and billed cache writes) are taken
out of ``input_tokens``. The estimate itself is described in :mod:`costwarden.adapters.llm_payload`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from costwarden.adapters.llm_payload import (
    UNCAPPED_WEB_SEARCHES,
    TokenTally,
    compact_json,
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
PROVIDER = "openai"
_WHAT = "OpenAI"

# Fixed parts of the estimate, after OpenAI's cookbook token counting for chat models: 3 tokens
# of framing a message, 3 priming the reply. Tool definitions reach the model as a terse
# TypeScript-like rendering, so their JSON is measured at the prose rate plus a little framing.
REQUEST_TOKENS = 3
MESSAGE_TOKENS = 3
TOOL_TOKENS = 4
IMAGE_TOKENS = 1_105  # "auto"/"high" detail of a landscape photo: 85 + 170 × 6 tiles
LOW_DETAIL_IMAGE_TOKENS = 85
_PREFIX_ROLES = frozenset({"system", "developer"})


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
    """An ``llm_call`` subject for a Chat Completions or Responses body; ``phase="post"`` with ``response``.

    ``batch=True`` marks a request sent through the Batch API (``api="batch"``). ``user`` defaults to
    the body's ``safety_identifier``, then ``user``. ``provider`` names an OpenAI-compatible API
    (``"x-ai"``, ``"groq"``...) so it is priced as that provider. Raises AdapterError for a body that
    is not an object, has no ``model``, or carries malformed numbers.
    """
    body = require_body(body, _WHAT)
    api = api_of(body)
    field = _max_tokens_field(body, api)
    prefix_tokens, input_tokens = _estimate(body, api)
    request = LlmRequest(
        api="batch" if batch else api,
        max_tokens=optional_int(body, field, _WHAT),
        max_tokens_field=field,
        input_tokens=input_tokens,
        cacheable_prefix_tokens=prefix_tokens,
        prefix_pointer=None,
        cache_breakpoints=0,
        stream=flag(body, "stream"),
        batch=batch,
        choices=_choices(body, api),
        output_audio="audio" in _list(body.get("modalities")),
        max_web_searches=_max_web_searches(body, api),
    )
    return call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)


def call_subject(
    body: Mapping[str, Any],
    request: LlmRequest,
    *,
    provider: str,
    feature: str | None,
    user: str | None,
    team: str | None,
    tags: Mapping[str, str] | None,
    response: Mapping[str, Any] | None,
    source: SourceLocation | None,
) -> LlmCall:
    """The ``llm_call`` of an OpenAI body (any of its APIs) whose request facts are worked out:
    ``user`` defaults to the body's ``safety_identifier``, then ``user``; ``phase="post"`` with the
    usage of ``response``."""
    usage = usage_from_response(response) if response is not None else None
    default_user = optional_str(body.get("safety_identifier")) or optional_str(body.get("user"))
    return LlmCall(
        provider=provider,
        model=body["model"],
        feature=feature,
        user=user if user is not None else default_user,
        team=team,
        tags=tags or {},
        phase="post" if usage is not None else "pre",
        request=request,
        usage=usage,
        body=body,
        source=source or _NO_SOURCE,
    )


# Keys only a Responses body has; ``input`` is optional there (a stored ``prompt``, a
# ``previous_response_id`` or a ``conversation`` can carry it all).
_RESPONSES_KEYS = ("input", "instructions", "prompt", "previous_response_id", "conversation", "max_output_tokens")


def api_of(body: Mapping[str, Any]) -> str:
    """``"responses"`` for a Responses API body, else ``"chat.completions"``."""
    if "messages" not in body and any(key in body for key in _RESPONSES_KEYS):
        return "responses"
    return "chat.completions"


def _max_web_searches(body: Mapping[str, Any], api: str) -> int:
    """The web search calls the worst case of a Responses request holds when it offers the web
    search tool: its ``max_tool_calls`` (a limit on all built-in tool calls), else
    :data:`~costwarden.adapters.llm_payload.UNCAPPED_WEB_SEARCHES`; 0 without the tool."""
    if api != "responses":
        return 0
    tools = body.get("tools")
    if not isinstance(tools, list) or not any(
        isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("web_search") for tool in tools
    ):
        return 0
    limit = body.get("max_tool_calls")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else UNCAPPED_WEB_SEARCHES


def _choices(body: Mapping[str, Any], api: str) -> int:
    """Chat Completions' ``n``: how many completions the call generates, each up to the max tokens."""
    if api != "chat.completions":
        return 1
    n = optional_int(body, "n", _WHAT)
    if n == 0:
        raise AdapterError(f"{_WHAT}: 'n' must be at least 1, got 0")
    return 1 if n is None else n


def _max_tokens_field(body: Mapping[str, Any], api: str) -> str:
    if api == "responses":
        return "max_output_tokens"
    if body.get("max_completion_tokens") is None and body.get("max_tokens") is not None:
        return "max_tokens"
    return "max_completion_tokens"


# Models that take reasoning parameters: the o-series, gpt-5 (not its chat models), gpt-oss, codex.
_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5(?![\w.-]*chat)|gpt-oss|codex)", re.IGNORECASE)
_REASONING_KEYS = ("reasoning_effort", "reasoning")


def fit_reasoning(body: Mapping[str, Any], asked: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """``body`` (``asked`` rewritten, e.g. downgraded to another model) without the reasoning
    parameters its new model refuses, and what was dropped; ``(body, None)`` when nothing needs to.

    A downgrade from a reasoning model (``o3``, ``gpt-5``) to one that does not reason (``gpt-4.1``)
    would otherwise be refused: the API answers 400 to ``reasoning_effort`` (Chat Completions) and
    ``reasoning`` (Responses) on such a model. The caller's own model choice is never second-guessed."""
    model, was = body.get("model"), asked.get("model")
    if not isinstance(model, str) or model == was or _REASONING_MODEL.match(model.rsplit("/", 1)[-1]):
        return body, None
    dropped = [key for key in _REASONING_KEYS if key in body]
    if not dropped:
        return body, None
    kept = {k: v for k, v in body.items() if k not in dropped}
    return kept, f"drop {', '.join(dropped)}: {model} does not reason"


# gpt-5.1 and later gpt-5.x default to reasoning effort ``none`` (no reasoning); earlier reasoning
# models default to ``medium`` and their codex / pro variants reason whatever the version.
_NO_REASONING_BY_DEFAULT = re.compile(r"^gpt-5\.[1-9](?![\w.-]*(?:codex|pro))", re.IGNORECASE)


def hides_reasoning(body: Mapping[str, Any], model: str | None = None) -> bool:
    """Whether a call to ``model`` (else the body's) may spend reasoning tokens: billed as output,
    never shown in the text of the answer. Its ``reasoning_effort`` (Chat Completions) or
    ``reasoning.effort`` (Responses) decides: anything but ``none`` reasons; without one, the
    model's default does (reasoning models reason, except gpt-5.1 and later gpt-5.x)."""
    effort = body.get("reasoning_effort")
    if effort is None:
        effort = mapping(body.get("reasoning")).get("effort")
    if isinstance(effort, str):
        return effort != "none"
    name = (model or str(body.get("model") or "")).rsplit("/", 1)[-1]
    return bool(_REASONING_MODEL.match(name)) and not _NO_REASONING_BY_DEFAULT.match(name)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated input tokens of a Chat Completions or Responses body."""
    return _estimate(body, api_of(body))[1]


def estimate_responses_input(body: Mapping[str, Any]) -> tuple[int, int]:
    """(tokens of the cacheable prefix, tokens of the whole input) of ``body`` estimated as a
    Responses body whatever keys it has (``instructions``, ``input``, ``tools``, ``text.format``),
    for an endpoint whose path says it takes one (``…/responses/compact``)."""
    return _estimate(body, "responses")


def _estimate(body: Mapping[str, Any], api: str) -> tuple[int, int]:
    """(tokens of the cacheable prefix, tokens of the whole input)."""
    prefix = TokenTally()
    rest = TokenTally()
    rest.fixed(REQUEST_TOKENS)
    _add_tools(prefix, body)
    _add_output_schema(prefix, body, api)
    if api == "responses":
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            prefix.fixed(MESSAGE_TOKENS)
            prefix.text(instructions)
        items = body.get("input")
        if isinstance(items, str):
            rest.fixed(MESSAGE_TOKENS)
            rest.text(items)
            items = None
    else:
        items = body.get("messages")
    if items is not None and not isinstance(items, list):
        key = "input" if api == "responses" else "messages"
        raise AdapterError(f"{_WHAT}: '{key}' must be a list, got {type(items).__name__}")
    leading = True
    for item in items or ():
        is_map = item.__class__ is dict or isinstance(item, Mapping)  # dict first: an ABC check costs a call
        leading = leading and is_map and item.get("role") in _PREFIX_ROLES
        tally = prefix if leading else rest
        tally.fixed(MESSAGE_TOKENS)
        if is_map:
            tally.block(item, _image_tokens)
    return prefix.total, prefix.total + rest.total


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _image_tokens(block: Mapping[str, Any]) -> int:
    detail = block.get("detail") or mapping(block.get("image_url")).get("detail")
    return LOW_DETAIL_IMAGE_TOKENS if detail == "low" else IMAGE_TOKENS


def _add_tools(tally: TokenTally, body: Mapping[str, Any]) -> None:
    functions = body.get("functions")  # the pre-tools form of Chat Completions
    for tool in _list(body.get("tools")) + _list(functions):
        if isinstance(tool, Mapping):
            tally.text(compact_json(tool.get("function", tool)))
            tally.fixed(TOOL_TOKENS)


def _add_output_schema(tally: TokenTally, body: Mapping[str, Any], api: str) -> None:
    if api == "responses":
        fmt = mapping(mapping(body.get("text")).get("format"))
        schema = fmt.get("schema")
    else:
        fmt = mapping(body.get("response_format"))
        schema = mapping(fmt.get("json_schema")).get("schema")
    if schema is not None:
        tally.json(schema)
        tally.fixed(MESSAGE_TOKENS)


# --- usage -----------------------------------------------------------------------------------


def usage_from_response(response: Mapping[str, Any]) -> TokenUsage:
    """Token usage of a chat completion, a Responses object, a Batch output line or a bare usage object.

    Cache reads (``*_tokens_details.cached_tokens``) and billed cache writes
    (``*_tokens_details.cache_write_tokens``, counted as 5m writes) are taken out of
    ``input_tokens``; ``*_tokens_details.audio_tokens`` and ``*_tokens_details.image_tokens`` are the
    audio and image share of the input and output (input images; a GPT Image model's generated images).
    Output is ``max(completion_tokens, total_tokens - prompt_tokens)`` because
    some OpenAI-compatible APIs (xAI) leave reasoning tokens out of ``completion_tokens`` but bill them.
    """
    if not isinstance(response, Mapping):
        raise AdapterError(f"{_WHAT} response must be a JSON object, got {type(response).__name__}")
    body = mapping(response.get("response")).get("body")  # a Batch API output line
    if isinstance(body, Mapping):
        response = body
    usage = response.get("usage")
    if usage is None and ("prompt_tokens" in response or "input_tokens" in response):
        usage = response
    if not isinstance(usage, Mapping):
        if response.get("status") in ("queued", "in_progress"):  # Responses background mode
            raise AdapterError(
                f"background response {response.get('id')!r} is {response['status']}: its usage is known only "
                "when it completes, which the call-guard does not follow"
            )
        raise AdapterError(f"{_WHAT} response has no 'usage' object")
    return _with_searches(_usage(usage), response)


def _with_searches(usage: TokenUsage, response: Mapping[str, Any]) -> TokenUsage:
    """``usage`` with the web search tool calls of a Responses object (its ``web_search_call`` output
    items, billed per call; its usage does not count them)."""
    output = response.get("output")
    if not isinstance(output, list):
        return usage
    calls = sum(1 for item in output if isinstance(item, Mapping) and item.get("type") == "web_search_call")
    return dataclasses.replace(usage, web_search_requests=calls) if calls else usage


def _usage(usage: Mapping[str, Any]) -> TokenUsage:
    what = f"{_WHAT} usage"
    if "prompt_tokens" in usage:
        prompt = optional_int(usage, "prompt_tokens", what) or 0
        output = optional_int(usage, "completion_tokens", what) or 0
        details = mapping(usage.get("prompt_tokens_details"))
        out_details = mapping(usage.get("completion_tokens_details"))
        total = optional_int(usage, "total_tokens", what)
        if total is not None:
            output = max(output, total - prompt)
    elif "input_tokens" in usage:
        prompt = optional_int(usage, "input_tokens", what) or 0
        output = optional_int(usage, "output_tokens", what) or 0
        details = mapping(usage.get("input_tokens_details"))
        out_details = mapping(usage.get("output_tokens_details"))
    else:
        raise AdapterError(f"{what} has neither 'prompt_tokens' nor 'input_tokens'")
    cached = optional_int(details, "cached_tokens", what) or 0
    written = optional_int(details, "cache_write_tokens", what) or 0
    if cached + written > prompt:
        raise AdapterError(f"{what}: cached ({cached}) + cache-write ({written}) tokens exceed input ({prompt})")
    # audio and image tokens are part of the input and output counts, billed at their own rates
    return TokenUsage(
        input_tokens=prompt - cached - written,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_5m_tokens=written,
        input_audio_tokens=min(optional_int(details, "audio_tokens", what) or 0, prompt),
        output_audio_tokens=min(optional_int(out_details, "audio_tokens", what) or 0, output),
        input_image_tokens=min(optional_int(details, "image_tokens", what) or 0, prompt),
        output_image_tokens=min(optional_int(out_details, "image_tokens", what) or 0, output),
    )


_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def usage_from_chunks(chunks: Iterable[Mapping[str, Any]]) -> TokenUsage:
    """Token usage of a stream: Chat Completions chunks or Responses stream events.

    With ``stream_options.include_usage`` the last chat chunk carries ``usage`` (earlier ones carry
    ``null``); a Responses stream carries it in ``response.completed``. The last usage seen wins.
    Raises AdapterError when no chunk carries usage, because a stream without it cannot be billed.
    """
    last: Mapping[str, Any] | None = None
    final: Mapping[str, Any] = {}
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        usage = chunk.get("usage")
        if chunk.get("type") in _FINAL_RESPONSE_EVENTS:
            final = mapping(chunk.get("response"))
            usage = final.get("usage")
        if isinstance(usage, Mapping):
            last = usage
    if last is None:
        raise AdapterError(f"{_WHAT} stream carried no usage; send stream_options={{'include_usage': true}} to get it")
    return _with_searches(_usage(last), final)


def usage_from_sse(lines: Iterable[str]) -> TokenUsage:
    """:func:`usage_from_chunks` over raw SSE lines (``data: {...}``) or JSON-lines chunks."""
    return usage_from_chunks(stream_events(lines))


__all__ = [
    "call_subject",
    "PROVIDER",
    "api_of",
    "estimate_input_tokens",
    "estimate_responses_input",
    "fit_reasoning",
    "hides_reasoning",
    "subject_from_request",
    "usage_from_chunks",
    "usage_from_response",
    "usage_from_sse",
]
