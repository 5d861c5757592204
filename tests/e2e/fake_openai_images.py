"""The fake OpenAI Images API: ``POST /v1/images/generations`` answered as GPT Image models answer.

The answer is an ``ImagesResponse``: ``created``, ``data`` (``n`` images, each a tiny base64 PNG),
``background``, ``output_format``, ``quality``, ``size`` and ``usage: {input_tokens, output_tokens,
total_tokens, input_tokens_details: {text_tokens, image_tokens}}``, plus ``output_tokens_details:
{image_tokens, text_tokens}`` from the models that report it (:data:`OUTPUT_DETAILS_MODELS`: their
image output has a price of its own). The usage is computed from the
request so that a test can know each cost exactly: the prompt's whitespace-separated words are its
text tokens, and each image bills :data:`IMAGE_TOKENS` for its size and quality (OpenAI's
``gpt-image-1`` table; this fake's own copy, so a test checks the call-guard's table against it, not
against itself). ``auto`` (or an omitted) size or quality is served as ``1024x1024`` / ``medium``:
smaller than the worst case reserved, as a real ``auto`` often is. ``x-fake-usage`` (JSON:
``input_tokens``, ``image_tokens``, ``output_tokens``, ``output_text_tokens``: the text share of the
output, 0 by default) replaces the counts.
"""

from __future__ import annotations

import json
import time
from typing import Any

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
IMAGE_TOKENS = {
    ("1024x1024", "low"): 272, ("1024x1024", "medium"): 1056, ("1024x1024", "high"): 4160,
    ("1024x1536", "low"): 408, ("1024x1536", "medium"): 1584, ("1024x1536", "high"): 6240,
    ("1536x1024", "low"): 400, ("1536x1024", "medium"): 1568, ("1536x1024", "high"): 6208,
}  # fmt: skip
SERVED_SIZE = "1024x1024"  # what ``auto`` becomes here
SERVED_QUALITY = "medium"
OUTPUT_DETAILS_MODELS = frozenset({"gpt-image-1.5", "chatgpt-image-latest"})
"""Models whose usage splits output into image and text tokens (``gpt-image-1`` does not: all of its
output is image)."""


def images_usage(body: dict[str, Any], asked: dict[str, int]) -> tuple[dict[str, Any], str, str]:
    """The usage of a generation request, and the size and quality it was served at."""
    size = body.get("size") if body.get("size") not in (None, "auto") else SERVED_SIZE
    quality = body.get("quality") if body.get("quality") not in (None, "auto") else SERVED_QUALITY
    n = int(body.get("n") or 1)
    text = asked.get("input_tokens", len(str(body.get("prompt") or "").split()))
    image = asked.get("image_tokens", 0)
    output = asked.get("output_tokens", n * IMAGE_TOKENS.get((size, quality), IMAGE_TOKENS[SERVED_SIZE, "high"]))
    usage: dict[str, Any] = {"input_tokens": text + image, "output_tokens": output,
                             "total_tokens": text + image + output,
                             "input_tokens_details": {"text_tokens": text, "image_tokens": image}}
    if body.get("model") in OUTPUT_DETAILS_MODELS:
        output_text = asked.get("output_text_tokens", 0)
        usage["output_tokens_details"] = {"image_tokens": output - output_text, "text_tokens": output_text}
    return usage, size, quality


def generate_images(handler: Any, body: dict[str, Any]) -> None:
    """Answer ``POST /v1/images/generations`` on ``handler`` (a ``fake_wire.WireHandler``)."""
    asked = json.loads(handler.headers.get("x-fake-usage") or "{}")
    usage, size, quality = images_usage(body, asked)
    n = int(body.get("n") or 1)
    handler._json(200, {
        "created": int(time.time()),
        "background": "opaque",
        "data": [{"b64_json": PNG} for _ in range(n)],
        "output_format": body.get("output_format") or "png",
        "quality": quality,
        "size": size,
        "usage": usage,
    })


__all__ = ["IMAGE_TOKENS", "OUTPUT_DETAILS_MODELS", "PNG", "generate_images", "images_usage"]
