"""The call-guard's Anthropic edge: an ``anthropic`` SDK middleware.

:class:`~costwarden.enforcers.callguard.CallGuard` *is* an ``anthropic.Middleware`` (when the SDK is
installed); its ``handle`` / ``handle_async`` land here::

    client = anthropic.Anthropic(middleware=[guard])          # or AsyncAnthropic(middleware=[guard])
    with attribution(feature="search", user="u-123"):
        client.messages.create(...)                           # also messages.stream(...), stream=True

What it guards: ``POST /v1/messages`` (plain, ``stream=True`` and ``messages.stream``; the beta
surface too) and ``POST /v1/messages/batches``; batch results downloads are read along to settle
the batch. Everything else (count_tokens, models, files, batch retrieval) passes through untouched.

* The middleware runs once per HTTP attempt inside the SDK's retry loop; the SDK's per-call
  idempotency key (set once before that loop) and ``retries_taken`` tie attempts to one logical
  call, so retries reuse its decision, rewritten body and reservation.
* A rewritten body goes out as a new ``APIRequest`` (a shallow copy of the options with the new
  body; the caller's request is not changed). A ``max_tokens`` clamp that leaves extended
  thinking's ``budget_tokens`` at or above it (which the API refuses) lowers the budget with it, or
  turns thinking off when no 1,024-token budget fits (not with interleaved thinking).
* ``AnthropicBedrock`` / ``AnthropicVertex`` clients take the same middleware: their calls are
  judged, priced and reported as provider ``bedrock`` / ``vertex_ai`` (their model ids and prices).
  Bedrock's streams are AWS event streams, not SSE: their frames are decoded as they pass
  (:mod:`.bedrock_stream`) and carry the same events, read the same way.
* Non-streamed responses are priced from the body the SDK already read. Streamed ones are priced
  as the application reads them: the response's byte stream is wrapped, and its events are read
  by :mod:`.anthropic_stream`.
* Message Batches: every request in the batch is judged and rewritten on its own, at the batch
  rate; any denied request refuses the whole batch. One reservation holds all of them; once the
  batch is created it is kept under the batch's id and settled from the real usage when the
  results are read (``GET .../messages/batches/<id>/results``), in this process or another —
  see :mod:`.batch_settle`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from costwarden.adapters import anthropic as adapter
from costwarden.adapters.eventstream import CONTENT_TYPE as EVENT_STREAM
from costwarden.enforcers import batch_settle
from costwarden.enforcers.anthropic_stream import AnthropicStream, completion, stream_end
from costwarden.enforcers.attempt import (
    charge_json_body,
    max_retries_of,
    rejected_rewrites,
    request_was_sent,
    retryable_exception,
    safely,
    should_retry_status,
)
from costwarden.enforcers.bedrock_stream import BedrockStreamTap
from costwarden.enforcers.bodytap import AsyncTappedStream, BodyTap, TappedStream
from costwarden.enforcers.guarded_call import GuardedCall, ProviderEdge
from costwarden.enforcers.judging import replace_item
from costwarden.enforcers.raw_headers import content_headers
from costwarden.errors import AdapterError

if TYPE_CHECKING:
    import httpx2
    from anthropic import APIRequest
    from anthropic._middleware import AsyncCallNext, CallNext
    from anthropic._response import APIResponse, AsyncAPIResponse

    from costwarden.enforcers.callguard import CallGuard


def _batch_items(body: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise AdapterError("Message Batches body has no 'requests' list")
    for index, item in enumerate(requests):
        params = item.get("params") if isinstance(item, Mapping) else None
        if not isinstance(params, Mapping):
            raise AdapterError(f"Message Batches request {index} has no 'params' object")
        yield f"/requests/{index}/params", params


MESSAGES = ProviderEdge(adapter.PROVIDER, adapter.subject_from_request, adapter.usage_from_response)
BATCHES = ProviderEdge(adapter.PROVIDER, adapter.subject_from_request, adapter.usage_from_response, _batch_items)
PLATFORM_MESSAGES = {
    name: ProviderEdge(name, partial(adapter.subject_from_request, provider=name), adapter.usage_from_response)
    for name in ("bedrock", "vertex_ai")
}
"""Messages sent through ``AnthropicBedrock`` / ``AnthropicVertex``: judged, priced and reported as
that platform's (its model ids, its prices), with the same body and usage as Anthropic's."""
_PLATFORM_MODULES = (("anthropic.lib.bedrock", "bedrock"), ("anthropic.lib.vertex", "vertex_ai"))
INTERLEAVED_THINKING = "interleaved-thinking-"


def edge_for(method: str, url: str) -> ProviderEdge | None:
    """The edge for a request, or None for endpoints the guard leaves alone."""
    key = (method, url)
    if key in _EDGES:
        return _EDGES[key]
    edge = _edge_for(method, url)
    if len(_EDGES) < 1_024:  # a client calls a handful of URLs; ids in paths could make many
        _EDGES[key] = edge
    return edge


_EDGES: dict[tuple[str, str], ProviderEdge | None] = {}
_WARNED: set[str] = set()  # the rewrites a server was seen to reject, warned about once per process


def _edge_for(method: str, url: str) -> ProviderEdge | None:
    if method.lower() != "post":
        return None
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/messages"):
        return MESSAGES
    if path.endswith("/messages/batches"):
        return BATCHES
    return None


def handle(guard: CallGuard, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
    """The sync middleware: judge, reserve, send, then settle from the response or its stream."""
    plan = _plan(guard, request, call_next)
    if plan is None:
        return batch_settle.watch_results(guard, request, call_next(request), TappedStream)
    call, attempt = plan
    try:
        response = call_next(attempt)
    except BaseException as exc:
        _failed(guard, call, request, exc, call_next)
        guard.attempt_ended(call)
        raise
    if _unread_batch(call, response.http_response):
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            response.http_response.read()
    safely(call, _after, guard, call, request, response.http_response, TappedStream, call_next)
    guard.attempt_ended(call)
    return response


async def handle_async(guard: CallGuard, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
    """The async middleware: the same steps. Besides the HTTP attempt, the steps that wait on the
    ledger or on sinks (judging and reserving, settling or releasing) are awaited in a worker
    thread when those do I/O (``CallGuard.offload``), so the event loop is never blocked by them."""
    parts = _parts(request, call_next)
    if parts is None:
        return batch_settle.watch_results(guard, request, await call_next(request), AsyncTappedStream)
    edge, body, key = parts
    call = await guard.begin_async(edge, body, key=key, attempt=request.retries_taken)
    _fit_thinking(call, body, request, call_next)
    attempt = _outgoing(call, request, body)
    try:
        response = await call_next(attempt)
    except BaseException as exc:
        await guard.finish_async(call, _failed, guard, call, request, exc, call_next)
        guard.expect_retry(call, _response_headers(exc))
        guard.attempt_ended(call)
        raise
    if _unread_batch(call, response.http_response):
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            await response.http_response.aread()
    await guard.finish_async(call, safely, call, _after, guard, call, request, response.http_response,
                             AsyncTappedStream, call_next)
    guard.expect_retry(call, response.http_response.headers)
    guard.attempt_ended(call)
    return response


def _response_headers(exc: BaseException) -> Any:
    """The headers of the response behind a failed attempt (the SDK times its retry by them), if any."""
    return getattr(getattr(exc, "response", None), "headers", None)


def _unread_batch(call: GuardedCall, http: httpx2.Response) -> bool:
    """A created batch whose small JSON body, with its id, is not read yet (``.with_streaming_response``);
    it is read now, so that the batch's hold is kept under its id (the caller still reads the body)."""
    return bool(call.batch_requests or call.edge is BATCHES) and http.is_success and not http.is_closed


