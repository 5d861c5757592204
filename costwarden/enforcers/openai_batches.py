"""OpenAI Batch API jobs through the call-guard's transport — the OpenAI edge of ``batch_settle.py``.

The application uploads a JSON Lines file of requests (``files.create(purpose="batch")``), creates
a batch from it (``batches.create(input_file_id=..., endpoint=...)``), polls it
(``batches.retrieve``) until it has ended, and reads its output file (``files.content``). So:

* **At creation** (``POST …/batches``) the transport reads the input file first — one extra
  request, ``GET …/files/<input_file_id>/content`` through the same inner transport with the
  same credentials — and judges each line's ``body`` with the subject builder of the batch's
  ``endpoint`` (Chat Completions, Responses, Embeddings, legacy Completions) at the batch rate.
  Any denied request refuses the whole batch before it is created. One reservation holds the worst
  case of all of them; once the API answers with the batch's id it moves to ``cw-oai-batch-<id>`` with a
  marker hold on ``costwarden-openai-batch:<id>`` (another provider's: ``costwarden-<provider>-batch:<id>``,
  :func:`marker_prefix`), exactly as a Message Batch's does
  (:func:`~costwarden.enforcers.batch_settle.submitted`, ``deferred.py``). Batches to Azure OpenAI
  name their ``endpoint`` without ``/v1`` (``/chat/completions``): they are judged alike (:func:`endpoint_of`).
* **Requests that pass only rewritten** (a ``maxOutputTokens`` clamp, a downgrade, with the
  reasoning parameters a downgraded model refuses dropped) are sent rewritten, as a single call's
  are: the transport uploads a rewritten copy of the input file (``POST …/files``, ``purpose=batch``,
  through the same inner transport with the same credentials) and sends the creation naming it
  (``openai_batch_upload.py``); the reservation holds the rewritten requests' worst case and the
  cost events list the rewrites (``/requests/<i>/params: clamp max_tokens to 256``). An upload that
  fails refuses the batch (``PolicyViolation``); nothing is created. ``CallGuard(apply_fixes=False)``
  refuses such a batch instead, as it refuses such a call. A copy that no batch was made from (the
  creation failed) is deleted (``DELETE …/files/<id>``); that of a batch that was created is kept,
  even once it has settled: the batch names it (``openai_batch_upload.py`` says why).
* **Attempts that failed once sent** (a timeout, a dropped connection, a 5xx) may each have made a
  batch: the SDK sends no idempotency key. When the call ends — a retry succeeded, or the SDK gave
  up — the transport lists the recent batches and holds each other one made from the same input
  file since the creation began as a created batch, settled from its own output
  (``openai_batch_duplicates.py``, which also says what happens when the listing fails).
* **A read of the input file that fails as the SDK retries** (429, 5xx) is answered as the creation
  attempt, so that the SDK retries the creation. **An input file that cannot be read or understood**
  (not found, not JSON Lines, a line
  without a ``body`` object, no lines) refuses the batch with an ``AdapterError`` when the guard
  enforces a budget: spend that cannot be judged is not allowed. Without one it goes ahead
  unjudged, with a warning. Batches to endpoints the guard does not price (images, videos) go
  ahead unjudged with a warning too; ``/v1/moderations`` is free.
* **Settled** when the application reads the batch's output file to its end through a guarded
  client (``files.content(batch.output_file_id)``): the transport learns which batch an output
  file belongs to from the batch objects it sees (``batches.retrieve``, ``batches.cancel``), so
  the batch must have been retrieved through a guarded client of this guard in this process.
  Each output line with a 2xx response is priced from its body's usage at the batch rate;
  lines with an error, and requests that never ran (failed, expired or cancelled batches), cost
  nothing. A batch that ended without an output file (failed validation, or nothing ran) is
  settled at $0 as soon as a read shows it. Settling is idempotent across processes on one
  ledger and emits one cost event per batch (``batch_settle.settle_tally``).
* **Never read**: ``guard.settle_pending_batches(openai_client)`` (or
  ``costwarden budget settle-batches --provider openai``) retrieves every batch the ledger still
  holds for and reads the output files of those that ended (``pending_batches.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx2

from costwarden.adapters import openai as adapter
from costwarden.enforcers import openai_batch_duplicates as duplicates
from costwarden.enforcers import openai_batch_upload as upload
from costwarden.enforcers.attempt import request_was_sent, safely
from costwarden.enforcers.batch_settle import BatchBook, submitted
from costwarden.enforcers.openai_attempt import (
    attempt_of,
    error_answer,
    failed,
    retries_answer,
    retries_exception,
    sdk_max_retries,
)
from costwarden.enforcers.openai_batch_input import enforces_budgets, input_requests, transient, unread_retry
from costwarden.enforcers.openai_batch_requests import content_request, run, run_async, with_input_file
from costwarden.enforcers.openai_endpoints import edge
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import PolicyViolation

if TYPE_CHECKING:
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall, ProviderEdge

log = logging.getLogger("costwarden.callguard")

MARKER_PREFIX = "costwarden-openai-batch:"
RESERVATION_PREFIX = "cw-oai-batch-"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT_APIS = {"/v1/chat/completions": "chat", "/v1/responses": "chat", "/v1/embeddings": "embeddings",
                 "/v1/completions": "completions"}
"""Batch endpoints the guard judges, and the subject builder (``openai_endpoints.edge``'s ``api``) of
each; Azure OpenAI names them without ``/v1`` (``/chat/completions``): :func:`endpoint_of`."""
FREE_ENDPOINTS = frozenset({"/v1/moderations"})
_SKIPPED = {"batch_expired": "expired", "batch_cancelled": "canceled"}


def openai_line(line: Mapping[str, Any]) -> tuple[str, str, TokenUsage | None] | None:
    """An output (or error) file line: ``{id, custom_id, response: {status_code, body}, error}``."""
    error, response = line.get("error"), line.get("response")
    if error is not None:  # never ran (expired, cancelled) or failed: not billed
        return (_SKIPPED.get(str(error.get("code")), "errored"), "", None) if isinstance(error, Mapping) else None
    status = response.get("status_code") if isinstance(response, Mapping) else None
    body = response.get("body") if isinstance(response, Mapping) else None
    if not isinstance(status, int) or not isinstance(body, Mapping):
        return None
    if not 200 <= status < 300:
        return "errored", "", None
    model = body.get("model")
    usage: TokenUsage | None
    try:
        usage = adapter.usage_from_response(body)
    except Exception:
        usage = None
    return "succeeded", model if isinstance(model, str) else "", usage


@lru_cache(maxsize=64)
def book(provider: str = adapter.PROVIDER) -> BatchBook:
    """The ledger names and line reader of the batches a transport for ``provider`` creates."""
    return BatchBook(provider, RESERVATION_PREFIX, marker_prefix(provider), openai_line)


def marker_prefix(provider: str = adapter.PROVIDER) -> str:
    """Where ``provider``'s batch markers live: :data:`MARKER_PREFIX` for OpenAI's, ``costwarden-<provider>-batch:``
    for another OpenAI-compatible API's, so that a sweep lists only the batches its client can read
    and prices them as its provider's."""
    return MARKER_PREFIX if provider == adapter.PROVIDER else f"costwarden-{provider}-batch:"


def _items(body: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for index, item in enumerate(body["requests"]):
        yield f"/requests/{index}/params", item["params"]


@lru_cache(maxsize=64)
def batch_edge(provider: str, api: str) -> ProviderEdge:
    """The edge judging a batch's requests: ``api``'s subject builder, over every input line."""
    return dataclasses.replace(edge(provider, api=api), batch_items=_items)


# --- creation ------------------------------------------------------------------------------------


def creates_batch(method: str, path: str) -> bool:
    return method.upper() == "POST" and path.rstrip("/").endswith("/batches")


class Job(NamedTuple):
    """A batch creation the guard judges: its input file, the edge of its endpoint, its call key,
    the attempt, and its ``endpoint`` as sent."""

    file_id: str
    edge: ProviderEdge
    key: str
    attempt: int
    endpoint: str


def job_of(provider: str, request: httpx2.Request) -> Job | None:
    """The job of a ``POST …/batches``; None for one the guard passes through (a body the API
    refuses, or an endpoint the guard does not price: warned when that one is billed)."""
    raw = request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, Mapping) or not isinstance(body.get("input_file_id"), str):
        return None  # the API answers 400: nothing is created, nothing spent
    endpoint = endpoint_of(body.get("endpoint"))
    api = ENDPOINT_APIS.get(endpoint)
    if api is None:
        if endpoint not in FREE_ENDPOINTS:
            log.warning("call-guard: a batch to %s is billed but not guarded: it is not judged, reserved, counted "
                        "against any budget or reported", endpoint)
        return None
    key = hashlib.blake2b(b"POST " + str(request.url).encode() + raw, digest_size=16).hexdigest()
    return Job(body["input_file_id"], batch_edge(provider, api), key, attempt_of(request), str(body.get("endpoint")))


def endpoint_of(value: object) -> str:
    """A batch's ``endpoint`` as OpenAI names it: Azure OpenAI's ``/chat/completions`` (its batches
    take the path without ``/v1``) is ``/v1/chat/completions``; a trailing ``/`` is dropped."""
    endpoint = str(value).rstrip("/")
    return endpoint if endpoint.startswith("/v1/") else f"/v1{endpoint}" if endpoint.startswith("/") else endpoint


def answered(call: GuardedCall, attempt: int, response: httpx2.Response, max_retries: int,
             listed: duplicates.Listed | None = None) -> None:
    """Record an error answer to an attempt of ``call`` (:func:`~.openai_attempt.error_answer`); ``listed``:
    the batches listed as the SDK gives up after earlier attempts failed once sent (``openai_batch_duplicates``)."""
    made = duplicates.creation(call)
    if listed is not None and made is not None:
        duplicates.account(call, made, listed, returned=None, gave_up=True, book=book(call.edge.name))
    error_answer(call, attempt, response, max_retries)


def gave_up(call: GuardedCall, exc: BaseException, listed: duplicates.Listed) -> None:
    """The last attempt of ``call`` raised ``exc``: hold the batches ``listed`` shows, charge the rest."""
    duplicates.gave_up(call, exc, listed, book(call.edge.name))


def outgoing(call: GuardedCall, job: Job, request: httpx2.Request,
             file_id: str | None) -> tuple[duplicates.Creation, httpx2.Request]:
    """The creation as this attempt sends it: naming the input file the call sends (``file_id``,
    uploaded by this attempt, for a new call's rewritten copy), and the call's creation record."""
    made = duplicates.creation(call) or duplicates.begin(call, file_id or job.file_id, job.endpoint)
    return made, request if made.file_id == job.file_id else with_input_file(request, made.file_id)


def refuse(call: GuardedCall, err: PolicyViolation) -> None:
    call.failed(err, sent=False, final=True)  # releases the reservation, reports the refusal


def created(call: GuardedCall, attempt: int, response: httpx2.Response, max_retries: int, provider: str,
            listed: duplicates.Listed | None = None) -> None:
    """The answer to the batch creation: keep the hold under the batch's id, or record the error;
    first hold the other batches ``listed`` shows the call made (``openai_batch_duplicates``)."""
    made = duplicates.creation(call)
    if listed is not None and made is not None:
        duplicates.account(call, made, listed, returned=duplicates.batch_id(response),
                           gave_up=not response.is_success, book=book(provider))
    if not error_answer(call, attempt, response, max_retries):
        submitted(call.guard, call, response, book(provider))


def create(
    guard: CallGuard, provider: str, send: Callable[[httpx2.Request], httpx2.Response], request: httpx2.Request,
    max_retries: int,
) -> httpx2.Response:
    """The sync transport's ``POST …/batches``: judge the input file, reserve, send, keep the hold."""
    job = job_of(provider, request)
    if job is None:
        return send(request)
    fetched = send(content_request(request, job.file_id))
    try:
        status, content = fetched.status_code, fetched.read()
    finally:
        fetched.close()
    if transient(fetched):
        retried = unread_retry(guard, job)
        if retried is not None:
            retries = sdk_max_retries(max_retries)
            final = not retries_answer(fetched) or job.attempt >= retries
            made = duplicates.due(retried, final)
            listed = duplicates.list_batches(send, request, made) if made else None
            safely(retried, answered, retried, job.attempt, fetched, retries, listed)
            if final:  # this attempt made nothing: its creation was not sent
                upload.discard(send, request, duplicates.creation(retried), job.file_id, answered=True, listed=listed)
        return fetched
    body = input_requests(guard, job, status, content)
    if body is None:
        return send(request)
    call = guard.begin(job.edge, body, key=job.key, attempt=job.attempt)
    steps = None if duplicates.creation(call) else upload.first(call, job.file_id, request, body, content)
    try:
        file_id = run(steps, send) if steps is not None else None
    except Exception as exc:
        err = upload.upload_refusal(call, job.file_id, exc)
        refuse(call, err)
        raise err from exc
    made, sending = outgoing(call, job, request, file_id)
    try:
        response = send(sending)
    except BaseException as exc:
        retries = sdk_max_retries(max_retries)
        made.failed(exc=exc)
        final = isinstance(exc, Exception) and (not retries_exception(exc) or job.attempt >= retries)
        listed = duplicates.list_batches(send, request, made) if duplicates.due(call, final) else None
        if listed is None:
            failed(call, job.attempt, exc, retries)
        else:
            safely(call, gave_up, call, exc, listed)
        if final:
            upload.discard(send, request, made, job.file_id, answered=not request_was_sent(exc), listed=listed)
        raise
    retries = max_retries if response.is_success else sdk_max_retries(max_retries)
    if response.is_success:
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            response.read()
    made.failed(status=response.status_code)
    final = response.is_success or not retries_answer(response) or job.attempt >= retries
    due = duplicates.due(call, final)
    listed = duplicates.list_batches(send, request, due) if due else None
    safely(call, created, call, job.attempt, response, retries, provider, listed)
    if final and not response.is_success:
        upload.discard(send, request, made, job.file_id, answered=True, listed=listed)
    return response


async def create_async(
    guard: CallGuard, provider: str, send: Callable[[httpx2.Request], Awaitable[httpx2.Response]],
    request: httpx2.Request, max_retries: int,
) -> httpx2.Response:
    """The async transport's ``POST …/batches``: the same steps, the ledger's in a worker thread."""
    job = job_of(provider, request)
    if job is None:
        return await send(request)
    fetched = await send(content_request(request, job.file_id))
    try:
        status, content = fetched.status_code, await fetched.aread()
    finally:
        await fetched.aclose()
    if transient(fetched):
        retried = unread_retry(guard, job)
        if retried is not None:
            retries = sdk_max_retries(max_retries)
            final = not retries_answer(fetched) or job.attempt >= retries
            made = duplicates.due(retried, final)
            listed = await duplicates.list_batches_async(send, request, made) if made else None
            await guard.finish_async(retried, safely, retried, answered, retried, job.attempt, fetched, retries,
                                     listed)
            guard.expect_retry(retried, fetched.headers)
            if final:
                await upload.discard_async(send, request, duplicates.creation(retried), job.file_id, answered=True,
                                           listed=listed)
        return fetched
    body = input_requests(guard, job, status, content)
    if body is None:
        return await send(request)
    call = await guard.begin_async(job.edge, body, key=job.key, attempt=job.attempt)
    steps = None if duplicates.creation(call) else upload.first(call, job.file_id, request, body, content)
    try:
        file_id = await run_async(steps, send) if steps is not None else None
    except Exception as exc:
        err = upload.upload_refusal(call, job.file_id, exc)
        await guard.finish_async(call, refuse, call, err)
        raise err from exc
    made, sending = outgoing(call, job, request, file_id)
    try:
        response = await send(sending)
    except BaseException as exc:
        retries = sdk_max_retries(max_retries)
        made.failed(exc=exc)
        final = isinstance(exc, Exception) and (not retries_exception(exc) or job.attempt >= retries)
        listed = await duplicates.list_batches_async(send, request, made) if duplicates.due(call, final) else None
        if listed is None:
            await guard.finish_async(call, failed, call, job.attempt, exc, retries)
            guard.expect_retry(call)
        else:
            await guard.finish_async(call, safely, call, gave_up, call, exc, listed)
        if final:
            await upload.discard_async(send, request, made, job.file_id, answered=not request_was_sent(exc),
                                       listed=listed)
        raise
    retries = max_retries if response.is_success else sdk_max_retries(max_retries)
    if response.is_success:
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            await response.aread()
    made.failed(status=response.status_code)
    final = response.is_success or not retries_answer(response) or job.attempt >= retries
    due = duplicates.due(call, final)
    listed = await duplicates.list_batches_async(send, request, due) if due else None
    await guard.finish_async(call, safely, call, created, call, job.attempt, response, retries, provider, listed)
    guard.expect_retry(call, response.headers)
    if final and not response.is_success:
        await upload.discard_async(send, request, made, job.file_id, answered=True, listed=listed)
    return response


__all__ = ["ENDED", "MARKER_PREFIX", "RESERVATION_PREFIX", "Job", "batch_edge", "book", "create", "create_async",
           "creates_batch", "endpoint_of", "enforces_budgets", "marker_prefix", "openai_line"]
