"""The call-guard's OpenAI edge: an ``httpx2`` transport for the ``openai`` SDK.

The ``openai`` SDK has no middleware, so the guard sits one level down, in the HTTP transport of
the client the SDK is given (the same :class:`CallGuard` core and ledger as the Anthropic edge)::

    client = openai.OpenAI(http_client=openai_http_client(guard))        # or:
    client = guard_openai(openai.OpenAI(), guard)                        # AsyncOpenAI too
    with attribution(feature="search", user="u-123"):
        client.chat.completions.create(...)

Guarded: ``POST …/chat/completions`` and ``POST …/responses`` (plain and streamed),
``POST …/embeddings`` (``embeddings.create``: its estimated input is reserved, its
``usage.prompt_tokens`` settled; :mod:`costwarden.adapters.openai_embeddings`) and the legacy
``POST …/completions`` (``completions.create``, plain and streamed, as vLLM and TGI are called:
:mod:`costwarden.adapters.openai_completions`), ``POST …/images/generations`` and
``POST …/images/edits`` (``images.generate`` / ``images.edit``: the prompt, each input image by its
pixel size and ``n`` images at their size and quality are reserved, the ``usage`` settled:
:mod:`costwarden.adapters.openai_images`), the Audio API (``POST …/audio/transcriptions``,
``…/audio/translations``, ``…/audio/speech``: seconds, characters or tokens reserved, settled from
the usage or a documented estimate: :mod:`costwarden.adapters.openai_audio`, :mod:`.openai_audio`),
Responses compaction (``POST …/responses/compact``: :mod:`costwarden.adapters.openai_compaction`)
and Batch API jobs (``POST …/batches``, judged from
their input file, settled when their output file is read: :mod:`.openai_batches`); other requests
pass through. Those of them that spend money (image variations, videos,
fine-tuning jobs: :data:`UNGUARDED_SPEND`) are neither judged, reserved,
counted against budgets nor reported: each transport logs a warning naming the endpoint the first
time one passes, so this is never silent (:mod:`.openai_endpoints`). ``provider=`` names an
OpenAI-compatible API (``"vllm"``, ``"x-ai"``...) for pricing. :func:`guard_openai` keeps a
client's own ``http_client`` (proxies, certificates, a custom transport) by guarding each of its
transports.

* Retries: the SDK's retry loop calls the transport once per attempt in the same thread or task;
  ``x-stainless-retry-count`` > 0 and the same method, URL and body mark a retry of the call.
* A streamed Chat Completions or Completions request without ``stream_options.include_usage`` is
  rewritten to ask for it, because a stream without usage cannot be billed (other gateways record
  such calls at $0). The extra usage-only chunk (``choices: []``) is then removed from what the
  application reads, so code that indexes ``chunk.choices[0]`` keeps working; such requests are
  sent with ``Accept-Encoding: identity`` so the events can be filtered. The event lists the rewrite;
  a 4xx answer to a rewritten request is warned about and noted (:func:`.attempt.rejected_rewrites`).
* A rewritten body is re-serialised as compact JSON with a new ``Content-Length``. An image edit's
  ``multipart/form-data`` body is read (:mod:`costwarden.adapters.multipart`) and sent byte for
  byte as it came: one that would pass only rewritten (a downgrade) is refused instead.
* A response a transport answers from memory (whole, as test doubles do) is read as it arrives, filtered alike.
* A Responses call in background mode keeps its hold until a read of the response
  (``responses.retrieve``) shows it ended, then settles its real usage (``background_responses.py``).
* Streams are priced as the application reads them, from the usage chunk (Chat Completions,
  Completions) or ``response.completed`` / ``response.incomplete`` / ``response.failed``
  (Responses). A stream that ends before its usage is charged the estimated input plus the output
  its deltas show; a reasoning call's, its reserved worst case (hidden reasoning is billed:
  ``openai_stream.py``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Hashable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx2

from costwarden.adapters import openai as adapter
from costwarden.adapters.multipart import boundary_of, parse_form
from costwarden.enforcers import background_responses as background
from costwarden.enforcers import openai_batch_reads as batch_reads
from costwarden.enforcers import openai_batches as batches
from costwarden.enforcers.attempt import safely
from costwarden.enforcers.bodytap import AsyncTappedStream, BodyTap, TappedStream
from costwarden.enforcers.guarded_call import GuardedCall, ProviderEdge
from costwarden.enforcers.openai_attempt import attempt_of, error_answer, sdk_max_retries
from costwarden.enforcers.openai_attempt import failed as _failed
from costwarden.enforcers.openai_audio import audio_tap
from costwarden.enforcers.openai_endpoints import (
    OPENAI,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    UNGUARDED_SPEND,
    edge,
    edges,
    form_body,
    guarded_path,
    is_guarded,
    route,
    sends_form,
    unguarded_spend,
    usage_on_request,
    warn_unguarded_spend,
)
from costwarden.enforcers.openai_stream import OpenAIStream, stream_end
from costwarden.enforcers.raw_headers import content_headers
from costwarden.errors import AdapterError, PolicyViolation

if TYPE_CHECKING:
    from costwarden.enforcers.callguard import CallGuard

log = logging.getLogger("costwarden.callguard")
INCLUDE_USAGE = "add stream_options.include_usage"


class GuardedTransport(httpx2.BaseTransport):
    """An ``httpx2`` transport that guards LLM calls, then hands them to ``transport``."""

    def __init__(self, guard: CallGuard, transport: httpx2.BaseTransport | None = None, *,
                 provider: str = adapter.PROVIDER, max_retries: int | None = None, close_inner: bool = True) -> None:
        self.guard = guard
        self.edges = edges(provider, pricer=guard.pricer)
        self.max_retries = guard.max_retries if max_retries is None else max_retries
        self._inner = transport if transport is not None else httpx2.HTTPTransport()
        self._close_inner = close_inner
        self._warned: set[str] = set()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if batches.creates_batch(request.method, path):  # the Batch API: judged from its input file
            return batches.create(self.guard, self.edges.chat.name, self._inner.handle_request, request,
                                  self.max_retries)
        plan = _plan(self.guard, route(self.edges, path), request, path) if guarded_path(request.method, path) else None
        if plan is None:
            warn_unguarded_spend(self._warned, request)
            response = self._inner.handle_request(request)
            read = background.read_response_id(request.method, request.url.path)
            if read is not None:  # a read of a background response may settle it
                background.watch(self.guard, self.edges.chat.name, read, response, TappedStream)
            elif batch_reads.watched(request.method, path):  # a batch read, or its output file's, may settle it
                batch_reads.watch(self.guard, self.edges.chat.name, request, response, TappedStream)
            return response
        call, outgoing, attempt, injected = plan
        try:
            response = self._inner.handle_request(outgoing)
        except BaseException as exc:
            _failed(call, attempt, exc, sdk_max_retries(self.max_retries))
            self.guard.attempt_ended(call)
            raise
        retries = self.max_retries if 200 <= response.status_code < 300 else sdk_max_retries(self.max_retries)
        safely(call, _after, call, attempt, response, TappedStream, injected, retries, self._warned)
        self.guard.attempt_ended(call)
        return response

    def close(self) -> None:
        if self._close_inner:
            self._inner.close()


class AsyncGuardedTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`GuardedTransport`; only the HTTP attempt is awaited."""

    def __init__(self, guard: CallGuard, transport: httpx2.AsyncBaseTransport | None = None, *,
                 provider: str = adapter.PROVIDER, max_retries: int | None = None, close_inner: bool = True) -> None:
        self.guard = guard
        self.edges = edges(provider, pricer=guard.pricer)
        self.max_retries = guard.max_retries if max_retries is None else max_retries
        self._inner = transport if transport is not None else httpx2.AsyncHTTPTransport()
        self._close_inner = close_inner
        self._warned: set[str] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """As the sync transport; the steps that wait on the ledger or on sinks run in a worker
        thread when those do I/O (``CallGuard.offload``), so they never block the event loop."""
        guard, path = self.guard, request.url.path
        if batches.creates_batch(request.method, path):  # the Batch API: judged from its input file
            return await batches.create_async(guard, self.edges.chat.name, self._inner.handle_async_request, request,
                                              self.max_retries)
        parts = _parts(request, path) if guarded_path(request.method, path) else None
        if parts is None:
            warn_unguarded_spend(self._warned, request)
            response = await self._inner.handle_async_request(request)
            read = background.read_response_id(request.method, request.url.path)
            if read is not None:  # a read of a background response may settle it
                await guard.offload(background.watch, guard, self.edges.chat.name, read, response, AsyncTappedStream)
            elif batch_reads.watched(request.method, path):  # a batch read, or its output file's, may settle it
                await guard.offload(batch_reads.watch, guard, self.edges.chat.name, request, response,
                                    AsyncTappedStream)
            return response
        body, sent, key, attempt, injected = parts
        call = await guard.begin_async(route(self.edges, path), sent, key=key, attempt=attempt,
                                       rewrites=(INCLUDE_USAGE,) if injected else ())
        _fit_reasoning(call, sent)
        refused = _unsendable(call, request)
        if refused is not None:
            await guard.finish_async(call, partial(call.failed, sent=False, final=True), refused)
            guard.attempt_ended(call)
            raise refused
        keep = call.body is body or sends_form(request, path)
        outgoing = request if keep else _rebuilt(request, call.body, identity=injected)
        try:
            response = await self._inner.handle_async_request(outgoing)
        except BaseException as exc:
            await guard.finish_async(call, _failed, call, attempt, exc, sdk_max_retries(self.max_retries))
            guard.expect_retry(call)
            guard.attempt_ended(call)
            raise
        retries = self.max_retries if 200 <= response.status_code < 300 else sdk_max_retries(self.max_retries)
        await guard.finish_async(call, safely, call, _after, call, attempt, response, AsyncTappedStream, injected,
                                 retries, self._warned)
        guard.expect_retry(call, response.headers)
        guard.attempt_ended(call)
        return response

    async def aclose(self) -> None:
        if self._close_inner:
            await self._inner.aclose()


