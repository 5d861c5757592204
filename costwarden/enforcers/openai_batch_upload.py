"""A batch whose requests pass the policies only rewritten is created from a rewritten copy of its
input file — the OpenAI Batch API edge's counterpart of a single call's rewritten body.

``CallGuard.begin`` judges the input file's requests with their fixes
(``preparation.prepare_batch``: a ``maxOutputTokens`` clamp, a model downgrade), so the call's body
holds the requests as they may be sent and its reservation their worst case; each rewrite is named
after its request, ``/requests/<i>/params: clamp max_tokens to 256`` (``i`` counts the file's
non-blank lines from 0). A downgraded request then loses the reasoning parameters its new model
refuses (:func:`~costwarden.adapters.openai.fit_reasoning`), as a single call's does (:func:`fit`).

The copy (:func:`rewritten_file`) is the input file with each rewritten line's ``body`` replaced
and every other line as it came, byte for byte. It is uploaded as ``POST …/files`` (multipart,
``purpose=batch``), named as the original with ``.costwarden.jsonl`` for its ``.jsonl`` (its
metadata, ``GET …/files/<id>``, names it; ``<id>.costwarden.jsonl`` when that cannot be read),
through the same inner transport with the creation's credentials (:func:`upload_steps`); the
creation is then sent naming the copy. An upload that fails refuses the batch before it is
created (:func:`upload_refusal`): the requests as uploaded would not pass.

**A copy no batch reads is deleted** (``DELETE …/files/<id>``, through the same inner transport
with the same credentials: :func:`discard`) as soon as the creation call ends without a batch:
its last attempt was answered with an error (or never left), and either no attempt failed once
sent or the listing of the recent batches (``openai_batch_duplicates.py``) shows none made from
the copy (:func:`unused_copy`). A copy that a batch may read is kept: one was found, the listing
failed, or the last attempt timed out or was cancelled after it was sent (the API may make its
batch after any listing). A delete that fails is a warning: it never raises into the
application and changes nothing the call is charged or reports.

**The copy of a batch that was created is kept**, even once the batch has ended and been
settled: the batch object names it as its ``input_file_id``, and the application may read that
later (to match the error file's lines to their requests by ``custom_id``, to resubmit the
failed ones, to audit what ran; the dashboard shows it too) — deleting a file the application never asked to
delete, under a batch it still holds, would surprise more than the copy costs. Settling also
happens inside the application's own read of the output file (a callback, even for an async
client) or in a sweep through any client (``pending_batches.py``), where the guard has no request
of its own to send. OpenAI expires files uploaded for ``purpose=batch`` 30 days after their
creation, so kept copies do not pile up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from costwarden.adapters import openai as adapter
from costwarden.enforcers.judging import replace_item
from costwarden.enforcers.openai_batch_requests import Steps, beside, json_object, run, run_async
from costwarden.errors import PolicyViolation, describe

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.guarded_call import GuardedCall
    from costwarden.enforcers.openai_batch_duplicates import Creation, Listed

log = logging.getLogger("costwarden.callguard")

SUFFIX = ".costwarden.jsonl"


def fit(call: GuardedCall, asked: Mapping[str, Any]) -> bool:
    """Keep each downgraded request of a new batch ``call`` valid; ``asked`` is the body it was
    judged from. Whether the batch passes only rewritten (its input file must be replaced)."""
    if not call.rewrites:
        return False
    body, notes = call.body, []
    for index, (sent, judged) in enumerate(zip(body["requests"], asked["requests"], strict=True)):
        if sent["params"] is judged["params"]:
            continue
        params, note = adapter.fit_reasoning(sent["params"], judged["params"])
        if note:
            pointer = f"/requests/{index}/params"
            body = replace_item(body, pointer, params)
            notes.append(f"{pointer}: {note}")
    if notes:
        call.body, call.rewrites = body, (*call.rewrites, *notes)
    return True


def first(call: GuardedCall, file_id: str, request: httpx2.Request, asked: Mapping[str, Any],
          content: bytes) -> Steps[str] | None:
    """The upload a new ``call`` needs — the rewritten copy of input file ``file_id`` (``content``)
    beside the creation ``request`` — or None when its requests pass as they are."""
    if not fit(call, asked):
        return None
    return upload_steps(request, file_id, rewritten_file(content, call, asked))


def rewritten_file(content: bytes, call: GuardedCall, asked: Mapping[str, Any]) -> bytes:
    """The input file ``content`` with the ``body`` of each line ``call`` rewrote replaced; the
    other lines as they came."""
    lines = (raw for raw in content.splitlines() if raw.strip())  # as input_requests read them
    out = []
    for raw, sent, judged in zip(lines, call.body["requests"], asked["requests"], strict=True):
        if sent["params"] is judged["params"]:
            out.append(raw)
            continue
        line = json.loads(raw)
        line["body"] = sent["params"]
        out.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode())
    return b"\n".join(out) + b"\n"


def upload_steps(request: httpx2.Request, file_id: str, content: bytes) -> Steps[str]:
    """Read the input file's name, upload ``content`` as its rewritten copy: the copy's id.
    Raises ValueError when the upload is refused or its answer has no id."""
    path = f"/files/{quote(file_id, safe='')}"
    try:
        name = str(json_object((yield beside(request, "GET", path))).get("filename") or "")
    except ValueError:
        name = ""
    name = (name.removesuffix(".jsonl") if name else file_id) + SUFFIX
    answer = yield beside(request, "POST", "/files", data={"purpose": "batch"},
                          files={"file": (name, content, "application/jsonl")})
    uploaded = json_object(answer).get("id")
    if not isinstance(uploaded, str) or not uploaded:
        raise ValueError(f"the upload's answer has no file id ({uploaded!r})")
    return uploaded


def upload_refusal(call: GuardedCall, file_id: str, exc: BaseException) -> PolicyViolation:
    """The refusal of a batch whose rewritten copy could not be uploaded: nothing is created."""
    return PolicyViolation(
        call.decision,
        f"{call.edge.name} batch refused before it was created: its requests pass the policies only rewritten "
        f"({'; '.join(call.rewrites)}), and the rewritten copy of input file {file_id} could not be uploaded "
        f"({exc if isinstance(exc, ValueError) else describe(exc)}); nothing was created",
        request=call.body,
    )


# --- deleting a copy no batch reads ----------------------------------------------------------------


def unused_copy(made: Creation | None, original: str, *, answered: bool, listed: Listed | None) -> str | None:
    """The id of the rewritten copy that a creation call ``made``, which ended without a batch,
    sent — when no batch can read it (see the module). None when the call sent the caller's own
    file ``original``, or when a batch may read the copy. ``answered``: the last attempt was
    answered, or never left; ``listed``: the listing made as the call ended (when an attempt
    failed once sent)."""
    if made is None or made.file_id == original or not answered:
        return None
    if made.uncertain == 0:
        return made.file_id
    if listed is None or listed.batches is None:
        return None
    return None if any(b.get("input_file_id") == made.file_id for b in listed.batches) else made.file_id


def delete_steps(request: httpx2.Request, file_id: str) -> Steps[None]:
    """Delete file ``file_id`` beside the creation ``request`` (a 404, gone already, is as good).
    Raises ValueError when the API refuses."""
    status, body = yield beside(request, "DELETE", f"/files/{quote(file_id, safe='')}")
    if status != 404 and json_object((status, body)).get("deleted") is False:
        raise ValueError("the answer says it was not deleted")


def discard(send: Callable[[httpx2.Request], httpx2.Response], request: httpx2.Request, made: Creation | None,
            original: str, *, answered: bool, listed: Listed | None) -> None:
    """The sync transport's delete of the :func:`unused_copy`, if any; never raises."""
    copy = unused_copy(made, original, answered=answered, listed=listed)
    if copy is not None:
        try:
            run(delete_steps(request, copy), send)
        except Exception as exc:
            _not_deleted(copy, exc)


async def discard_async(send: Callable[[httpx2.Request], Awaitable[httpx2.Response]], request: httpx2.Request,
                        made: Creation | None, original: str, *, answered: bool, listed: Listed | None) -> None:
    """:func:`discard` over the async transport; never raises (but for a cancellation)."""
    copy = unused_copy(made, original, answered=answered, listed=listed)
    if copy is not None:
        try:
            await run_async(delete_steps(request, copy), send)
        except Exception as exc:
            _not_deleted(copy, exc)


def _not_deleted(copy: str, exc: Exception) -> None:
    log.warning("call-guard: could not delete %s, the rewritten copy of a batch's input file that no batch was "
                "made from (%s); it stays in the account's files until it expires or is deleted", copy,
                exc if isinstance(exc, ValueError) else describe(exc))


__all__ = ["SUFFIX", "delete_steps", "discard", "discard_async", "first", "fit", "rewritten_file", "unused_copy",
           "upload_refusal", "upload_steps"]
