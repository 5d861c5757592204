"""Image sizes read from headers alone: real PNG, JPEG and WebP bytes built here, each read to its
width and height; anything unreadable is None, never a guess."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from costwarden.adapters.image_size import image_size


def png(width: int, height: int) -> bytes:
    """A complete RGBA PNG (signature, IHDR, IDAT, IEND, with their CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x40\x20\xff" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, sof: int = 0xC0) -> bytes:
    """A baseline (or, with ``sof=0xC2``, progressive) JFIF file's segments: APP0, an APP1 whose
    data holds bytes that look like a frame marker, a table (DQT), a Huffman table (DHT: marker
    C4, inside the frame markers' range) before the frame, fill bytes, the frame, the scan."""
    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    app1 = segment(0xE1, b"Exif\x00\x00" + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10" * 300)
    dqt = segment(0xDB, b"\x00" + bytes(range(1, 65)))
    dht = segment(0xC4, b"\x00" + bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]) + bytes(range(12)))
    components = b"\x01\x22\x00\x02\x11\x00\x03\x11\x00"
    frame = segment(sof, struct.pack(">BHHB", 8, height, width, 3) + components)
    scan = segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00") + b"\x12\x34\xff\x00\x56"
    return b"\xff\xd8" + app0 + app1 + dqt + dht + b"\xff\xff" + frame + scan + b"\xff\xd9"


WEBP_LOSSLESS_1X1 = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def riff(chunk: bytes, data: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int, height: int) -> bytes:
    """A ``VP8 `` key frame: frame tag, start code, 14-bit sizes (the top 2 bits are the scale)."""
    tag = b"\x50\x02\x00"
    sizes = struct.pack("<HH", width | 0x4000, height | 0x8000)  # upscaling bits set: not part of the size
    return riff(b"VP8 ", tag + b"\x9d\x01\x2a" + sizes + bytes(8))


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14 | 1 << 28  # alpha hint set, version 0
    return riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(6))


def webp_extended(width: int, height: int) -> bytes:
    canvas = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(b"VP8X", canvas) + webp_lossless(1, 1)[12:]  # the canvas, then the image chunk


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(3, 2), (3, 2)),
        (png(1536, 1024), (1536, 1024)),
        (jpeg(640, 480), (640, 480)),
        (jpeg(4032, 3024, sof=0xC2), (4032, 3024)),
        (jpeg(17, 65535, sof=0xC1), (17, 65535)),
        (WEBP_LOSSLESS_1X1, (1, 1)),
        (webp_lossless(16383, 3), (16383, 3)),
        (webp_lossy(1024, 768), (1024, 768)),
        (webp_extended(5000, 16384), (5000, 16384)),
    ],
)
def test_sizes_are_read_from_real_headers(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data) == size


def test_only_the_header_is_needed() -> None:
    assert image_size(png(800, 600)[:24]) == (800, 600)
    whole = jpeg(300, 200)
    assert image_size(whole[: whole.index(b"\xff\xda")]) == (300, 200)  # no scan data needed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00",  # not a format the reader knows
        png(3, 2)[:20],  # cut inside IHDR
        png(0, 5),  # a zero side
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(13),  # not IHDR first
        jpeg(640, 480)[:200],  # cut before the frame
        b"\xff\xd8" + segment(0xDA, b"\x00" * 10) + b"\xff\xd9",  # a scan before any frame
        b"\xff\xd8\xff\xd9",  # nothing but start and end
        b"\xff\xd8" + b"\x00" * 20,  # no marker after SOI
        b"\xff\xd8\xff\xe0\x00\x01" + b"\x00" * 20,  # a segment length below 2
        riff(b"VP8 ", b"\x50\x02\x00" + b"\x00\x00\x00" + bytes(12)),  # no key-frame start code
        riff(b"VP8L", b"\x00" + bytes(10)),  # no lossless signature
        riff(b"ALPH", bytes(20)),
        b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(20),
    ],
)
def test_anything_unreadable_is_none(data: bytes) -> None:
    assert image_size(data) is None