def openai_http_client(
    guard: CallGuard, *, provider: str = adapter.PROVIDER, max_retries: int | None = None, **kwargs: Any
) -> httpx2.Client:
    """An ``httpx2.Client`` with the SDK's defaults whose transport is guarded, for ``OpenAI(http_client=...)``.

    ``max_retries`` is the client's (default: the guard's, which is the SDK default of 2), so the
    hold of a call the SDK stops retrying is released at once.
    """
    from openai import DefaultHttpxClient

    transport = GuardedTransport(guard, provider=provider, max_retries=max_retries)
    return DefaultHttpxClient(transport=transport, **kwargs)


def openai_async_http_client(
    guard: CallGuard, *, provider: str = adapter.PROVIDER, max_retries: int | None = None, **kwargs: Any
) -> httpx2.AsyncClient:
    """The async twin of :func:`openai_http_client`, for ``AsyncOpenAI(http_client=...)``."""
    from openai import DefaultAsyncHttpxClient

    transport = AsyncGuardedTransport(guard, provider=provider, max_retries=max_retries)
    return DefaultAsyncHttpxClient(transport=transport, **kwargs)


def guard_openai(client: Any, guard: CallGuard, *, provider: str = adapter.PROVIDER) -> Any:
    """A copy of an ``OpenAI`` or ``AsyncOpenAI`` client (same key, base URL, retries) whose calls
    are guarded.

    A client made with an ``http_client`` of its own (a proxy, certificates, timeouts, a custom
    transport) keeps it: the copy's HTTP client is a shallow copy of that one, with the guard
    around each of its transports. The two share connection pools, and closing the copy leaves
    them open for the original. A client with the SDK's default HTTP client gets a new one, which
    the copy owns: close the copy when done."""
    from openai import AsyncOpenAI

    retries = client.max_retries
    is_async = isinstance(client, AsyncOpenAI)
    http = getattr(client, "_client", None)
    if isinstance(http, httpx2.Client | httpx2.AsyncClient) and not _sdk_default(http):
        copied = _guarded_copy(http, guard, provider, retries, is_async)
        if copied is not None:
            return client.with_options(http_client=copied)
    if is_async:
        return client.with_options(http_client=openai_async_http_client(guard, provider=provider, max_retries=retries))
    return client.with_options(http_client=openai_http_client(guard, provider=provider, max_retries=retries))


