"""The pixel size of an image read from its header alone: PNG, JPEG and WebP, no image library.

An image input is billed by its pixel size (OpenAI tiles it: :mod:`costwarden.adapters.openai_images`),
and the call-guard must know that size before the request leaves, from bytes it does not decode.
Each format says its size near the start: PNG in its ``IHDR`` chunk, JPEG in its start-of-frame
segment (after any ``APPn`` / table segments, walked by their lengths), WebP in its ``VP8X``
canvas, ``VP8L`` (lossless) or ``VP8 `` (lossy) chunk::

    >>> image_size(PNG_SIGNATURE + b"\\x00\\x00\\x00\\x0dIHDR" + (1024).to_bytes(4, "big") + (512).to_bytes(4, "big"))
    (1024, 512)

Anything else (another format, a header cut short or inconsistent, a zero side) is None: the
caller decides what an unreadable image costs (the guard reserves the most an image can).
"""

from __future__ import annotations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""JPEG start-of-frame markers (not C4 DHT, C8 JPG, CC DAC, which share the range)."""
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
"""JPEG markers without a length: TEM and the restart markers RST0-7."""


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, JPEG or WebP image from its header; None when unreadable."""
    if data.startswith(PNG_SIGNATURE):
        size = _png(data)
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp(data)
    else:
        return None
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """Walk the segments after SOI to the first start-of-frame; None at the scan or the end."""
    at = 2
    while at < len(data):
        if data[at] != 0xFF:
            return None
        while at < len(data) and data[at] == 0xFF:  # fill bytes may pad before a marker
            at += 1
        if at >= len(data):
            return None
        marker = data[at]
        at += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or at + 2 > len(data):  # the end, or the scan before any frame
            return None
        length = int.from_bytes(data[at : at + 2], "big")
        if marker in _SOF:  # length, precision, height, width
            if at + 7 > len(data):
                return None
            return int.from_bytes(data[at + 5 : at + 7], "big"), int.from_bytes(data[at + 3 : at + 5], "big")
        if length < 2:
            return None
        at += length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # the canvas: 24-bit width - 1, height - 1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # 14-bit width - 1, height - 1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # a key frame's start code
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


__all__ = ["PNG_SIGNATURE", "image_size"]
