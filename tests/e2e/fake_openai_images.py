"""The fake OpenAI Images API: ``POST /v1/images/generations`` and ``POST /v1/images/edits`` answered
as GPT Image models answer.

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

An edit's ``multipart/form-data`` body is parsed with the standard library's ``email`` parser (not
the call-guard's reader) and recorded whole: ``server.posts("/v1/images/edits")[i].body`` is
``{"fields": {name: text}, "files": [(name, filename, content_type, bytes)], "raw": the body's
bytes}``. Its usage adds image input tokens (``input_tokens_details.image_tokens``) for each
``image`` / ``image[]`` file by OpenAI's GPT Image formula (:func:`input_image_tokens`, this fake's
own copy) at its PNG size (read from IHDR; another format bills :data:`OTHER_IMAGE_TOKENS`), plus
the high ``input_fidelity`` surcharge. The mask is not billed here (OpenAI does not say whether it
is): the guard reserves it, the usage settles without it. Hooked in by :func:`with_openai_image_edits`,
which puts the edits handler in front of the server's own.
"""

from __future__ import annotations

import json
import math
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from fake_wire import WireHandler

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
IMAGE_TOKENS = {
    ("1024x1024", "low"): 272, ("1024x1024", "medium"): 1056, ("1024x1024", "high"): 4160,
    ("1024x1536", "low"): 408, ("1024x1536", "medium"): 1584, ("1024x1536", "high"): 6240,
    ("1536x1024", "low"): 400, ("1536x1024", "medium"): 1568, ("1536x1024", "high"): 6208,
}  # fmt: skip
SERVED_SIZE = "1024x1024"  # what ``auto`` becomes here
SERVED_QUALITY = "medium"
OTHER_IMAGE_TOKENS = 194
"""What an edit's input image that is not a PNG bills here (a 1024x1024 image's tokens)."""
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


def generate_images(handler: Any, body: dict[str, Any], image_tokens: int = 0) -> None:
    """Answer ``POST /v1/images/generations`` on ``handler`` (a ``fake_wire.WireHandler``);
    ``image_tokens`` is the input image share (an edit's)."""
    asked = {"image_tokens": image_tokens, **json.loads(handler.headers.get("x-fake-usage") or "{}")}
    usage, size, quality = images_usage(body, asked)
    n = int(body.get("n") or 1)
    if body.get("stream") in (True, "true"):
        stream_images(handler, body, usage, size, quality, n, edit=image_tokens > 0)
        return
    handler._json(200, {
        "created": int(time.time()),
        "background": "opaque",
        "data": [{"b64_json": PNG} for _ in range(n)],
        "output_format": body.get("output_format") or "png",
        "quality": quality,
        "size": size,
        "usage": usage,
    })


def stream_images(handler: Any, body: dict[str, Any], usage: dict[str, Any], size: str, quality: str, n: int,
                  *, edit: bool) -> None:
    """A streamed answer: for each image, ``partial_images`` partial-image events, then its completed
    event with its share of the usage (each partial image bills 100 output tokens more, as OpenAI's
    do); ``x-fake-truncate`` cuts it after that many events."""
    kind = "image_edit" if edit else "image_generation"
    partials = int(body.get("partial_images") or 0)
    common = {"background": "opaque", "output_format": body.get("output_format") or "png", "quality": quality,
              "size": size, "created_at": int(time.time())}
    events: list[tuple[str | None, Any]] = []
    for _ in range(n):
        events.extend((f"{kind}.partial_image", {"type": f"{kind}.partial_image", "b64_json": PNG,
                                                 "partial_image_index": index, **common}) for index in range(partials))
        share = {**usage, "input_tokens": usage["input_tokens"] // n,
                 "output_tokens": usage["output_tokens"] // n + 100 * partials}
        share["total_tokens"] = share["input_tokens"] + share["output_tokens"]
        events.append((f"{kind}.completed", {"type": f"{kind}.completed", "b64_json": PNG, "usage": share, **common}))
    handler._sse(events)


def input_image_tokens(width: int, height: int, high_fidelity: bool) -> int:
    """One input image's tokens: fit in 2048x2048, shortest side down to 512 (rounding down), 65 +
    129 per 512 px tile; high fidelity adds 4,096 (square) or 6,144."""
    longest = max(width, height)
    w, h = (max(1, width * 2048 // longest), max(1, height * 2048 // longest)) if longest > 2048 else (width, height)
    shortest = min(w, h)
    if shortest > 512:
        w, h = w * 512 // shortest, h * 512 // shortest
    tokens = 65 + 129 * math.ceil(w / 512) * math.ceil(h / 512)
    return tokens + ((4096 if width == height else 6144) if high_fidelity else 0)


def edit_image_tokens(fields: dict[str, str], files: list[tuple[str, str | None, str, bytes]]) -> int:
    """The image input tokens this fake bills an edit: its ``image`` files, not its mask."""
    high = fields.get("input_fidelity") == "high"
    total = 0
    for name, _, _, data in files:
        if name not in ("image", "image[]"):
            continue
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            total += input_image_tokens(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), high)
        else:
            total += OTHER_IMAGE_TOKENS
    return total


class ImageEditHandlers(WireHandler):
    """``POST /v1/images/edits``; every other request goes on to the next handler class."""

    def do_POST(self) -> None:
        if self.path.split("?")[0].rstrip("/") != "/v1/images/edits":
            super().do_POST()  # type: ignore[misc]
            return
        from fake_llm_server import Recorded

        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        fields, files = parse_multipart(self.headers.get("content-type", ""), raw)
        fake = self.server.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        failure = fake._record(Recorded("POST", self.path, headers, {"fields": fields, "files": files, "raw": raw}))
        if failure is not None:
            self._json(failure, {"error": {"type": "server_error", "message": "try again"}}, {"retry-after-ms": "1"})
            return
        generate_images(self, dict(fields), edit_image_tokens(fields, files))


def parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], list[tuple[str, str | None, str, bytes]]]:
    """The text fields and the files (name, filename, content type, bytes) of a form, by ``email``."""
    message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, str] = {}
    files: list[tuple[str, str | None, str, bytes]] = []
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is None and part.get("content-type") is None:
            fields[name] = data.decode()
        else:
            files.append((name, part.get_filename(), part.get_content_type(), data))
    return fields, files


def with_openai_image_edits(handler: type) -> type:
    """``handler`` with ``POST /v1/images/edits`` in front of its own paths."""
    return type(handler.__name__, (ImageEditHandlers, handler), {})


__all__ = [
    "IMAGE_TOKENS",
    "OTHER_IMAGE_TOKENS",
    "OUTPUT_DETAILS_MODELS",
    "PNG",
    "ImageEditHandlers",
    "edit_image_tokens",
    "generate_images",
    "images_usage",
    "input_image_tokens",
    "parse_multipart",
    "with_openai_image_edits",
]
