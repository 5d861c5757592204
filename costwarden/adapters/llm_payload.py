"""What the LLM provider adapters share: body checks, the token estimate, usage counts, SSE lines.

Token estimate
--------------
Before a call there is no usage to read, so rules see an estimate. It must cost microseconds and
touch nothing outside the process (no tokenizer download, no ``count_tokens`` call), so it is a
character heuristic rather than a tokenizer:

* prose: ``weighted_chars / 4``, where a character counts 1 if ASCII and 1 + 2·(extra UTF-8 bytes)
  otherwise, so accented Latin costs little more, Cyrillic ~0.75 and CJK ~1.25 tokens a character;
* JSON (tool schemas, tool inputs, structured-output schemas): compact ``json.dumps`` chars / 3,
  because punctuation and short keys tokenize densely (OpenAI tool definitions are the exception:
  OpenAI renders them as terse TypeScript, so they count at the prose rate);
* per-message and per-request framing, tool-use system prompts and images are fixed amounts set
  by each provider module; binary attachments (PDF, audio) are
  ``max(1,500, decoded_bytes / 50)`` tokens each, which is coarse (pages are not parsed).

Error bound: on the 27 recorded Messages and Chat Completions exchanges in ``shared/corpora``
(text, tools, tool results, images, structured outputs; server tools excluded) the estimate is
−21 % to +28 % of the billed input tokens (the tests hold it to −25 % / +30 %). Plain English
prose runs 10–25 % high on Claude ≤ 4.6 tokenizers; tool-heavy requests depend on the model's
tool-use system prompt. Outside that bound: non-Latin scripts beyond the weighting above, base64
or minified code inside text, server-side tools (code execution, web search inject thousands of
tokens), image sizes far from the default, and ``previous_response_id`` context. Treat the
estimate as a budget pre-check, never as a bill: post-call usage is what the ledger records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from costwarden.errors import AdapterError

UNCAPPED_WEB_SEARCHES = 10
"""The web searches a worst case assumes for a web search tool without a limit (Anthropic's
``max_uses``, a Responses call's ``max_tool_calls``): an assumption, not a bound; the searches a
call makes are charged in full when it settles. A limit on the tool makes the reservation exact."""

ATTACHMENT_MIN_TOKENS = 1_500
ATTACHMENT_BYTES_PER_TOKEN = 50

# Keys of a content block that carry no prompt text (ids, markers, opaque or encrypted payloads).
_SKIP_KEYS = frozenset(
    {
        "type", "role", "cache_control", "signature", "id", "tool_use_id", "call_id", "tool_call_id",
        "citations", "status", "caller", "encrypted_content", "data", "annotations", "logprobs",
    }
)  # fmt: skip
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_ATTACHMENT_TYPES = frozenset({"document", "file", "input_file", "input_audio"})
_NESTED_KEYS = frozenset({"content", "output", "tool_calls", "source"})
_JSON_STRING_KEYS = frozenset({"arguments", "partial_json"})

ImageTokens = Callable[[Mapping[str, Any]], int]


def _weighted_chars(text: str) -> int:
    if text.isascii():
        return len(text)
    return 2 * len(text.encode("utf-8", "surrogatepass")) - len(text)


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def compact_json(value: Any) -> str:
    """``value`` as compact ASCII JSON (any Mapping accepted), the text the JSON estimate measures.

    ASCII output is the fastest encoder path; a non-ASCII character becomes a 6-character
    ``\\uXXXX`` escape, close to the weight ``_weighted_chars`` would give it.
    """
    try:
        return json.dumps(value, separators=(",", ":"))
    except TypeError:  # a MappingProxyType, a set...
        return json.dumps(value, separators=(",", ":"), default=_json_default)


class TokenTally:
    """Accumulates a token estimate over the parts of a request; ``total`` reads it out.

    >>> tally = TokenTally()
    >>> tally.text("You are terse.")  # 14 chars / 4 → 4
    >>> tally.json({"type": "object", "properties": {}})  # 33 chars / 3 → 11
    >>> tally.fixed(3)
    >>> tally.total
    18
    """

    __slots__ = ("_prose", "_json", "_fixed")

    def __init__(self) -> None:
        self._prose = 0
        self._json = 0
        self._fixed = 0

    @property
    def total(self) -> int:
        """The estimate so far, rounded up."""
        return self._fixed + -(-self._prose // 4) + -(-self._json // 3)

    def text(self, text: str) -> None:
        """Add prose."""
        self._prose += _weighted_chars(text)

    def json(self, value: Any) -> None:
        """Add a JSON value (a schema, a tool input) measured as compact JSON."""
        self._json += _weighted_chars(value if isinstance(value, str) else compact_json(value))

    def fixed(self, tokens: int) -> None:
        """Add a fixed number of tokens (framing, images, system prompts the provider injects)."""
        self._fixed += tokens

    def content(self, content: Any, images: ImageTokens) -> None:
        """Add message content: a string, one block, or a list of blocks of any provider's shape."""
        if content is None:
            return
        if isinstance(content, str):
            self.text(content)
        elif isinstance(content, Mapping):
            self.block(content, images)
        elif isinstance(content, (list, tuple)):
            for part in content:
                self.content(part, images)
        else:
            self.json(content)

    def block(self, block: Mapping[str, Any], images: ImageTokens) -> None:
        """Add one content block: text, image, attachment, tool call or tool result."""
        kind = block.get("type")
        if kind in _IMAGE_TYPES:
            self.fixed(images(block))
            return
        if kind in _ATTACHMENT_TYPES and not _is_text_source(block):
            self.fixed(_attachment_tokens(block))
            return
        for key, value in block.items():
            if key in _SKIP_KEYS and not (key == "data" and kind == "text"):
                continue
            if isinstance(value, str):
                if key in _JSON_STRING_KEYS:
                    self.json(value)
                else:
                    self.text(value)
            elif key in _NESTED_KEYS:
                self.content(value, images)
            elif isinstance(value, (Mapping, list, tuple)):
                self.json(value)


def _is_text_source(block: Mapping[str, Any]) -> bool:
    source = block.get("source")
    return isinstance(source, Mapping) and source.get("type") in ("text", "content")


def _attachment_tokens(block: Mapping[str, Any]) -> int:
    longest = 0
    for holder in (block, block.get("source"), block.get("file"), block.get("input_audio")):
        if isinstance(holder, Mapping):
            for key in ("data", "file_data"):
                value = holder.get(key)
                if isinstance(value, str):
                    longest = max(longest, len(value))
    decoded_bytes = longest * 3 // 4
    return max(ATTACHMENT_MIN_TOKENS, decoded_bytes // ATTACHMENT_BYTES_PER_TOKEN)


# --- request bodies ------------------------------------------------------------------------


def require_body(body: object, what: str) -> Mapping[str, Any]:
    """``body`` as a Mapping with a non-empty string ``model``, or AdapterError saying what is wrong."""
    if body.__class__ is not dict and not isinstance(body, Mapping):  # dict first: ABC checks cost a call
        raise AdapterError(f"{what} request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        got = "no 'model'" if model is None else f"'model' {model!r}"
        raise AdapterError(f"{what} request body has {got}; a model name string is required")
    return body


def optional_int(body: Mapping[str, Any], key: str, what: str) -> int | None:
    """``body[key]`` as a non-negative int, None when absent, AdapterError when malformed."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AdapterError(f"{what}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def optional_str(value: object) -> str | None:
    """``value`` if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def flag(body: Mapping[str, Any], key: str) -> bool:
    """``body[key]`` read as a boolean (absent or null is False)."""
    return body.get(key) is True


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a Mapping, else an empty one (for optional nested objects)."""
    if value.__class__ is dict:
        return value
    return value if value is not None and isinstance(value, Mapping) else _EMPTY


_EMPTY: Mapping[str, Any] = MappingProxyType({})


# --- streams ---------------------------------------------------------------------------------


def stream_events(lines: Iterable[str]) -> Iterator[Mapping[str, Any]]:
    """JSON objects from a server-sent-event stream or from JSON-lines chunks.

    ``data:`` lines are joined until a blank line or ``event:`` line (the SSE rule); a line that
    is itself a JSON object is an event on its own. ``[DONE]`` and comments are skipped. A data
    payload that is not JSON raises AdapterError naming its line, because a silently skipped
    event is spend that goes missing.
    """
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("data:"):
            payload = line[5:].strip()
            if buffer and payload.startswith("{"):
                yield from _flush(buffer, start)
            if not buffer:
                start = number
            buffer.append(payload)
        elif line.startswith("{"):
            yield from _flush(buffer, start)
            yield from _flush([line], number)
        elif not line or line.startswith("event:"):
            yield from _flush(buffer, start)
    yield from _flush(buffer, start)


def _flush(buffer: list[str], line: int) -> Iterator[Mapping[str, Any]]:
    payload = "\n".join(buffer).strip()
    buffer.clear()
    if not payload or payload == "[DONE]":
        return
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise AdapterError(f"stream line {line}: data is not JSON ({exc})") from None
    if isinstance(event, Mapping):
        yield event


__all__ = [
    "ATTACHMENT_BYTES_PER_TOKEN",
    "ATTACHMENT_MIN_TOKENS",
    "ImageTokens",
    "TokenTally",
    "compact_json",
    "flag",
    "mapping",
    "optional_int",
    "optional_str",
    "require_body",
    "stream_events",
]
