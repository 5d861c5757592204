"""OpenAI Batch API jobs through the call-guard's transport — the OpenAI edge of ``batch_settle.py``.

The application uploads a JSON Lines file of requests (``files.create(purpose="batch")``), creates
a batch from it (``batches.create(input_file_id=..., endpoint=...)``), polls it
(``batches.retrieve``) until it has ended, and reads its output file (``files.content``). So:

* **At creation** (``POST …/batches``) the transport reads the input file first — one extra
  request, ``GET …/files/<input_file_id>/content`` through the same inner transport with the
  same credentials — and judges each line's ``body`` with the subject builder of the batch's
  ``endpoint`` (Chat Completions, Responses, Embeddings, legacy Completions) at the batch rate.
  Any denied request refuses the whole batch before it is created, as does a request that would
  pass only rewritten (an uploaded file cannot be rewritten). One reservation holds the worst case
  of all of them; once the API answers with the batch's id it moves to ``cw-oai-batch-<id>`` with a
  marker hold on ``costwarden-openai-batch:<id>`` (another provider's: ``costwarden-<provider>-batch:<id>``,
  :func:`marker_prefix`), exactly as a Message Batch's does
  (:func:`~costwarden.enforcers.batch_settle.submitted`, ``deferred.py``). Batches to Azure OpenAI
  name their ``endpoint`` without ``/v1`` (``/chat/completions``): they are judged alike (:func:`endpoint_of`).
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
from urllib.parse import quote

import httpx2

from costwarden.adapters import openai as adapter
from costwarden.enforcers.attempt import safely, should_retry_status
from costwarden.enforcers.batch_settle import BatchBook, submitted
from costwarden.enforcers.openai_attempt import attempt_of, error_answer, failed, sdk_max_retries
from costwarden.enforcers.openai_endpoints import edge
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError, PolicyViolation

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
_NOT_COPIED = frozenset({"content-length", "content-type", "transfer-encoding", "accept", "idempotency-key"})
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
    """A batch creation the guard judges: its input file, the edge of its endpoint, its call key."""

    file_id: str
    edge: ProviderEdge
    key: str
    attempt: int


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
    return Job(body["input_file_id"], batch_edge(provider, api), key, attempt_of(request))


def endpoint_of(value: object) -> str:
    """A batch's ``endpoint`` as OpenAI names it: Azure OpenAI's ``/chat/completions`` (its batches
    take the path without ``/v1``) is ``/v1/chat/completions``; a trailing ``/`` is dropped."""
    endpoint = str(value).rstrip("/")
    return endpoint if endpoint.startswith("/v1/") else f"/v1{endpoint}" if endpoint.startswith("/") else endpoint


def content_request(request: httpx2.Request, file_id: str) -> httpx2.Request:
    """``GET …/files/<file_id>/content`` beside the batch create ``request``, with its credentials
    (``Authorization``, Azure's ``api-key``, organisation and project headers) and query (``api-version``)."""
    base = request.url.path.rstrip("/")[: -len("/batches")]
    url = request.url.copy_with(path=f"{base}/files/{quote(file_id, safe='')}/content")
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _NOT_COPIED]
    headers.append(("accept", "application/binary"))
    return httpx2.Request("GET", url, headers=headers, extensions=request.extensions)


def transient(fetched: httpx2.Response) -> bool:
    """Whether the input file's read failed as the SDK retries (429, 5xx, ``x-should-retry``): that
    answer is then the creation attempt's, so the SDK retries the creation, file read included;
    nothing was judged, reserved or created."""
    return not fetched.is_success and should_retry_status(fetched.status_code, fetched.headers.get("x-should-retry"))


def unread_retry(guard: CallGuard, job: Job) -> GuardedCall | None:
    """The call an earlier attempt of this creation holds for, when this retry's read of the input
    file failed (:func:`transient`): that answer is the retry's, so the call records it — kept
    for the SDK's next retry, or, when the SDK retries no more, finished as a failed creation (one
    sent before, which may have made a batch, is charged its worst case) instead of left held for
    the batch TTL. None for a first attempt, or a retry of no call this guard holds."""
    if job.attempt == 0:
        return None
    retried, _ = guard._pending(job.key, job.attempt)  # CallGuard has no public lookup of a retried call yet
    return retried


def answered(call: GuardedCall, attempt: int, response: httpx2.Response, max_retries: int) -> None:
    """Record an error answer to an attempt of ``call`` (:func:`~.openai_attempt.error_answer`)."""
    error_answer(call, attempt, response, max_retries)


