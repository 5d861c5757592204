"""OpenAI Images bodies (``POST …/images/generations`` and ``…/images/edits``) → ``llm_call`` subjects
(``api="images"``).

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
No cache breakpoints (OpenAI caches on its own). A streamed call (``stream: true``) reserves
:data:`PARTIAL_IMAGE_TOKENS` more output a partial image it asks for (``partial_images``), and
settles from the usage of its ``image_generation.completed`` / ``image_edit.completed`` events;
cut before its last image, it is charged its worst case. DALL·E models bill per image, not per
token, and genai-prices has no price for them: budgets refuse them as any unpriced model (they are
retired).

An edit (``images.edit``) is a generation with input images: its body is a ``multipart/form-data``
form, which :func:`edit_body` turns into the body judged (text fields typed as JSON types them, each
image file described by its name, type, byte length and pixel size, never its bytes); a JSON edit
names its images (``images: [{image_url | file_id}]``), whose size is not known. Each input image,
the mask and a markup image among them, adds its tokens to the estimated input
(:func:`edit_image_tokens`, by :data:`INPUT_IMAGE_TOKENS_SOURCE`). OpenAI does not say whether the mask is
billed; it is reserved as an image (a worst case; the usage settles what was billed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from costwarden.adapters.image_size import image_size
from costwarden.adapters.llm_payload import TokenTally, optional_int, require_body
from costwarden.adapters.multipart import Form, Part
from costwarden.adapters.openai import PROVIDER, call_subject
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation
from costwarden.errors import AdapterError

API = "images"
_WHAT = "OpenAI images"
AUTO = "auto"
DEFAULT_GIF_FRAMES = 9
PARTIAL_IMAGE_TOKENS = 100
"""Output tokens each partial image of a streamed call adds (``partial_images``: OpenAI's image
generation guide, "Streaming": "each partial image costs an extra 100 output tokens")."""
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

INPUT_IMAGE_BASE_TOKENS = 65
INPUT_IMAGE_TILE_TOKENS = 129
HIGH_FIDELITY_SQUARE_TOKENS = 4096
HIGH_FIDELITY_OTHER_TOKENS = 6144
_FIT_PX, _SHORT_SIDE_PX, _TILE_PX = 2048, 512, 512
INPUT_IMAGE_TOKENS_SOURCE = "developers.openai.com, guide 'Images and vision', 'Calculating costs': GPT Image 1"
"""Where the input image formula of :func:`input_image_tokens` comes from. An image input to a GPT
Image edit is tokenized as vision inputs are (tiles), scaled smaller: fit it in 2048 x 2048, scale
it down so its shortest side is 512 px, count the 512 px tiles that cover it; it costs 65 tokens
plus 129 a tile. ``input_fidelity: "high"`` adds 4,096 tokens for a square image and 6,144 for any
other (the guide's words, quoted on the OpenAI developer forum, "Image generation: high fidelity
editing"). Scaling rounds down: OpenAI bills a 1024 x 1025 image one tile, 194 tokens, and a
512 x 513 one two tiles, 323 (usage reported on the OpenAI developer forum, "Vision pricing
calculator: inaccurate resizing/rounding vs API costs"). ``gpt-image-1.5`` still bills its input
images by this formula (ibid., "OpenAI must document the input image pricing of gpt-image-2");
other GPT Image models publish none (``gpt-image-2`` applies high fidelity on its own), so each of
their images is reserved :data:`MAX_INPUT_IMAGE_TOKENS`, as is an image whose size its header does
not give. The edits endpoint was also seen to bill some 16 to 32 text tokens per image above the
prompt (ibid.): too few to matter, and the usage settles them."""
MAX_INPUT_IMAGE_TOKENS = INPUT_IMAGE_BASE_TOKENS + 4 * INPUT_IMAGE_TILE_TOKENS + HIGH_FIDELITY_OTHER_TOKENS
"""The most one image input may cost by the formula (4 tiles, not square, high fidelity): 6,725."""
INPUT_IMAGE_FIELDS = ("image", "images", "mask", "markup")
"""The edit fields whose values are images billed as input (``images``: a JSON edit's)."""
_INT_FIELDS = frozenset({"n", "frame_count", "frame_duration_ms", "output_compression", "partial_images"})
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
    a string, whose ``n``, ``frame_count`` or ``partial_images`` is not a count, or whose ``size``
    or ``quality`` is not a string.
    """
    body = require_body(body, _WHAT)
    images_in = edit_image_tokens(body)
    streamed = body.get("stream") is True
    per_image = output_tokens_per_image(body)
    if per_image is not None and streamed:
        per_image += PARTIAL_IMAGE_TOKENS * partial_images(body)
    request = LlmRequest(
        api="batch" if batch else API,
        max_tokens=per_image,
        stream=streamed,
        max_tokens_field="",  # no field caps an image's output
        input_tokens=estimate_input_tokens(body) + images_in,
        input_image_tokens=images_in,  # reserved at the input image rate
        batch=batch,
        choices=images_generated(body),
        output_image=True,
    )
    return call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)


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


def partial_images(body: Mapping[str, Any]) -> int:
    """The partial images a streamed call asks for (``partial_images``, 0 by default)."""
    value = body.get("partial_images", 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AdapterError(f"{_WHAT}: 'partial_images' must be a count, got {value!r}")
    return value


def images_generated(body: Mapping[str, Any]) -> int:
    """The images a body generates and is billed for: ``n`` (1 by default), each GIF frame an image."""
    n = _at_least_one(body, "n", 1)
    if body.get("output_format") == "gif":
        return n * _at_least_one(body, "frame_count", DEFAULT_GIF_FRAMES)
    return n


def input_image_tokens(width: int, height: int, *, high_fidelity: bool = False) -> int:
    """The input tokens of one ``width`` x ``height`` image by :data:`INPUT_IMAGE_TOKENS_SOURCE`::

        >>> [input_image_tokens(1024, 1024), input_image_tokens(1536, 1024), input_image_tokens(512, 513)]
        [194, 323, 323]
        >>> input_image_tokens(1024, 1024, high_fidelity=True), input_image_tokens(1536, 1024, high_fidelity=True)
        (4290, 6467)
    """
    w, h = width, height
    if max(w, h) > _FIT_PX:
        w, h = max(1, w * _FIT_PX // max(width, height)), max(1, h * _FIT_PX // max(width, height))
    shortest = min(w, h)
    if shortest > _SHORT_SIDE_PX:
        w, h = w * _SHORT_SIDE_PX // shortest, h * _SHORT_SIDE_PX // shortest
    tiles = -(-w // _TILE_PX) * -(-h // _TILE_PX)
    tokens = INPUT_IMAGE_BASE_TOKENS + INPUT_IMAGE_TILE_TOKENS * tiles
    if high_fidelity:
        tokens += HIGH_FIDELITY_SQUARE_TOKENS if width == height else HIGH_FIDELITY_OTHER_TOKENS
    return tokens


def edit_image_tokens(body: Mapping[str, Any]) -> int:
    """The input image tokens of an edit body (0 for a generation): each image of
    :data:`INPUT_IMAGE_FIELDS` by its pixel size, one without a known size (a JSON edit's, or an
    unreadable header) or for a model the formula is not published for at :data:`MAX_INPUT_IMAGE_TOKENS`."""
    images = [image for key in INPUT_IMAGE_FIELDS for image in _listed(body.get(key))]
    if not images:
        return 0
    published = bool(_TABLE_MODELS.match(str(body.get("model")).rsplit("/", 1)[-1]))
    high = body.get("input_fidelity") == "high"
    return sum(_image_tokens(image, high) if published else MAX_INPUT_IMAGE_TOKENS for image in images)


def edit_body(form: Form) -> dict[str, Any]:
    """The body of an ``images.edit`` form: its text fields (``n`` and the other counts as ints,
    ``stream`` as a boolean), a ``name[]`` field's values (and ``image``'s) as a list, and each
    image or file as ``{filename, content_type, bytes, width, height}`` (width and height None where
    its header does not give them). Raises AdapterError for a field sent twice (which one the API
    reads is not known: the guard would judge one and send both), a count that is not a whole
    number, or a text field that is not UTF-8."""
    body: dict[str, Any] = {}
    for part in form.parts:
        listed = part.name.endswith("[]")
        key = part.name[:-2] if listed else part.name
        value = _described(part) if part.is_file or key in INPUT_IMAGE_FIELDS else _typed(key, part.text())
        values = body.setdefault(key, []) if listed or key == "image" else None
        if isinstance(values, list):
            values.append(value)
        elif key in body:
            raise AdapterError(f"{_WHAT}: form field '{part.name}' is sent more than once; the call-guard cannot "
                               "tell which one the API reads")
        else:
            body[key] = value
    return body


def _listed(value: object) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _image_tokens(image: object, high_fidelity: bool) -> int:
    width = image.get("width") if isinstance(image, Mapping) else None
    height = image.get("height") if isinstance(image, Mapping) else None
    if type(width) is not int or type(height) is not int or width < 1 or height < 1:
        return MAX_INPUT_IMAGE_TOKENS if high_fidelity else MAX_INPUT_IMAGE_TOKENS - HIGH_FIDELITY_OTHER_TOKENS
    return input_image_tokens(width, height, high_fidelity=high_fidelity)


def _described(part: Part) -> dict[str, Any]:
    size = image_size(part.data)
    return {"filename": part.filename, "content_type": part.content_type, "bytes": len(part.data),
            "width": size[0] if size else None, "height": size[1] if size else None}


def _typed(key: str, text: str) -> Any:
    if key in _INT_FIELDS:
        if not (text.isascii() and text.isdigit()):
            raise AdapterError(f"{_WHAT}: form field '{key}' must be a whole number, got {text!r}")
        return int(text)
    if key == "stream" and text in ("true", "false"):
        return text == "true"
    return text


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
    "HIGH_FIDELITY_OTHER_TOKENS",
    "HIGH_FIDELITY_SQUARE_TOKENS",
    "INPUT_IMAGE_BASE_TOKENS",
    "INPUT_IMAGE_FIELDS",
    "INPUT_IMAGE_TILE_TOKENS",
    "INPUT_IMAGE_TOKENS_SOURCE",
    "MAX_INPUT_IMAGE_TOKENS",
    "OUTPUT_TOKENS",
    "PARTIAL_IMAGE_TOKENS",
    "edit_body",
    "edit_image_tokens",
    "estimate_input_tokens",
    "images_generated",
    "input_image_tokens",
    "output_tokens_per_image",
    "partial_images",
    "subject_from_request",
]