def _sdk_default(http: httpx2.Client | httpx2.AsyncClient) -> bool:
    """Whether the SDK made this HTTP client itself (its wrapper classes close it when collected,
    so the guard must not share its transports: it makes a client of its own instead)."""
    return type(http).__name__ in ("SyncHttpxClientWrapper", "AsyncHttpxClientWrapper")


def _guarded_copy(http: Any, guard: CallGuard, provider: str, retries: int, is_async: bool) -> Any:
    """A shallow copy of ``http`` whose default and mounted transports (proxies) are guarded; None
    (with a warning) where this ``httpx2`` keeps its transports elsewhere."""
    if not isinstance(getattr(http, "_transport", None), httpx2.BaseTransport | httpx2.AsyncBaseTransport) or \
            not isinstance(getattr(http, "_mounts", None), dict):
        log.warning("guard_openai: could not find the transports of the client's own http_client; the guarded "
                    "copy uses a new HTTP client with the SDK's defaults (build one with openai_http_client(guard, "
                    "...) to keep your settings)")
        return None
    cls: Any = AsyncGuardedTransport if is_async else GuardedTransport

    def wrap(transport: Any) -> Any:
        if transport is None:
            return None
        return cls(guard, transport, provider=provider, max_retries=retries, close_inner=False)

    guarded = copy.copy(http)
    guarded._transport = wrap(http._transport)
    guarded._mounts = {pattern: wrap(transport) for pattern, transport in http._mounts.items()}
    return guarded


