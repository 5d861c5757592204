"""Watch a response body while the application reads it, to learn a call's usage without buffering it.

The edges replace ``httpx2.Response.stream`` with :class:`TappedStream` (or its async twin). Every
chunk passes through unchanged (unless an observer drops an event, see below) and is also fed to a
:class:`BodyTap`, which decodes the content as the client does (``gzip``, ``deflate``; ``br`` and
``zstd`` with httpx2's own decoders, when the packages they need are installed and the client so
asks for them) and either splits server-sent events and hands each event's data to an observer,
or keeps a JSON body. When the body ends — read to the end, closed early, failed, or dropped and
collected — ``on_end(tap, complete, error)`` runs exactly once. Subclasses read other framings
with :meth:`BodyTap.decode` and :meth:`BodyTap.deliver` (AWS event streams, ``bedrock_stream.py``).

An observer returning False from ``on_event`` drops that event from what the client receives; this
is only honoured for identity-encoded bodies (the OpenAI edge uses it to hide the usage chunk it
asked for when the caller did not).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol

import httpx2

MAX_JSON_BODY_BYTES = 64 * 1024 * 1024


class EventObserver(Protocol):
    def on_event(self, data: str) -> bool:
        """One SSE event's data; return False to drop it from the stream the client reads."""
        ...


EndCallback = Callable[["BodyTap", bool, BaseException | None], None]


_ZLIB_CODINGS = frozenset({"gzip", "deflate"})
_CLIENT_CODINGS = _ZLIB_CODINGS | {"br", "zstd"}
"""Content codings httpx may decode (br and zstd only with their packages); it passes any other
value over as no coding at all, so the application reads such a body as it is sent."""


def _codings(content_encoding: str | None) -> list[str] | None:
    """The codings of a Content-Encoding to undo, in the order applied, read as httpx reads them:
    comma-separated, case-insensitive, ``identity`` and unknown values passed over; None when one
    of them cannot be decoded here (br or zstd without the package the client would decode it with)."""
    if not content_encoding:
        return []  # the usual answer: nothing to undo
    codings = [part.strip().lower() for part in content_encoding.split(",")]
    codings = [coding for coding in codings if coding in _CLIENT_CODINGS]
    return codings if all(c in _ZLIB_CODINGS or _client_decoder(c) is not None for c in codings) else None


def _client_decoder(coding: str) -> Callable[[bytes], bytes] | None:
    """httpx2's own decoder for ``br`` or ``zstd``, when the package it needs is installed. The
    client then sends ``Accept-Encoding: ..., br`` (or ``zstd``), so a server may compress a stream
    that way, and the tap must read it as the client does."""
    try:
        from httpx2._decoders import SUPPORTED_DECODERS
    except ImportError:  # a release of httpx2 that keeps its decoders elsewhere: not decodable here
        return None
    decoder_cls = SUPPORTED_DECODERS.get(coding)
    if decoder_cls is None:
        return None
    decoder = decoder_cls()
    return lambda data: b"".join(decoder.decode(data))


_DECODE_ERRORS = (zlib.error, httpx2.DecodingError)