def _plan(guard: CallGuard, request: APIRequest, call_next: Any) -> tuple[GuardedCall, APIRequest] | None:
    parts = _parts(request, call_next)
    if parts is None:
        return None
    edge, body, key = parts
    call = guard.begin(edge, body, key=key, attempt=request.retries_taken)
    _fit_thinking(call, body, request, call_next)
    return call, _outgoing(call, request, body)


def _parts(request: APIRequest, call_next: Any) -> tuple[ProviderEdge, Mapping[str, Any], str] | None:
    """The edge, body and logical-call key of a request the guard judges; None for others.

    The middleware sees the request before the client shapes it for its platform (Bedrock and
    Vertex move the model into the URL later), so a Messages call of an ``AnthropicBedrock`` or
    ``AnthropicVertex`` client is recognised by its client and judged as that platform's."""
    edge = edge_for(request.method, request.url)
    body = request.json
    if edge is None or not isinstance(body, Mapping):
        return None
    if edge is MESSAGES:
        edge = _messages_edge(call_next)
    return edge, body, request.options.idempotency_key or f"call-{id(request.options)}"


def _messages_edge(call_next: Any) -> ProviderEdge:
    """The Messages edge of the client whose chain ``call_next`` is: found once per chain (the SDK
    builds a client's chain once) and kept on the chain's function, as looking for the client walks
    closures (~150 bytecodes a call)."""
    edge: ProviderEdge | None = getattr(call_next, _EDGE_ATTR, None)
    if edge is None:
        edge = PLATFORM_MESSAGES.get(platform_of(client_of(call_next)), MESSAGES)
        with contextlib.suppress(AttributeError, TypeError):  # a callable that takes no attributes
            setattr(call_next, _EDGE_ATTR, edge)
    return edge


