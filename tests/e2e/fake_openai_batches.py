"""The fake OpenAI Batch API: files and batches, enough for the real ``openai`` SDK.

* ``POST /v1/files`` (multipart, as ``client.files.create(file=..., purpose="batch")`` sends it),
  ``GET /v1/files/<id>`` and ``GET /v1/files/<id>/content`` (the bytes, chunked, so lines arrive split),
  ``DELETE /v1/files/<id>`` (the file is gone, its id added to ``state(server).deleted``; 404 for
  an unknown one);
* ``POST /v1/batches`` (``input_file_id`` must name an uploaded file: 404 otherwise), ``GET
  /v1/batches/<id>`` and ``POST /v1/batches/<id>/cancel`` (``cancelling``); each delay in
  ``state(server).late_creates`` answers the next creation that much later, the batch made already,
  as does the request header ``x-fake-delay-ms`` (every attempt that carries it: a client that
  times out leaves a batch behind each time);
* ``GET /v1/batches?limit=N&after=<id>`` lists the batches newest first (``limit`` 20 by default, at
  most 100), a page after the batch ``after`` names, with ``first_id``, ``last_id`` and ``has_more``;
* failures of the next requests of one kind: ``state(server).fail_uploads`` (``POST /v1/files``),
  ``fail_creates`` (``POST /v1/batches``, no batch made), ``fail_lists`` (``GET /v1/batches``) and
  ``fail_deletes`` (``DELETE /v1/files/<id>``, the file kept) hold the statuses they answer, one
  each, in order.

``FakeLlmServer.reset()`` forgets all of it (:func:`clear`): each test starts with no files and no batches.

A batch stays ``in_progress`` until a test ends it with :func:`complete_batch`, which writes its
output file (a 200 response per request that ran, its usage deterministic per line) and its error
file (requests that failed, expired or were cancelled), as OpenAI does. Every request is recorded
in ``server.requests`` like the others (a multipart upload as ``{"purpose", "filename"}``).

Hooked into ``fake_llm_server`` by :func:`with_openai_batches`, which puts these handlers in
front of the server's own (they pass every other path on).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any
from urllib.parse import parse_qs

from fake_wire import WireHandler


@dataclass
class OpenAIBatchState:
    """The fake account's files (id -> object and bytes) and batches (id -> batch object)."""

    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    late_creates: list[float] = field(default_factory=list)
    """Seconds by which each next ``POST /v1/batches`` is answered late (after the batch is made)."""
    fail_uploads: list[int] = field(default_factory=list)
    """Statuses the next ``POST /v1/files`` answer instead of storing the file."""
    fail_creates: list[int] = field(default_factory=list)
    """Statuses the next ``POST /v1/batches`` answer without making a batch."""
    fail_lists: list[int] = field(default_factory=list)
    """Statuses the next ``GET /v1/batches`` (listings) answer."""
    fail_deletes: list[int] = field(default_factory=list)
    """Statuses the next ``DELETE /v1/files/<id>`` answer instead of deleting the file."""
    deleted: list[str] = field(default_factory=list)
    """The ids of the files deleted, in order."""

    def failure(self, queue: list[int]) -> int | None:
        with self.lock:
            return queue.pop(0) if queue else None

    def add_file(self, content: bytes, purpose: str, filename: str = "batch.jsonl") -> dict[str, Any]:
        obj = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(content),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        with self.lock:
            self.files[obj["id"]] = (obj, content)
        return obj


_STATE = "openai_batch_state"


def state(server: Any) -> OpenAIBatchState:
    """The batch state of a ``FakeLlmServer`` (made on first use)."""
    fake = getattr(server, "fake", server)  # the handler's ``self.server`` or the FakeLlmServer itself
    return fake.__dict__.setdefault(_STATE, OpenAIBatchState())  # type: ignore[no-any-return]


def clear(server: Any) -> None:
    """Forget the server's files, batches, deletions and queued failures and delays: a fresh state
    is made on next use (a request still running for an earlier test writes into the old one)."""
    getattr(server, "fake", server).__dict__.pop(_STATE, None)


def line_usage(index: int) -> dict[str, int]:
    """The default usage of input line ``index``: 40 + index tokens in, 10 + index out."""
    return {"input_tokens": 40 + index, "output_tokens": 10 + index}