def _plan(
    guard: CallGuard, edge: ProviderEdge, request: httpx2.Request, path: str
) -> tuple[GuardedCall, httpx2.Request, int, bool] | None:
    parts = _parts(request, path)
    if parts is None:
        return None
    body, sent, key, attempt, injected = parts
    call = guard.begin(edge, sent, key=key, attempt=attempt, rewrites=(INCLUDE_USAGE,) if injected else ())
    _fit_reasoning(call, sent)
    refused = _unsendable(call, request)
    if refused is not None:
        call.failed(refused, sent=False, final=True)  # releases the hold, reports the refusal
        guard.attempt_ended(call)
        raise refused
    if call.body is body or sends_form(request, path):  # a retry's form: the call's first body is the one judged
        return call, request, attempt, injected
    return call, _rebuilt(request, call.body, identity=injected), attempt, injected


def _fit_reasoning(call: GuardedCall, sent: Mapping[str, Any]) -> None:
    """Keep a downgraded request valid (:func:`~costwarden.adapters.openai.fit_reasoning`)."""
    if call.body is sent:
        return
    body, note = adapter.fit_reasoning(call.body, sent)
    if note:
        call.body = body
        call.rewrites = (*call.rewrites, note)


def _parts(
    request: httpx2.Request, path: str
) -> tuple[Mapping[str, Any], Mapping[str, Any], Hashable, int, bool] | None:
    """(the body, the body to judge and send, the logical-call key, the attempt, whether
    ``include_usage`` was added); None for a body that is not a JSON object. An image edit's form
    is read into its body (:func:`~costwarden.adapters.openai_images.edit_body`). ``path`` is the
    request's URL path (read once: httpx unquotes it on every read)."""
    raw = request.read()
    keyed = raw
    if sends_form(request, path):  # an image edit or an audio file; a retry's form has a boundary of its own
        content_type = request.headers.get("content-type", "")
        body: Any = form_body(path, parse_form(content_type, raw))
        keyed = raw.replace(boundary_of(content_type), b"")
    else:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise AdapterError(f"OpenAI request body is not JSON ({exc}); the call-guard cannot judge it") from None
    if not isinstance(body, Mapping):
        return None
    # the logical call's key, compared with an SDK retry's (method, URL and body alike): no hash is
    # taken, since keys are only ever compared, and only when a retry comes
    key = (request.method, request.url, keyed)
    sent, injected = _with_include_usage(body, path)
    return body, sent, key, attempt_of(request), injected


