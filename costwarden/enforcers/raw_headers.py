"""Reading a few headers of a request or response on the call-guard's path, from httpx's raw list.

``httpx2.Headers.get`` decodes every header of a message the first time one is read (to learn
their encoding) and then scans them all again for each name asked: about 3 µs for the two headers
a response is read for, on every guarded call. The names read here are ASCII and their values are
read as Latin-1, as httpx falls back to; several values of one name are joined with ``", "``, as
``Headers.get`` joins them. The entries are read where httpx keeps them (``Headers._list``: raw
name, lower-case name, value), so a read builds no list and lowers no name; a ``Headers`` without
that list is read through its public ``raw`` instead."""

from __future__ import annotations

import httpx2


def raw_header(headers: httpx2.Headers, name: bytes) -> str | None:
    """The value of header ``name`` (lower-case bytes), or None."""
    found: bytes | None = None
    for _, key, value in _entries(headers):
        if key == name:
            found = value if found is None else found + b", " + value
    return None if found is None else found.decode("latin-1")


def content_headers(headers: httpx2.Headers) -> tuple[str, str | None]:
    """``(Content-Type or "", Content-Encoding or None)`` in one pass."""
    ctype: bytes | None = None
    coding: bytes | None = None
    for _, lower, value in _entries(headers):
        if lower == b"content-type":
            ctype = value if ctype is None else ctype + b", " + value
        elif lower == b"content-encoding":
            coding = value if coding is None else coding + b", " + value
    return ("" if ctype is None else ctype.decode("latin-1")), (None if coding is None else coding.decode("latin-1"))


def _entries(headers: httpx2.Headers) -> list[tuple[bytes, bytes, bytes]]:
    """``(raw name, lower-case name, value)`` per header, as httpx keeps them."""
    entries = getattr(headers, "_list", None)
    if isinstance(entries, list):
        return entries
    return [(key, key.lower(), value) for key, value in headers.raw]


__all__ = ["content_headers", "raw_header"]
