"""AWS event-stream framing (``application/vnd.amazon.eventstream``), decoded as bytes arrive.

Amazon Bedrock's ``InvokeModelWithResponseStream`` answers in this binary framing, not SSE. Each
message is::

    prelude   total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes (uint32)
    headers   name length (uint8) | name | value type (uint8) | value ...
    payload   total length - headers length - 16 bytes
    trailer   CRC32 of everything before it (uint32)

all big-endian. Both CRCs are checked, and the lengths are bounded as botocore's
``EventStreamBuffer`` bounds them (128 KiB of headers, 24 MiB of payload), so a corrupt or hostile
stream is refused rather than buffered without end. The decoder is ours, not botocore's, so that
reading a stream's usage needs no AWS package: the Bedrock client of the ``anthropic`` SDK needs
botocore to read the stream itself, but the call-guard does not.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from costwarden.errors import AdapterError

CONTENT_TYPE = "application/vnd.amazon.eventstream"
PRELUDE_BYTES = 12
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024

HeaderValue = bool | int | bytes | str


@dataclass(frozen=True, slots=True)
class Frame:
    """One event-stream message: its headers (``:message-type``, ``:event-type`` ...) and payload."""

    headers: dict[str, HeaderValue]
    payload: bytes


def _fixed(fmt: str) -> Callable[[bytes, int], tuple[HeaderValue, int]]:
    size = struct.calcsize(fmt)
    return lambda data, at: (struct.unpack_from(fmt, data, at)[0], at + size)


def _sized(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("!H", data, at)
    end = at + 2 + length
    if end > len(data):
        raise AdapterError("event-stream header value runs past the headers")
    return bytes(data[at + 2 : end]), end


def _text(data: bytes, at: int) -> tuple[HeaderValue, int]:
    raw, end = _sized(data, at)
    return raw.decode("utf-8"), end


def _uuid(data: bytes, at: int) -> tuple[HeaderValue, int]:
    if at + 16 > len(data):
        raise AdapterError("event-stream header value runs past the headers")
    return bytes(data[at : at + 16]), at + 16


_VALUE_READERS: dict[int, Callable[[bytes, int], tuple[HeaderValue, int]]] = {
    0: lambda data, at: (True, at),
    1: lambda data, at: (False, at),
    2: _fixed("!b"),
    3: _fixed("!h"),
    4: _fixed("!i"),
    5: _fixed("!q"),
    6: _sized,
    7: _text,
    8: _fixed("!q"),  # a timestamp: milliseconds since the epoch
    9: _uuid,
}
"""Header value types 0-9 of the format: true, false, byte, short, integer, long, byte array,
string, timestamp, uuid (read as botocore reads them)."""


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """A message's headers section as a dict; raises AdapterError on a malformed or repeated header."""
    headers: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(data):
            name_end = at + 1 + data[at]
            name = bytes(data[at + 1 : name_end]).decode("utf-8")
            reader = _VALUE_READERS.get(data[name_end]) if name_end < len(data) else None
            if reader is None:
                raise AdapterError(f"event-stream header {name!r} has no value of a known type")
            if name in headers:
                raise AdapterError(f"event-stream header {name!r} is repeated")
            headers[name], at = reader(data, name_end + 1)
    except (struct.error, UnicodeDecodeError) as exc:
        raise AdapterError(f"event-stream headers are malformed: {exc}") from exc
    return headers


class FrameDecoder:
    """Splits a byte stream into :class:`Frame` s, however the bytes are chunked::

        decoder = FrameDecoder()
        for chunk in body:
            for frame in decoder.feed(chunk):
                ...

    Raises AdapterError on a bad CRC, length or header; the stream cannot be read past that."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete (a stream that ends with some was cut in a message)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= PRELUDE_BYTES:
            total, headers_length = self._prelude()
            if len(self._buffer) < total:
                break
            message = bytes(self._buffer[:total])
            del self._buffer[:total]
            (crc,) = struct.unpack_from("!I", message, total - 4)
            if zlib.crc32(message[:-4]) != crc:
                raise AdapterError("event-stream message fails its CRC")
            headers_end = PRELUDE_BYTES + headers_length
            frames.append(Frame(decode_headers(message[PRELUDE_BYTES:headers_end]), message[headers_end:-4]))
        return frames

    def _prelude(self) -> tuple[int, int]:
        total, headers_length, crc = struct.unpack_from("!III", self._buffer)
        if zlib.crc32(self._buffer[:8]) != crc:
            raise AdapterError("event-stream prelude fails its CRC")
        if headers_length > MAX_HEADERS_BYTES:
            raise AdapterError(f"event-stream headers of {headers_length} bytes exceed {MAX_HEADERS_BYTES}")
        payload_length = total - headers_length - PRELUDE_BYTES - 4
        if payload_length < 0 or payload_length > MAX_PAYLOAD_BYTES:
            raise AdapterError(f"event-stream message of {total} bytes has a payload of {payload_length}")
        return total, headers_length


__all__ = ["CONTENT_TYPE", "Frame", "FrameDecoder", "HeaderValue", "decode_headers"]