def complete_batch(
    server: Any,
    batch_id: str,
    *,
    status: str = "completed",
    usage: Callable[[int], Mapping[str, int]] = line_usage,
    ran: int | None = None,
    errored: tuple[str, ...] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """End a batch: the first ``ran`` requests (all by default) ran, those whose ``custom_id`` is in
    ``errored`` with a 400 and the rest with 200 and ``usage(index)``; the others never ran
    (``batch_expired`` / ``batch_cancelled`` in the error file). ``status`` ``failed`` runs nothing
    (validation failed) and writes no files. Returns the batch object."""
    st = state(server)
    batch = st.batches[batch_id]
    _, content = st.files[batch["input_file_id"]]
    lines = [json.loads(raw) for raw in content.splitlines() if raw.strip()]
    ran = 0 if status == "failed" else len(lines) if ran is None else ran
    out, err = [], []
    for index, line in enumerate(lines):
        request_id = f"batch_req_{uuid.uuid4().hex[:16]}"
        base = {"id": request_id, "custom_id": line.get("custom_id")}
        if index >= ran:
            code = "batch_cancelled" if status == "cancelled" else "batch_expired"
            err.append({**base, "response": None, "error": {"code": code, "message": "not run"}})
        elif line.get("custom_id") in errored:
            body = {"error": {"message": "bad request", "type": "invalid_request_error"}}
            err.append({**base, "response": {"status_code": 400, "request_id": request_id, "body": body},
                        "error": None})
        else:
            body = _answer(batch["endpoint"], line["body"], usage(index), model)
            out.append({**base, "response": {"status_code": 200, "request_id": request_id, "body": body},
                        "error": None})
    if status != "failed":
        batch["output_file_id"] = _jsonl_file(st, out)
        batch["error_file_id"] = _jsonl_file(st, err)
    batch["status"] = status
    batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(lines) - len(out)}
    batch[f"{status}_at"] = int(time.time())
    return batch


def _jsonl_file(st: OpenAIBatchState, lines: list[dict[str, Any]]) -> str | None:
    if not lines:
        return None
    return str(st.add_file(b"".join(json.dumps(x).encode() + b"\n" for x in lines), "batch_output")["id"])


