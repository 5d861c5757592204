"""OpenAI Images bodies (``POST …/images/generations``) → ``llm_call`` subjects (``api="images"``).

GPT Image models bill tokens: the prompt's text tokens (and, for edits, the input images' tokens)
as input, each image generated as output tokens whose count is set by its ``size`` and
``quality``. The response reports them as ``usage: {input_tokens, output_tokens, total_tokens,
input_tokens_details: {text_tokens, image_tokens}}`` (and, from ``gpt-image-1.5``, ``output_tokens_details:
{image_tokens, text_tokens}``), which :func:`costwarden.adapters.openai.usage_from_response` reads
(``input_tokens`` is the whole input; ``image_tokens`` its image share and the output's)::

    >>> call = subject_from_request({"model": "gpt-image-1", "prompt": "a fox", "n": 2,
    ...                              "size": "1024x1024", "quality": "medium"})
    >>> call.kind, call.request.input_tokens, call.request.max_tokens, call.request.choices
    ('images', 2, 1056, 2)

The worst case a budget reserves is ``input + max_tokens × choices``, so the subject says it in
those terms: ``max_tokens`` is the output tokens of one image (:data:`OUTPUT_TOKENS`) and
``choices`` the images generated (``n``; a GIF's frames are each taken to cost an image), all of
them image tokens (``output_image``): priced at the model's output image rate where it has one
(``gpt-image-1.5``: $32 / M, where its text output is $10), at its output rate where that is its
image rate (``gpt-image-1``). An
``auto`` (or omitted) size or quality is reserved as the largest image it may become. Where the
table does not hold (a model it was not published for, a size or quality outside it),
``max_tokens`` is None and the budget reserves its clamp (``OUTPUT_TOKENS_CAP``) per image: more
than any such image is known to cost, never nothing. The prompt is estimated as prose with no
framing (:mod:`costwarden.adapters.llm_payload`); the usage settles what it was.

The images API has no field that caps output: ``max_tokens_field`` is empty, so ``maxOutputTokens``
skips the call (size, quality and ``n`` set its output), and no rule downgrades it to a chat model.
No cache breakpoints (OpenAI caches on its own). A streamed call (``stream: true``) is refused:
its usage arrives in an ``image_generation.completed`` event the call-guard's stream reader does
not read yet, so it could not be settled. DALL·E models bill per image, not per token, and genai-prices has no price
for them: budgets refuse them as any unpriced model (they are retired).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from costwarden.adapters.llm_payload import TokenTally, optional_int, optional_str, require_body
from costwarden.adapters.openai import PROVIDER, usage_from_response
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation
from costwarden.errors import AdapterError

API = "images"
_WHAT = "OpenAI images"
_NO_SOURCE = SourceLocation()
AUTO = "auto"
DEFAULT_GIF_FRAMES = 9
"""The frames of a GIF whose request sets no ``frame_count`` (the API's default)."""

OUTPUT_TOKENS: Mapping[tuple[str, str], int] = {
    ("1024x1024", "low"): 272, ("1024x1024", "medium"): 1056, ("1024x1024", "high"): 4160,
    ("1024x1536", "low"): 408, ("1024x1536", "medium"): 1584, ("1024x1536", "high"): 6240,
    ("1536x1024", "low"): 400, ("1536x1024", "medium"): 1568, ("1536x1024", "high"): 6208,
}  # fmt: skip
"""Output tokens of one image by ``(size, quality)``: OpenAI's published table for ``gpt-image-1``
(developers.openai.com, image generation guide, "Cost and latency"). ``gpt-image-1.5`` bills the
same counts (its per-image prices are these counts at $32/M). Other GPT Image models do not:
``gpt-image-1-mini`` bills more at low quality, ``gpt-image-2`` 7,024 tokens for a high
1024x1024 image and any size in between."""
_TABLE_MODELS = re.compile(r"^gpt-image-1(?:\.5)?(?:-\d{4}-\d{2}-\d{2})?$")
_SIZES = tuple(dict.fromkeys(size for size, _ in OUTPUT_TOKENS))
_QUALITIES = tuple(dict.fromkeys(quality for _, quality in OUTPUT_TOKENS))


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
    """An ``llm_call`` subject for an Images body; ``phase="post"`` with ``response``.

    Takes the arguments of :func:`costwarden.adapters.openai.subject_from_request` (the call-guard
    calls both alike). ``user`` defaults to the body's ``safety_identifier``, then ``user``.
    Raises AdapterError for a body that is not an object, has no ``model``, whose ``prompt`` is not
    a string, whose ``n`` or ``frame_count`` is not a count of at least 1, whose ``size`` or
    ``quality`` is not a string, or that asks for a stream.
    """
    body = require_body(body, _WHAT)
    if body.get("stream") is True:
        raise AdapterError(
            f"{_WHAT}: a streamed call (stream: true) cannot be settled by the call-guard yet (its usage "
            "comes in an image_generation.completed event it does not read); send it without stream"
        )
    request = LlmRequest(
        api="batch" if batch else API,
        max_tokens=output_tokens_per_image(body),
        max_tokens_field="",  # no field caps an image's output
        input_tokens=estimate_input_tokens(body),
        batch=batch,
        choices=images_generated(body),
        output_image=True,
    )
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


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated text tokens of an Images body's ``prompt`` (prose, no framing)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise AdapterError(f"{_WHAT}: 'prompt' must be a string, got {type(prompt).__name__}")
    tally = TokenTally()
    tally.text(prompt)
    return tally.total


def output_tokens_per_image(body: Mapping[str, Any]) -> int | None:
    """The output tokens of one image of ``body`` by :data:`OUTPUT_TOKENS`: an ``auto`` or omitted
    size or quality as the largest it may become; None where the table does not hold."""
    size, quality = _choice(body, "size"), _choice(body, "quality")
    model = str(body["model"]).rsplit("/", 1)[-1]
    if not _TABLE_MODELS.match(model):
        return None
    sizes = _SIZES if size == AUTO else (size,)
    qualities = _QUALITIES if quality == AUTO else (quality,)
    counts = [OUTPUT_TOKENS.get((s, q)) for s in sizes for q in qualities]
    return None if None in counts else max(c for c in counts if c is not None)


def images_generated(body: Mapping[str, Any]) -> int:
    """The images a body generates and is billed for: ``n`` (1 by default), each GIF frame an image."""
    n = _at_least_one(body, "n", 1)
    if body.get("output_format") == "gif":
        return n * _at_least_one(body, "frame_count", DEFAULT_GIF_FRAMES)
    return n


def _choice(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return AUTO
    if not isinstance(value, str):
        raise AdapterError(f"{_WHAT}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _at_least_one(body: Mapping[str, Any], key: str, default: int) -> int:
    count = optional_int(body, key, _WHAT)
    if count == 0:
        raise AdapterError(f"{_WHAT}: '{key}' must be at least 1, got 0")
    return default if count is None else count


__all__ = [
    "API",
    "DEFAULT_GIF_FRAMES",
    "OUTPUT_TOKENS",
    "estimate_input_tokens",
    "images_generated",
    "output_tokens_per_image",
    "subject_from_request",
]
