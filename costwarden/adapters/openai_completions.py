"""OpenAI legacy Completions bodies (``POST …/completions``) → ``llm_call`` subjects (``api="completions"``).

The API OpenAI-compatible servers (vLLM, TGI) are most often called with, and OpenAI's own
``gpt-3.5-turbo-instruct``, ``davinci-002`` and ``babbage-002``. A ``prompt`` body looks like a
Responses one to :func:`costwarden.adapters.openai.api_of`, so the call-guard picks this builder by
the request's path. The response reports ``usage: {prompt_tokens, completion_tokens}`` (a stream, in
its last chunk with ``stream_options.include_usage``), which
:func:`costwarden.adapters.openai.usage_from_response` reads::

    >>> call = subject_from_request({"model": "gpt-3.5-turbo-instruct", "prompt": ["Say hi", "Say bye"],
    ...                              "max_tokens": 5, "n": 2})
    >>> call.kind, call.request.input_tokens, call.request.max_tokens, call.request.choices
    ('completions', 4, 5, 4)

``prompt`` is a string, a list of strings, a list of token ids or a list of token-id lists; a list
of N prompts is N completions requests in one. Token arrays count exactly, as their length; text by
the prose estimate of :mod:`costwarden.adapters.llm_payload`, each prompt rounded up on its own,
with no framing (a prompt is sent as its tokens). A ``suffix`` (insert mode) is input to every
prompt. ``echo`` sends the prompt back in the text: it is billed once, as input
(``prompt_tokens``), never as output, so it adds nothing to the worst case. No ``prompt`` at all
(OpenAI then generates from the start of a document; vLLM may take ``prompt_embeds`` instead) is one
prompt of no estimated input: the usage settles what it was.

The worst case: ``choices`` = prompts × ``max(n, best_of)``, each up to ``max_tokens``. ``best_of``
candidates are generated server-side and billed although only ``n`` come back (OpenAI: "best_of
must be greater than n"; the larger of the two is taken, whatever the order), and ``n`` applies to
each prompt. Without ``max_tokens`` OpenAI generates at most 16 tokens
(:data:`DEFAULT_MAX_TOKENS`, documented there as the default), so a call to provider ``"openai"``
is reserved for 16; other servers' defaults differ (vLLM's is the rest of the context window), so
there ``max_tokens`` stays unset and the usual output clamp applies. ``max_tokens: 0`` (with
``echo`` and ``logprobs``: scoring a text, as evaluation harnesses do) generates nothing, so
``choices`` is 0, as for an embeddings call: the worst case is the input alone, and rules that
judge output (``maxOutputTokens``, downgrades) leave the call be. ``max_tokens_field`` is
``"max_tokens"`` (the API has no other). No cache breakpoints: OpenAI caches on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from costwarden.adapters.llm_payload import TokenTally, flag, optional_int, require_body
from costwarden.adapters.openai import PROVIDER, call_subject
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation
from costwarden.errors import AdapterError

API = "completions"
DEFAULT_MAX_TOKENS = 16
"""OpenAI's ``max_tokens`` when a Completions request sets none (provider ``"openai"`` only)."""
CHARS_PER_TOKEN = 4  # an echoed token-id prompt comes back as text of about this many characters a token
_WHAT = "OpenAI completions"
_PROMPT_SHAPES = "a string, a list of strings, a list of token ids or a list of token-id lists"


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
    """An ``llm_call`` subject for a Completions body; ``phase="post"`` with ``response``.

    Takes the arguments of :func:`costwarden.adapters.openai.subject_from_request` (the call-guard
    calls both alike). ``user`` defaults to the body's ``user``. ``batch=True`` marks a request sent
    through the Batch API (``api="batch"``). Raises AdapterError for a body that is not an object,
    has no ``model``, whose ``prompt`` has none of the API's shapes, or whose ``max_tokens``, ``n``
    or ``best_of`` is not a count (``n`` and ``best_of`` at least 1).
    """
    body = require_body(body, _WHAT)
    prompts = _prompts(body)
    max_tokens = optional_int(body, "max_tokens", _WHAT)
    if max_tokens is None and provider == PROVIDER:
        max_tokens = DEFAULT_MAX_TOKENS
    request = LlmRequest(
        api="batch" if batch else API,
        max_tokens=max_tokens,
        max_tokens_field="max_tokens",
        input_tokens=_input_tokens(body, prompts),
        stream=flag(body, "stream"),
        batch=batch,
        choices=0 if max_tokens == 0 else len(prompts) * completions_per_prompt(body),
    )
    return call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The input tokens of a Completions body: its prompts (token arrays exact, text estimated),
    each with the ``suffix``."""
    return _input_tokens(body, _prompts(body))


def completions_per_prompt(body: Mapping[str, Any]) -> int:
    """How many completions each prompt generates (and bills): ``max(n, best_of)``, 1 by default."""
    counts = [optional_int(body, key, _WHAT) for key in ("n", "best_of")]
    for key, count in zip(("n", "best_of"), counts, strict=True):
        if count == 0:
            raise AdapterError(f"{_WHAT}: '{key}' must be at least 1, got 0")
    return max(count or 1 for count in counts)


def echoed_chars(body: Mapping[str, Any]) -> int:
    """About how many characters of a stream's text are its prompts sent back (``echo``), once per
    completion each prompt generates: input already billed, not output. 0 without ``echo``."""
    if not flag(body, "echo"):
        return 0
    each = completions_per_prompt(body)
    return sum(len(p) if isinstance(p, str) else len(p) * CHARS_PER_TOKEN for p in _prompts(body)) * each


def _prompts(body: Mapping[str, Any]) -> list[str | list[int]]:
    """The prompts of a body, one per completions request: text or token ids."""
    value = body.get("prompt")
    if value is None:
        return [""]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise AdapterError(f"{_WHAT}: 'prompt' must be {_PROMPT_SHAPES}, got {got}")
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(_is_token(item) for item in value):
        return [list(value)]
    if all(isinstance(item, list) and all(_is_token(t) for t in item) for item in value):
        return list(value)
    raise AdapterError(f"{_WHAT}: 'prompt' must be {_PROMPT_SHAPES}; got a list of {_kinds(value)}")


def _input_tokens(body: Mapping[str, Any], prompts: list[str | list[int]]) -> int:
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise AdapterError(f"{_WHAT}: 'suffix' must be a string, got {type(suffix).__name__}")
    with_suffix = _text_tokens(suffix) * len(prompts) if suffix else 0
    return sum(len(p) if isinstance(p, list) else _text_tokens(p) for p in prompts) + with_suffix


def _text_tokens(text: str) -> int:
    tally = TokenTally()
    tally.text(text)
    return tally.total


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kinds(items: Sequence[Any]) -> str:
    return ", ".join(dict.fromkeys(type(item).__name__ for item in items))


__all__ = [
    "API",
    "DEFAULT_MAX_TOKENS",
    "completions_per_prompt",
    "echoed_chars",
    "estimate_input_tokens",
    "subject_from_request",
]