def input_requests(guard: CallGuard, job: Job, status: int, content: bytes) -> dict[str, Any] | None:
    """The input file's requests as one body (``{"requests": [{"custom_id", "params"}, ...]}``);
    None when it cannot be read and no budget is enforced (the batch goes ahead unjudged).
    Raises AdapterError when it cannot be read and a budget is enforced (fail closed)."""
    try:
        if not 200 <= status < 300:
            raise ValueError(f"could not be read (HTTP {status})")
        return _requests(content)
    except ValueError as exc:
        _unjudged(guard, job.file_id, str(exc))
        return None


def _requests(content: bytes) -> dict[str, Any]:
    requests: list[dict[str, Any]] = []
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
        body = line.get("body") if isinstance(line, Mapping) else None
        if not isinstance(body, Mapping):
            raise ValueError(f"line {number} has no 'body' object")
        requests.append({"custom_id": line.get("custom_id"), "params": body})
    if not requests:
        raise ValueError("has no requests")
    return {"requests": requests}


def enforces_budgets(guard: CallGuard) -> bool:
    """Whether a budget of the guard can refuse a call (a ledger, and a budget that does not only warn)."""
    return guard.ledger is not None and bool(guard.budget_rules - guard.warn_only_budgets)


def _unjudged(guard: CallGuard, file_id: str, reason: str) -> None:
    if enforces_budgets(guard):
        raise AdapterError(
            f"OpenAI batch refused before it was created: its input file {file_id} {reason}, so the call-guard "
            "cannot judge its requests, and enforced budgets fail closed"
        )
    log.warning("call-guard: an OpenAI batch goes ahead unjudged and unreserved: its input file %s %s (no budget "
                "is enforced)", file_id, reason)


def rewritten(call: GuardedCall) -> PolicyViolation | None:
    """The refusal of a batch whose requests pass the policies only rewritten: the requests are in
    a file already uploaded, which the guard does not replace."""
    if not call.rewrites:
        return None
    return PolicyViolation(
        call.decision,
        f"{call.edge.name} batch refused before it was created: its requests pass the policies only rewritten "
        f"({'; '.join(call.rewrites)}); a batch's uploaded input file cannot be rewritten — upload the "
        "rewritten requests instead",
    )


def refuse(call: GuardedCall, err: PolicyViolation) -> None:
    call.failed(err, sent=False, final=True)  # releases the reservation, reports the refusal


def created(call: GuardedCall, attempt: int, response: httpx2.Response, max_retries: int, provider: str) -> None:
    """The answer to the batch creation: keep the hold under the batch's id, or record the error."""
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
            safely(retried, answered, retried, job.attempt, fetched, sdk_max_retries(max_retries))
        return fetched
    body = input_requests(guard, job, status, content)
    if body is None:
        return send(request)
    call = guard.begin(job.edge, body, key=job.key, attempt=job.attempt)
    err = rewritten(call)
    if err is not None:
        refuse(call, err)
        raise err
    try:
        response = send(request)
    except BaseException as exc:
        failed(call, job.attempt, exc, sdk_max_retries(max_retries))
        raise
    retries = max_retries if response.is_success else sdk_max_retries(max_retries)
    if response.is_success:
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            response.read()
    safely(call, created, call, job.attempt, response, retries, provider)
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
            await guard.finish_async(retried, safely, retried, answered, retried, job.attempt, fetched,
                                     sdk_max_retries(max_retries))
            guard.expect_retry(retried, fetched.headers)
        return fetched
    body = input_requests(guard, job, status, content)
    if body is None:
        return await send(request)
    call = await guard.begin_async(job.edge, body, key=job.key, attempt=job.attempt)
    err = rewritten(call)
    if err is not None:
        await guard.finish_async(call, refuse, call, err)
        raise err
    try:
        response = await send(request)
    except BaseException as exc:
        await guard.finish_async(call, failed, call, job.attempt, exc, sdk_max_retries(max_retries))
        guard.expect_retry(call)
        raise
    retries = max_retries if response.is_success else sdk_max_retries(max_retries)
    if response.is_success:
        with contextlib.suppress(Exception):  # unreadable: submitted() charges the worst case
            await response.aread()
    await guard.finish_async(call, safely, call, created, call, job.attempt, response, retries, provider)
    guard.expect_retry(call, response.headers)
    return response


__all__ = ["ENDED", "MARKER_PREFIX", "RESERVATION_PREFIX", "Job", "batch_edge", "book", "create", "create_async",
           "creates_batch", "endpoint_of", "enforces_budgets", "marker_prefix", "openai_line"]
