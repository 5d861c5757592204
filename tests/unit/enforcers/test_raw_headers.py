"""Headers read from httpx's raw list give what ``Headers.get`` gives, for the names the guard reads."""

from __future__ import annotations

import httpx2
import pytest

from costwarden.enforcers.raw_headers import content_headers, raw_header

CASES = [
    [(b"Content-Type", b"application/json"), (b"Content-Length", b"12")],
    [(b"content-type", b"text/event-stream; charset=utf-8"), (b"Content-Encoding", b"gzip")],
    [(b"CONTENT-ENCODING", b"gzip"), (b"content-encoding", b"br"), (b"X-Other", b"1")],  # two codings: joined
    [(b"X-Stainless-Retry-Count", b"2"), (b"Content-Type", b"application/json; charset=\xe9")],  # Latin-1
    [],
]


@pytest.mark.parametrize("raw", CASES)
def test_content_headers_read_as_headers_get_reads_them(raw: list[tuple[bytes, bytes]]) -> None:
    headers = httpx2.Headers(raw)
    assert content_headers(headers) == (headers.get("content-type", ""), headers.get("content-encoding"))


@pytest.mark.parametrize("raw", CASES)
def test_raw_header_reads_as_headers_get(raw: list[tuple[bytes, bytes]]) -> None:
    headers = httpx2.Headers(raw)
    for name in ("x-stainless-retry-count", "content-encoding", "absent"):
        assert raw_header(headers, name.encode()) == headers.get(name)
