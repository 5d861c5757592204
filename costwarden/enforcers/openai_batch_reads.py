"""The reads that settle an OpenAI batch (``openai_batches.py``): its batch object, which tells
whether it has ended and which file holds its output, and that output file's content.

The transport watches ``GET …/batches/<id>`` and ``POST …/batches/<id>/cancel`` answers. A batch
that has ended and that this guard holds for (its creation record in this process, or its marker
or record in the ledger) is remembered by its ``output_file_id``; one that ended without an
output file ran nothing billable and is settled at $0 there and then. A later
``GET …/files/<output_file_id>/content`` read to its end settles the batch from its lines
(:func:`settle_openai_batch`, the same settlement as Message Batches': ``batch_settle.settle_tally``).
Reads of other files pass untouched.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from costwarden.enforcers.batch_record import recorded
from costwarden.enforcers.batch_results import JsonlTap, ResultsTally
from costwarden.enforcers.batch_settle import KIND, BatchBook, settle_tally, tally_of
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.deferred import remembered
from costwarden.enforcers.openai_batches import ENDED, book

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.callguard import CallGuard

log = logging.getLogger("costwarden.callguard")

BATCH_PATH = re.compile(r"/batches/(?P<id>[^/]+)(?P<cancel>/cancel)?$")
CONTENT_PATH = re.compile(r"/files/(?P<id>[^/]+)/content$")
MAX_OUTPUTS = 10_000
"""Output files remembered per guard (the oldest are forgotten: a sweep settles their batches)."""
_NOT_RUN = {"expired": "expired", "cancelled": "canceled"}


class Ended(NamedTuple):
    """An ended batch whose output file is awaited: what its settlement needs besides the lines."""

    batch_id: str
    status: str
    total: int | None


class _Outputs:
    """Output file id -> the ended batch it belongs to, bounded, shared by a guard's transports."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, Ended] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, file_id: str) -> Ended | None:
        with self._lock:
            return self._files.get(file_id)

    def put(self, file_id: str, ended: Ended) -> None:
        with self._lock:
            self._files[file_id] = ended
            while len(self._files) > MAX_OUTPUTS:
                self._files.popitem(last=False)


_BY_GUARD: weakref.WeakKeyDictionary[Any, _Outputs] = weakref.WeakKeyDictionary()
_BY_GUARD_LOCK = threading.Lock()


def outputs(guard: CallGuard) -> _Outputs:
    with _BY_GUARD_LOCK:
        found = _BY_GUARD.get(guard)
        if found is None:
            found = _BY_GUARD[guard] = _Outputs()
        return found


def watched(method: str, path: str) -> bool:
    """Whether a request reads a batch (retrieve, cancel) or a file's content."""
    path = path.rstrip("/")
    found = BATCH_PATH.search(path)
    if found is not None:
        return (method.upper() == "GET") == (found["cancel"] is None)
    return method.upper() == "GET" and CONTENT_PATH.search(path) is not None


def watch(guard: CallGuard, provider: str, request: httpx2.Request, response: httpx2.Response,
          stream_cls: type[Any]) -> None:
    """Read along a batch object or an output file as the application reads it; never raises."""
    try:
        _watch(guard, provider, request, response, stream_cls)
    except Exception:  # the application's read comes first
        log.exception("could not watch a read of an OpenAI batch")


def _watch(guard: CallGuard, provider: str, request: httpx2.Request, response: httpx2.Response,
           stream_cls: type[Any]) -> None:
    if not response.is_success:
        return
    read = response.is_closed  # answered from memory, or read already: its body is decoded
    encoding = None if read else response.headers.get("content-encoding")
    found = CONTENT_PATH.search(request.url.path.rstrip("/"))
    if found is None:
        def batch_read(tap: BodyTap, complete: bool, error: BaseException | None) -> None:
            if complete and not (tap.undecodable or tap.truncated):
                _seen_body(guard, provider, bytes(tap.body))

        _tap(response, stream_cls, BodyTap(sse=False, content_encoding=encoding, on_end=batch_read,
                                           blocking=guard.blocking_io))
        return
    ended = outputs(guard).get(found["id"])
    if ended is None:  # not an output file of a batch this guard holds for (or not seen ended yet)
        return
    tally = book(provider).tally()

    def output_read(tap: BodyTap, complete: bool, error: BaseException | None) -> None:
        if not complete or tap.undecodable:
            log.info("batch %s: output file not read to its end; not settled yet", ended.batch_id)
            return
        _settle(guard, provider, ended, tally)

    _tap(response, stream_cls, JsonlTap(content_encoding=encoding, on_line=tally.add_line, on_end=output_read,
                                        blocking=guard.blocking_io))