_EDGE_ATTR = "_costwarden_messages_edge"


def platform_of(client: Any) -> str:
    """``bedrock`` / ``vertex_ai`` for the SDK's Bedrock and Vertex clients, else ``anthropic``."""
    module = type(client).__module__ if client is not None else ""
    return next((name for prefix, name in _PLATFORM_MODULES if module.startswith(prefix)), adapter.PROVIDER)


def _fit_thinking(call: GuardedCall, asked: Mapping[str, Any], request: APIRequest, call_next: Any) -> None:
    """Keep a rewritten request valid for extended thinking (:func:`~.adapters.anthropic.fit_thinking`):
    a clamped ``max_tokens`` must stay above ``thinking.budget_tokens``, in each request of a batch too."""
    if call.body is asked:
        return
    interleaved = _interleaved(request, call_next)
    if call.edge.batch_items is None:
        body, note = adapter.fit_thinking(call.body, asked, interleaved=interleaved)
        notes = [note] if note else []
    else:
        body, notes = call.body, []
        for (pointer, params), (_, was) in zip(call.edge.batch_items(call.body), call.edge.batch_items(asked),
                                                strict=True):
            fitted, note = adapter.fit_thinking(params, was, interleaved=interleaved)
            if note:
                body = replace_item(body, pointer, fitted)
                notes.append(f"{pointer}: {note}")
    if notes:
        call.body = body
        call.rewrites = (*call.rewrites, *notes)


def _interleaved(request: APIRequest, call_next: Any) -> bool:
    """Whether the request asks for interleaved thinking (an ``anthropic-beta`` header, per call or
    the client's)."""
    client_headers = getattr(client_of(call_next), "_custom_headers", None)
    for headers in (request.headers, client_headers):
        if isinstance(headers, Mapping):
            beta = next((v for k, v in headers.items() if k.lower() == "anthropic-beta"), None)
            if isinstance(beta, str) and INTERLEAVED_THINKING in beta:
                return True
    return False


def _outgoing(call: GuardedCall, request: APIRequest, body: Mapping[str, Any]) -> APIRequest:
    """The request to send: the caller's, or a copy carrying the rewritten body."""
    if call.body is body:
        return request
    from anthropic import APIRequest

    options = request.options.model_copy(update={"json_data": dict(call.body)})
    return APIRequest(
        options=options,
        cast_to=request.cast_to,
        stream=request.stream,
        stream_cls=request.stream_cls,
        retries_taken=request.retries_taken,
    )