def _answer(endpoint: str, body: Mapping[str, Any], usage: Mapping[str, int], model: str | None) -> dict[str, Any]:
    """The response body of one request that ran: its endpoint's object with ``usage``."""
    served = model or str(body.get("model"))
    i, o = usage["input_tokens"], usage["output_tokens"]
    if endpoint == "/v1/responses":
        return {"id": f"resp_{uuid.uuid4().hex[:20]}", "object": "response", "model": served, "status": "completed",
                "output": [], "usage": {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}}
    if endpoint == "/v1/embeddings":
        return {"object": "list", "model": served, "data": [{"object": "embedding", "index": 0, "embedding": [0.0]}],
                "usage": {"prompt_tokens": i, "total_tokens": i}}
    kind = "text_completion" if endpoint == "/v1/completions" else "chat.completion"
    return {"id": f"cmpl-{uuid.uuid4().hex[:20]}", "object": kind, "model": served, "choices": [],
            "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}}


class OpenAIBatchHandlers(WireHandler):
    """``/v1/files`` and ``/v1/batches``; every other request goes on to the next handler class."""

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] not in (["v1", "files"], ["v1", "batches"]) or len(parts) < 2 + (parts[1] == "files"):
            super().do_GET()  # type: ignore[misc]
            return
        if self._recorded("GET", None):
            return
        st = state(self.server)
        if parts[1] == "batches" and len(parts) == 2:
            self._list(st)
        elif parts[1] == "batches" and len(parts) == 3 and parts[2] in st.batches:
            self._json(200, st.batches[parts[2]])
        elif parts[1] == "files" and parts[2] in st.files and len(parts) == 3:
            self._json(200, st.files[parts[2]][0])
        elif parts[1] == "files" and parts[2] in st.files and parts[3:] == ["content"]:
            self._bytes(st.files[parts[2]][1])
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        parts = path.strip("/").split("/")
        if path not in ("/v1/files", "/v1/batches") and not (parts[:2] == ["v1", "batches"] and
                                                             parts[3:] == ["cancel"]):
            super().do_POST()  # type: ignore[misc]
            return
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        st = state(self.server)
        if path == "/v1/files":
            fields = _multipart(self.headers.get("content-type", ""), raw)
            upload, filename = fields.get("file", (b"", "batch.jsonl"))
            purpose = fields.get("purpose", (b"", None))[0].decode()
            if self._recorded("POST", {"purpose": purpose, "filename": filename}):
                return
            failure = st.failure(st.fail_uploads)
            if failure is not None:
                self._json(failure, {"error": {"type": "server_error", "message": "upload failed"}})
                return
            self._json(200, st.add_file(upload, purpose, filename or "batch.jsonl"))
            return
        body = json.loads(raw) if raw else {}
        if self._recorded("POST", body):
            return
        if path == "/v1/batches":
            self._create(st, body)
        elif parts[2] in st.batches:
            batch = st.batches[parts[2]]
            if batch["status"] in ("validating", "in_progress"):
                batch["status"] = "cancelling"
            self._json(200, batch)
        else:
            self._not_found()

    def do_DELETE(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] != ["v1", "files"] or len(parts) != 3:
            self._not_found()  # no other handler deletes anything
            return
        if self._recorded("DELETE", None):
            return
        st = state(self.server)
        failure = st.failure(st.fail_deletes)
        if failure is not None:
            self._json(failure, {"error": {"type": "server_error", "message": "delete failed"}})
            return
        with st.lock:
            found = st.files.pop(parts[2], None)
            if found is not None:
                st.deleted.append(parts[2])
        if found is None:
            self._not_found()
        else:
            self._json(200, {"id": parts[2], "object": "file", "deleted": True})

    def _create(self, st: OpenAIBatchState, body: dict[str, Any]) -> None:
        if body.get("input_file_id") not in st.files:
            self._not_found()
            return
        failure = st.failure(st.fail_creates)
        if failure is not None:
            self._json(failure, {"error": {"type": "server_error", "message": "bad gateway"}}, {"retry-after-ms": "1"})
            return
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body.get("endpoint"),
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "in_progress", "created_at": int(time.time()), "output_file_id": None,
                 "error_file_id": None, "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        with st.lock:
            st.batches[batch["id"]] = batch
            late = st.late_creates.pop(0) if st.late_creates else 0.0
        late += int(self.headers.get("x-fake-delay-ms") or 0) / 1000
        if late:  # created, then answered late: a client that times out leaves the batch behind
            time.sleep(late)
        self._json(200, batch)

    def _list(self, st: OpenAIBatchState) -> None:
        """``GET /v1/batches``: newest first, ``limit`` a page, the page after the batch ``after`` names."""
        failure = st.failure(st.fail_lists)
        if failure is not None:
            self._json(failure, {"error": {"type": "server_error", "message": "listing failed"}})
            return
        query = parse_qs(self.path.partition("?")[2])
        limit = min(int(query.get("limit", ["20"])[0]), 100)
        with st.lock:
            newest = list(reversed(st.batches.values()))
        after = query.get("after", [None])[0]
        ids = [b["id"] for b in newest]
        start = ids.index(after) + 1 if after in ids else 0
        page = newest[start : start + limit]
        self._json(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(newest)})

    def _recorded(self, method: str, body: Any) -> bool:
        """Record the request as the server does; True when a queued failure answered it."""
        from fake_llm_server import Recorded

        fake = self.server.fake
        failure = fake._record(Recorded(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if failure is None:
            return False
        self._json(failure, {"error": {"type": "server_error", "message": "try again"}}, {"retry-after-ms": "1"})
        return True

    def _not_found(self) -> None:
        self._json(404, {"error": {"type": "invalid_request_error", "code": "not_found", "message": self.path}})

    def _bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for start in range(0, len(data), 97):  # lines split across chunks, as a real download may be
            self._chunk(data[start : start + 97])
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
    """The fields of a multipart/form-data body: name -> (bytes, filename)."""
    message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_payload(decode=True) or b"", part.get_filename())
    return fields


def with_openai_batches(handler: type) -> type:
    """``handler`` with the Batch API's paths in front of its own."""
    return type(handler.__name__, (OpenAIBatchHandlers, handler), {})


__all__ = ["OpenAIBatchHandlers", "OpenAIBatchState", "clear", "complete_batch", "line_usage", "state",
           "with_openai_batches"]