def _tap(response: httpx2.Response, stream_cls: type[Any], tap: BodyTap) -> None:
    if response.is_closed:
        tap.feed(response.content)
        tap.flush()
        tap.end(True)
    else:
        response.stream = stream_cls(response.stream, tap)


def _seen_body(guard: CallGuard, provider: str, body: bytes) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        return
    if isinstance(data, Mapping):
        seen(guard, provider, data)


def seen(guard: CallGuard, provider: str, batch: Mapping[str, Any]) -> None:
    """A batch object: remember an ended batch's output file, or settle one that ended without."""
    batch_id, status, found = batch.get("id"), batch.get("status"), batch.get("output_file_id")
    if not isinstance(batch_id, str) or status not in ENDED:
        return
    output = found if isinstance(found, str) and found else None
    if output is not None and outputs(guard).get(output) is not None:
        return  # seen before
    if not holds(guard, book(provider), batch_id):
        return  # made without this guard, or elsewhere without a ledger: nothing held to settle
    if output is not None:
        outputs(guard).put(output, Ended(batch_id, str(status), _total(batch)))
    else:  # failed validation, or nothing ran: nothing billed
        settle_openai_batch(guard, batch, (), provider=provider)


def holds(guard: CallGuard, bk: BatchBook, batch_id: str) -> bool:
    """Whether the batch's hold was taken by this guard: its creation record in this process, or
    its marker or creation record in the guard's ledger."""
    if remembered(guard, KIND).record(batch_id) is not None:
        return True
    ledger = guard.ledger
    status = getattr(ledger, "status", None)
    if ledger is None or status is None:
        return False
    now, marker = guard.clock(), bk.marker_key(batch_id)
    try:
        return any(row.key == marker for row in status(marker, now=now)) or recorded(ledger, batch_id, now) is not None
    except Exception as exc:  # a sweep settles it later
        log.warning("batch %s: could not tell whether it is held (%s); not settled from this read", batch_id, exc)
        return False


def settle_openai_batch(
    guard: CallGuard, batch: Mapping[str, Any], output: bytes | str | Iterable[Any], *, provider: str = "openai"
) -> bool:
    """Settle an ended OpenAI batch from its batch object (``batch.to_dict()``, or the JSON) and
    the content of its output file (bytes or text as ``files.content(...)`` reads it, or its
    lines; empty when it has none). True when this call accounted for the batch; False when that
    happened before (nothing is charged or reported again), or the batch has not ended, or a line
    was not understood (nothing settled)."""
    if batch.get("status") not in ENDED or not isinstance(batch.get("id"), str):
        return False
    lines = output.splitlines() if isinstance(output, bytes | str) else output
    tally = tally_of(lines, book(provider))
    return _settle(guard, provider, Ended(batch["id"], str(batch["status"]), _total(batch)), tally)


def _settle(guard: CallGuard, provider: str, ended: Ended, tally: ResultsTally) -> bool:
    missing = (ended.total or 0) - tally.lines  # requests in the error file, or never run: not billed
    if missing > 0:
        kind = _NOT_RUN.get(ended.status, "errored")
        tally.counts[kind] = tally.counts.get(kind, 0) + missing
    try:
        return settle_tally(guard, ended.batch_id, tally, book(provider))
    except Exception:  # never raise into the application reading its output
        log.exception("batch %s: settling from its output failed", ended.batch_id)
        return False


def _total(batch: Mapping[str, Any]) -> int | None:
    counts = batch.get("request_counts")
    total = counts.get("total") if isinstance(counts, Mapping) else None
    return total if isinstance(total, int) else None


__all__ = ["Ended", "holds", "outputs", "seen", "settle_openai_batch", "watch", "watched"]
