"""OpenAI Embeddings bodies (``POST …/embeddings``) → ``llm_call`` subjects (``api="embeddings"``).

The body shape alone cannot tell an embeddings request from a Responses one (both are
``{"model", "input"}``), so the call-guard picks this builder by the request's path. An
embeddings call bills its input tokens only, and its response reports them as
``usage: {prompt_tokens, total_tokens}``, which :func:`costwarden.adapters.openai.usage_from_response`
reads (its output is 0)::

    >>> call = subject_from_request({"model": "text-embedding-3-small", "input": [[9906, 1917], [17]]})
    >>> call.kind, call.request.input_tokens, call.request.max_tokens, call.request.choices
    ('embeddings', 3, None, 0)

``input`` is a string, a list of strings, a list of token ids or a list of token-id lists. Token
arrays are counted exactly, as their length; text by the prose estimate of
:mod:`costwarden.adapters.llm_payload`, each string rounded up on its own (the API tokenizes each
input apart) and with no framing (an embeddings input is billed as its tokens, nothing more).

The call generates no completion, so ``choices`` is 0: the worst case a budget reserves is the
estimated input alone (``max_tokens × choices`` of output), which matters because embeddings
models have no output price, and a reserved output would fail to price. ``max_tokens`` is None and
``max_tokens_field`` ``"max_tokens"``: there is nothing to cap. No prompt caching either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from costwarden.adapters.llm_payload import TokenTally, require_body
from costwarden.adapters.openai import PROVIDER, call_subject
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation
from costwarden.errors import AdapterError

API = "embeddings"
_WHAT = "OpenAI embeddings"
_INPUT_SHAPES = "a string, a list of strings, a list of token ids or a list of token-id lists"


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
    """An ``llm_call`` subject for an Embeddings body; ``phase="post"`` with ``response``.

    Takes the arguments of :func:`costwarden.adapters.openai.subject_from_request` (the call-guard
    calls both alike). ``user`` defaults to the body's ``user``. ``batch=True`` marks a request
    sent through the Batch API (``api="batch"``, priced at the batch rate). Raises AdapterError for
    a body that is not an object, has no ``model``, or whose ``input`` has none of the API's shapes.
    """
    body = require_body(body, _WHAT)
    request = LlmRequest(
        api="batch" if batch else API,
        max_tokens=None,
        max_tokens_field="max_tokens",
        input_tokens=estimate_input_tokens(body),
        batch=batch,
        choices=0,
    )
    return call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The input tokens of an Embeddings body: exact for token arrays, estimated for text."""
    value = body.get("input")
    if isinstance(value, str):
        return _text_tokens(value)
    if not isinstance(value, list):
        raise AdapterError(f"{_WHAT}: 'input' must be {_INPUT_SHAPES}, got {type(value).__name__}")
    if all(isinstance(item, str) for item in value):
        return sum(_text_tokens(item) for item in value)
    if all(_is_token(item) for item in value):
        return len(value)
    if all(isinstance(item, list) and all(_is_token(t) for t in item) for item in value):
        return sum(len(item) for item in value)
    raise AdapterError(f"{_WHAT}: 'input' must be {_INPUT_SHAPES}; got a list of {_kinds(value)}")


def _text_tokens(text: str) -> int:
    tally = TokenTally()
    tally.text(text)
    return tally.total


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kinds(items: Sequence[Any]) -> str:
    return ", ".join(dict.fromkeys(type(item).__name__ for item in items))


__all__ = ["API", "estimate_input_tokens", "subject_from_request"]
