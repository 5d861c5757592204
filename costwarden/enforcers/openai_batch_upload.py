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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from costwarden.adapters import openai as adapter
from costwarden.enforcers.judging import replace_item
from costwarden.enforcers.openai_batch_requests import Steps, beside, json_object
from costwarden.errors import PolicyViolation, describe

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.guarded_call import GuardedCall

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


__all__ = ["SUFFIX", "first", "fit", "rewritten_file", "upload_refusal", "upload_steps"]
