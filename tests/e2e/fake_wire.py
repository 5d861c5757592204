"""The HTTP plumbing every fake API handler shares: the usage a request asks for, JSON, SSE and
JSON Lines answers (chunked, compressed, dropped mid-body on request), and the answer text."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any


class _Brotli:
    """A brotli compressor with the two calls of zlib's the handler makes (``flush(Z_SYNC_FLUSH)``
    ends a frame's block; ``flush()`` ends the stream)."""

    def __init__(self) -> None:
        import brotli

        self._c = brotli.Compressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.process(data))

    def flush(self, mode: int | None = None) -> bytes:
        return bytes(self._c.flush() if mode is not None else self._c.finish())


class WireHandler(BaseHTTPRequestHandler):
    """Helpers of :class:`fake_llm_server._Handler`; the provider handlers build on them."""

    server: Any

    def _usage(self, body: dict[str, Any], cap_key: str) -> dict[str, int]:
        usage = dict(self.server.fake.usage)
        extra = self.headers.get("x-fake-usage")
        if extra:
            usage.update(json.loads(extra))
        cap = body.get(cap_key) or body.get("max_completion_tokens") or body.get("max_output_tokens") or 10
        usage.setdefault("output_tokens", min(int(cap), 10))
        return usage

    def _model(self, body: dict[str, Any]) -> str:
        return self.headers.get("x-fake-model") or str(body.get("model"))

    def _served(self, *names: str) -> dict[str, str]:
        """The served ``service_tier`` / ``speed`` the request's ``x-fake-*`` headers ask to report."""
        headers = {"service_tier": "x-fake-service-tier", "speed": "x-fake-speed"}
        return {n: v for n in names if (v := self.headers.get(headers[n]))}

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        """Chunked SSE; with ``x-fake-truncate: N`` the connection drops after N events."""
        truncate = self.headers.get("x-fake-truncate")
        limit = int(truncate) if truncate else None
        pause = int(self.headers.get("x-fake-event-delay-ms") or 0) / 1000
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        gzipped = self._content_encoding()
        self.end_headers()
        for index, (name, data) in enumerate(events):
            if limit is not None and index >= limit:
                self._drop()
                return
            if pause and index:
                time.sleep(pause)
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            raw = frame.encode()
            self._chunk(gzipped.compress(raw) + gzipped.flush(zlib.Z_SYNC_FLUSH) if gzipped else raw)
        if gzipped:
            self._chunk(gzipped.flush())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Drop the connection as a server that dies mid-stream does: the chunked body (and a
        compressed stream) never ends, and the socket is shut both ways at once, so the client's
        next read meets the end of the connection in the middle of the body, never a clean end."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client went first
            self.connection.shutdown(socket.SHUT_RDWR)

    def _jsonl(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        self.send_response(200)
        self.send_header("content-type", "application/binary")
        self.send_header("transfer-encoding", "chunked")
        gzipped = self._content_encoding()
        if gzipped:
            data = gzipped.compress(data) + gzipped.flush()
        self.end_headers()
        for start in range(0, len(data), 97):  # lines split across chunks, as a real download may be
            self._chunk(data[start : start + 97])
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _content_encoding(self) -> Any:
        """Send ``x-fake-content-encoding`` as the Content-Encoding; a compressor (zlib's interface)
        when it names gzip or br."""
        value = self.headers.get("x-fake-content-encoding")
        if value is None:
            return None
        self.send_header("content-encoding", value)
        if "gzip" in value.lower():
            return zlib.compressobj(wbits=31)
        return _Brotli() if value.strip().lower() == "br" else None

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _text(output_tokens: int) -> str:
    return " ".join(["word"] * max(output_tokens, 1))


def _pieces(text: str, words_per_piece: int = 1) -> list[str]:
    """``text`` in the deltas a stream sends it in: ``words_per_piece`` words each (1: word by word)."""
    words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" ") if text else ())]
    return ["".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)]