def _unsendable(call: GuardedCall, request: httpx2.Request) -> PolicyViolation | None:
    """The refusal of a form that passes only rewritten: a ``multipart/form-data`` body is sent as
    it came, never rebuilt (a batch's input file is another matter: a rewritten copy is uploaded,
    :mod:`.openai_batch_upload`)."""
    if not call.rewrites or not sends_form(request):
        return None
    done = "; ".join(call.rewrites)
    return PolicyViolation(call.decision, f"{call.edge.name} image edit refused before sending: it passes the policies "
                           f"only rewritten ({done}); the call-guard does not rewrite a multipart/form-data body — "
                           "send the request as the policies want it", request=call.body)


def _with_include_usage(body: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], bool]:
    if body.get("stream") is not True or not usage_on_request(path, body):
        return body, False
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage") is True:
        return body, False
    merged = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
    return {**body, "stream_options": merged}, True


def _rebuilt(request: httpx2.Request, body: Mapping[str, Any], *, identity: bool) -> httpx2.Request:
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    drop = {"content-length", "accept-encoding"} if identity else {"content-length"}
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
    if identity:
        headers.append(("accept-encoding", "identity"))
    return httpx2.Request(request.method, request.url, headers=headers, content=content, extensions=request.extensions)


def _after(
    call: GuardedCall,
    attempt: int,
    response: httpx2.Response,
    stream_cls: type[Any],
    injected: bool,
    max_retries: int,
    warned: set[str],
) -> None:
    if error_answer(call, attempt, response, max_retries, warned):
        return
    content_type, content_encoding = content_headers(response.headers)
    sse = "text/event-stream" in content_type
    observer: Any
    if call.subject.kind == "audio":  # transcriptions and speech: usage in their own shapes, or none
        observer, on_end = audio_tap(call, sse)
    else:
        observer = OpenAIStream(drop_usage_chunk=injected) if sse else None
        on_end = partial(stream_end, call, observer)
    read = response.is_closed  # answered from memory (a test double's transport): its body is decoded
    tap = BodyTap(
        sse=sse,
        content_encoding=None if read else content_encoding,
        observer=observer,
        on_end=on_end,
        filtering=injected,
        blocking=call.guard.finishing_blocks,
    )
    if not read:
        response.stream = stream_cls(response.stream, tap)
        return
    passed = tap.feed(response.content) + tap.flush()
    if injected:  # what the application reads, without the usage chunk it did not ask for
        response._content = passed
    tap.end(True)


__all__ = [
    "INCLUDE_USAGE",
    "OPENAI",
    "OPENAI_COMPLETIONS",
    "OPENAI_EMBEDDINGS",
    "UNGUARDED_SPEND",
    "AsyncGuardedTransport",
    "GuardedTransport",
    "edge",
    "guard_openai",
    "is_guarded",
    "openai_async_http_client",
    "openai_http_client",
    "unguarded_spend",
]