def _max_retries(guard: CallGuard, request: APIRequest, call_next: Any) -> int:
    """The request's ``max_retries`` option, else the client's, else the guard's."""
    if isinstance(request.max_retries, int):
        return request.max_retries
    found = client_max_retries(call_next)
    return found if found is not None else max_retries_of(None, guard)


def client_max_retries(call_next: Any) -> int | None:
    """The ``max_retries`` of the client whose middleware chain ``call_next`` belongs to (:func:`client_of`).
    None when the SDK's structure differs (the guard's own ``max_retries`` is used then, and a
    lingering hold is released at the next call or its TTL)."""
    retries = getattr(client_of(call_next), "max_retries", None)
    return retries if isinstance(retries, int) and not isinstance(retries, bool) else None


def client_of(call_next: Any, *, depth: int = 8) -> Any:
    """The client whose middleware chain ``call_next`` belongs to, or None.

    The SDK's chain is built from closures over the client; the middleware API does not pass the
    client, so it is found there."""
    todo, seen = [call_next], 0
    while todo and seen < depth:
        seen += 1
        for cell in getattr(todo.pop(), "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if hasattr(value, "_middleware") and hasattr(value, "max_retries"):
                return value
            if callable(value) and getattr(value, "__closure__", None):
                todo.append(value)
    return None


def _failed(guard: CallGuard, call: GuardedCall, request: APIRequest, exc: BaseException, call_next: Any) -> None:
    final = not retryable_exception(exc) or request.retries_taken >= _max_retries(guard, request, call_next)
    call.failed(exc, sent=request_was_sent(exc), final=final)


def _after(
    guard: CallGuard,
    call: GuardedCall,
    request: APIRequest,
    http: httpx2.Response,
    stream_cls: type[Any],
    call_next: Any,
) -> None:
    call.status_code = status = http.status_code
    if not 200 <= status < 300:
        retry = should_retry_status(http.status_code, http.headers.get("x-should-retry"))
        final = not retry or request.retries_taken >= _max_retries(guard, request, call_next)
        note = rejected_rewrites(call, http.status_code, _WARNED) if final else None
        call.error_status(http.status_code, final=final, note=note)
        return
    if call.batch_requests or call.edge is BATCHES:
        batch_settle.submitted(guard, call, http)
        return
    if http.is_closed and not (request.stream or call.subject.request.stream):
        # the usual non-streamed call, read by the SDK already: a JSON body (its content type is
        # not looked up, which costs httpx a scan of every header)
        _charge_read(call, http)
        return
    content_type, content_encoding = content_headers(http.headers)
    framed = EVENT_STREAM in content_type  # an AnthropicBedrock stream: the same events, in AWS frames
    streamed = framed or "text/event-stream" in content_type
    content: bytes | None = None
    if http.is_closed:  # the SDK, or a transport answering from memory, read the whole body already
        if not streamed:
            _charge_read(call, http)
            return
        try:
            content = http.content
        except Exception:  # closed unread: nothing to price from
            call.charge_estimate(error="response body was closed unread")
            return
    observer = AnthropicStream() if streamed else None
    tap_cls = BedrockStreamTap if framed else partial(BodyTap, sse=streamed)
    tap = tap_cls(
        content_encoding=None if content is not None else content_encoding,
        observer=observer,
        on_end=partial(stream_end, call, observer),
        blocking=guard.finishing_blocks,
    )
    if content is not None:  # a stream answered from memory: its events, read now (the body is decoded)
        tap.feed(content)
        tap.flush()
        tap.end(True)
        return
    http.stream = stream_cls(http.stream, tap)


def _charge_read(call: GuardedCall, http: httpx2.Response) -> None:
    """Charge a JSON response the SDK has read (or closed unread: the estimate, with a note)."""
    try:
        content = http.content
    except Exception:  # closed unread: nothing to price from
        call.charge_estimate(error="response body was closed unread")
        return
    charge_json_body(call, content, adapter.usage_from_response, completion)


__all__ = ["BATCHES", "MESSAGES", "PLATFORM_MESSAGES", "AnthropicStream", "client_of", "edge_for", "handle",
           "handle_async", "platform_of"]
