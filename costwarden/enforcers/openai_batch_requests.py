"""The requests the Batch API edge (``openai_batches.py``) sends beside a batch creation, and how
it sends them.

Each goes through the transport's inner transport with the creation's credentials
(``Authorization``, Azure's ``api-key``, organisation and project headers) and query
(``api-version``): the input file's read (:func:`content_request`), its metadata and the upload of
its rewritten copy (``openai_batch_upload.py``), and the listing of recent batches
(``openai_batch_duplicates.py``). Those that take several requests are written once, as
generators of :data:`Steps` that yield each request and are sent its answer; :func:`run` and
:func:`run_async` drive them over the sync or async inner transport. Example::

    def steps(request):
        status, body = yield beside(request, "GET", "/files/file-abc")
        return json.loads(body)["filename"]

    name = run(steps(request), inner.handle_request)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2

T = TypeVar("T")
Answer = tuple[int, bytes]
"""An answer to one of the edge's own requests: its status and its whole body."""
Steps = Generator[httpx2.Request, Answer, T]

_NOT_COPIED = frozenset({"content-length", "content-type", "transfer-encoding", "accept", "idempotency-key"})


def beside(request: httpx2.Request, method: str, path: str, *, accept: str = "application/json",
           params: Mapping[str, str] | None = None, **content: Any) -> httpx2.Request:
    """``method`` on ``…<path>`` beside the batch creation ``request`` (``…/batches``), with its
    credentials and query; ``content`` is httpx's (``files=``, ``data=``)."""
    base = request.url.path.rstrip("/")[: -len("/batches")]
    url = request.url.copy_with(path=f"{base}{path}")
    if params:
        url = url.copy_merge_params(params)
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _NOT_COPIED]
    headers.append(("accept", accept))
    return httpx2.Request(method, url, headers=headers, extensions=request.extensions, **content)


def content_request(request: httpx2.Request, file_id: str) -> httpx2.Request:
    """``GET …/files/<file_id>/content`` beside the batch create ``request``."""
    return beside(request, "GET", f"/files/{quote(file_id, safe='')}/content", accept="application/binary")


def with_input_file(request: httpx2.Request, file_id: str) -> httpx2.Request:
    """The creation ``request`` naming ``file_id`` as its ``input_file_id``: its JSON body rebuilt,
    every other field and header kept (``Content-Length`` recomputed)."""
    body = json.loads(request.read())
    body["input_file_id"] = file_id
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx2.Request(request.method, request.url, headers=headers, content=content,
                          extensions=request.extensions)


def json_object(answer: Answer) -> Mapping[str, Any]:
    """The JSON object of a 2xx ``answer``; ValueError otherwise (its status, or what it is not)."""
    status, body = answer
    if not 200 <= status < 300:
        raise ValueError(f"HTTP {status}")
    data = json.loads(body)
    if not isinstance(data, Mapping):
        raise ValueError("the answer is not a JSON object")
    return data


def run(steps: Steps[T], send: Callable[[httpx2.Request], httpx2.Response]) -> T:
    """Drive ``steps`` over a sync transport's ``send``; what they return. Raises what a send raises."""
    try:
        request = next(steps)
        while True:
            response = send(request)
            try:
                answer = response.status_code, response.read()
            finally:
                response.close()
            request = steps.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], send: Callable[[httpx2.Request], Awaitable[httpx2.Response]]) -> T:
    """:func:`run` over an async transport's ``send``."""
    try:
        request = next(steps)
        while True:
            response = await send(request)
            try:
                answer = response.status_code, await response.aread()
            finally:
                await response.aclose()
            request = steps.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


__all__ = ["Answer", "Steps", "beside", "content_request", "json_object", "run", "run_async", "with_input_file"]