class _Inflate:
    """gzip or deflate (zlib-wrapped or raw, as servers disagree) decoding, chunk by chunk."""

    def __init__(self, encoding: str) -> None:
        self._raw_fallback = encoding == "deflate"
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)

    def __call__(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._obj.decompress(data)


def _step(coding: str) -> Callable[[bytes], bytes]:
    if coding in _ZLIB_CODINGS:
        return _Inflate(coding)
    decoder = _client_decoder(coding)
    assert decoder is not None  # _codings let it through only when it has one
    return decoder


def _inflater(codings: list[str]) -> Callable[[bytes], bytes]:
    """Undoes ``codings`` (applied in that order) chunk by chunk."""
    steps = [_step(coding) for coding in reversed(codings)]
    if len(steps) == 1:
        return steps[0]

    def inflate(data: bytes) -> bytes:
        for step in steps:
            data = step(data)
        return data

    return inflate


class BodyTap:
    """Decodes and parses a response body as it streams; see the module docstring."""

    def __init__(
        self,
        *,
        sse: bool,
        content_encoding: str | None,
        on_end: EndCallback,
        observer: EventObserver | None = None,
        filtering: bool = False,
        blocking: bool = False,
    ) -> None:
        codings = _codings(content_encoding)
        self.sse = sse
        self.blocking = blocking  # on_end may wait on I/O: AsyncTappedStream runs it in a worker thread
        self.observer = observer
        self.on_end = on_end
        self.undecodable = codings is None
        self._inflate = _inflater(codings) if codings else None
        self.filtering = filtering and self._inflate is None and not self.undecodable
        self.body = bytearray()
        self.truncated = False
        self.ended = False
        self.event_errors = 0
        self._partial = b""
        self._data: list[str] = []
        self._raw: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        """Watch ``chunk``; returns the bytes to pass on to the reader."""
        data = self.decode(chunk)
        if data is None:
            return chunk
        if not self.sse:
            if len(self.body) + len(data) > MAX_JSON_BODY_BYTES:
                self.truncated = True
            else:
                self.body += data
            return chunk
        out = self._lines(self._partial + data)
        return out if self.filtering else chunk

    def flush(self) -> bytes:
        """At the end of the body: the last event without its blank line, and what is left to pass on."""
        if self.ended or not self.sse or self.undecodable:
            return b""
        out = b""
        if self._partial:
            out = self._lines(self._partial + b"\n")
        out += self._dispatch()
        return out if self.filtering else b""

    def decode(self, chunk: bytes) -> bytes | None:
        """``chunk`` with the body's content codings undone, as the client reads it; None once the
        body has ended or cannot be decoded (a chunk that fails to decode marks it so)."""
        if self.ended or self.undecodable:
            return None
        try:
            return self._inflate(chunk) if self._inflate is not None else chunk
        except _DECODE_ERRORS:
            self.undecodable = True
            return None

    def deliver(self, data: str) -> bool:
        """Hand one event's data to the observer; False when it drops the event. A malformed event
        is counted (``event_errors``), never raised: it must not break the application's stream."""
        if self.observer is None:
            return True
        try:
            return self.observer.on_event(data)
        except Exception:
            self.event_errors += 1
            return True

    def end(self, complete: bool, error: BaseException | None = None) -> None:
        """The body ended (``complete``: read to its end); runs ``on_end`` once."""
        if self.claim_end():
            self.on_end(self, complete, error)

    def claim_end(self) -> bool:
        """Mark the body ended; True for the one caller that must then run ``on_end``."""
        if self.ended:
            return False
        self.ended = True
        return True

    async def end_async(self, complete: bool, error: BaseException | None = None) -> None:
        """:meth:`end` from async code: a blocking ``on_end`` runs in a worker thread, off the event loop."""
        if not self.blocking:
            self.end(complete, error)
        elif self.claim_end():
            await asyncio.to_thread(self.on_end, self, complete, error)

    def end_detached(self, complete: bool, error: BaseException | None = None) -> None:
        """:meth:`end` where it cannot be awaited (a body closed mid-iteration, or collected): a
        blocking ``on_end`` is handed to the running event loop's executor rather than run on the
        loop's thread; without a running loop (collected elsewhere) it runs here."""
        if not self.blocking:
            self.end(complete, error)
            return
        if not self.claim_end():
            return
        try:
            asyncio.get_running_loop().run_in_executor(None, self.on_end, self, complete, error)
        except RuntimeError:  # no loop running in this thread, or its executor is shut down
            self.on_end(self, complete, error)

    def _lines(self, data: bytes) -> bytes:
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = bytearray()
        for line in lines:
            text = line.rstrip(b"\r")
            if self.filtering:
                self._raw.append(line + b"\n")
            if not text:
                out += self._dispatch()
            elif text.startswith(b"data:"):
                value = text[5:]
                self._data.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))
        return bytes(out)

    def _dispatch(self) -> bytes:
        keep = self.deliver("\n".join(self._data)) if self._data else True
        self._data.clear()
        raw = b"".join(self._raw) if keep else b""
        self._raw.clear()
        return raw


class TappedStream(httpx2.SyncByteStream):
    """A response body that feeds a :class:`BodyTap` as the application reads it."""

    def __init__(self, inner: httpx2.SyncByteStream, tap: BodyTap) -> None:
        self._inner = inner
        self.tap = tap

    @property
    def elapsed(self) -> timedelta | None:
        return getattr(self._inner, "elapsed", None)

    @property
    def stream_observer(self) -> Any:
        """The anthropic SDK's tracing looks for this on ``response.stream``."""
        return getattr(self._inner, "stream_observer", None)

    def __iter__(self) -> Iterator[bytes]:
        tap = self.tap
        try:
            for chunk in self._inner:
                out = tap.feed(chunk)
                if out:
                    yield out
            tail = tap.flush()
            if tail:
                yield tail
        except BaseException as exc:
            tap.end(False, exc)
            raise
        tap.end(True)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self.tap.end(False)

    def __del__(self) -> None:
        # The application may drop the response without reading or closing it.
        tap = getattr(self, "tap", None)
        if tap is not None and not tap.ended:
            tap.end(False)


class AsyncTappedStream(httpx2.AsyncByteStream):
    """The async twin of :class:`TappedStream`."""

    def __init__(self, inner: httpx2.AsyncByteStream, tap: BodyTap) -> None:
        self._inner = inner
        self.tap = tap

    @property
    def elapsed(self) -> timedelta | None:
        return getattr(self._inner, "elapsed", None)

    @property
    def stream_observer(self) -> Any:
        return getattr(self._inner, "stream_observer", None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        tap = self.tap
        chunks = self._inner.__aiter__()
        try:
            async for chunk in chunks:
                out = tap.feed(chunk)
                if out:
                    yield out
            tail = tap.flush()
            if tail:
                yield tail
        except GeneratorExit as exc:  # closed mid-iteration: finish at once, awaiting nothing
            tap.end_detached(False, exc)
            raise
        except BaseException as exc:
            await tap.end_async(False, exc)
            raise
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await tap.end_async(True)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await self.tap.end_async(False)

    def __del__(self) -> None:
        tap = getattr(self, "tap", None)
        if tap is not None and not tap.ended:
            tap.end_detached(False)


__all__ = ["AsyncTappedStream", "BodyTap", "EventObserver", "TappedStream"]
