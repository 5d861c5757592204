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


def test_headers_changed_after_they_were_made_read_alike() -> None:
    headers = httpx2.Headers([(b"Content-Type", b"text/plain")])
    headers["CONTENT-TYPE"] = "application/json"
    headers["X-Stainless-Retry-Count"] = "1"
    assert content_headers(headers) == ("application/json", None)
    assert raw_header(headers, b"x-stainless-retry-count") == "1"


def test_headers_without_httpx_entry_list_are_read_through_raw() -> None:
    class Plain:  # any Headers-like object with only the public ``raw``
        raw = [(b"Content-Type", b"application/json"), (b"content-encoding", b"gzip"), (b"X-A", b"1"), (b"x-a", b"2")]

    assert content_headers(Plain()) == ("application/json", "gzip")  # type: ignore[arg-type]
    assert raw_header(Plain(), b"x-a") == "1, 2"  # type: ignore[arg-type]
