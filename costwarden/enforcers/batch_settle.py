"""Message Batches settled from their results — the Anthropic edge's batch bookkeeping.

A batch is judged and reserved when it is created: every request at the batch rate, one
reservation for all of them (``preparation.prepare_batch``). Its real cost is only known when its
results are read, up to 24 hours later and possibly in another process, so:

* **At creation** (a 2xx answer carrying the batch id) the hold moves to a reservation named after
  the batch, ``cw-batch-<batch id>``, with the guard's ``batch_reservation_ttl_s`` (26 h by
  default; a batch ends within 24 h): the named one is reserved with the same holds, plus a
  marker hold on ``costwarden-batch:<batch id>`` (the worst case while pending, the real cost once
  settled), and a zero hold whose key records the creator's attribution for the cost event
  (``batch_record.py``); then the pre-send reservation is released. Only the ledger knows the
  mapping, so a restarted application or another process on the same ledger settles the batch,
  and reports it as its creator's. The creation's cost event has ``cost_usd`` 0 and ``charged``
  False, with the worst case in ``estimated_cost_usd`` and the named reservation in
  ``reservation_id``.
* **When the results are read to their end** (``GET /v1/messages/batches/<id>/results``, as
  ``client.messages.batches.results(id)`` does, or :func:`settle_batch` for results read some
  other way), each ``succeeded`` line is priced from its usage at the batch rate (cache reads and
  writes included); ``errored``, ``canceled`` and ``expired`` lines cost nothing. The named
  reservation is settled to the sum and one cost event (``api`` "batch", ``usage_source``
  "response") is emitted. Settling is idempotent: reading the results again — here, after a
  restart or in another process — charges nothing more and emits no second event. The marker
  hold's 0 % alert, which a ledger raises once per key across processes, tells which settlement
  took effect. A line whose model has no price falls back to the batch's reserved worst case.
* **Results read partly** (the caller stopped early, the connection dropped): nothing is settled;
  a full read later settles.
* **Results never read**: the worst case counts against the budgets for the TTL, then it is released
  like any unsettled reservation, so that batch's spend is not in the ledger — unless a sweep,
  ``guard.settle_pending_batches(client)`` (``pending_batches.py``), reads the results of the
  batches that ended before then. The reservation's
  record is kept for 30 days (``RESULTS_KEPT_S``; results can be downloaded for 29), so results
  read after the TTL still settle: the cost is charged to the budget windows the hold was taken
  in (a window that has ended by then no longer limits anything). Read later than that, the
  event says no reservation was found and has ``charged`` False.
* **Ledger trouble at creation**: the named reservation is made before the pre-send one is
  released, its holds unchecked (the pre-send reservation admitted that spend), so no other call
  can take the batch's budget in between. When the ledger fails there, the batch is charged its
  reserved worst case under the pre-send reservation, which still holds; if that fails too, its
  event reports the error uncharged.
* Without a ledger, reading the results emits the cost event (once per batch and process).

Settlement never raises into the application reading the results; problems are logged.

The OpenAI Batch API is settled by the same code (``openai_batches.py``): only the provider edge
differs, described by a :class:`BatchBook` — the ledger names of its batches and how its result
lines read. :data:`ANTHROPIC` is Message Batches'.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from costwarden.adapters import anthropic as adapter
from costwarden.adapters.events.event import usage_counts
from costwarden.enforcers.batch_record import BatchRecord, recorded
from costwarden.enforcers.batch_results import RESULT_TYPES, JsonlTap, LineReader, ResultsTally, anthropic_line
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.deferred import Remembered, keep_for_later, remembered, settled_event, worst_case
from costwarden.engine.ledger import Alert
from costwarden.errors import describe

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall
    from costwarden.engine.ledger import Ledger

log = logging.getLogger("costwarden.callguard")

RESULTS_PATH = re.compile(r"/messages/batches/(?P<id>[^/]+)/results$")
RESULTS_KEPT_S = 30 * 86_400.0
"""How long a batch's reservation record outlives its hold: Message Batches results can be
downloaded for 29 days after creation, and a settle within this still charges the batch."""

R = TypeVar("R")
MARKER_PREFIX = "costwarden-batch:"
KIND = "batch"


@dataclass(frozen=True)
class BatchBook:
    """One provider's batches in the ledger: whose prices, the names of their reservations and
    marker holds (distinct per API, so that a sweep lists only the batches its client can read),
    and how a results line reads."""

    provider: str
    reservation_prefix: str
    marker_prefix: str
    read: LineReader

    def reservation_id(self, batch_id: str) -> str:
        """The ledger reservation that holds a batch's budget from its creation to its results."""
        return f"{self.reservation_prefix}{batch_id}"

    def marker_key(self, batch_id: str) -> str:
        """The ledger key of the batch's marker hold (outside the ``budget:`` namespace)."""
        return f"{self.marker_prefix}{batch_id}"

    def tally(self) -> ResultsTally:
        return ResultsTally(self.provider, self.read)


ANTHROPIC = BatchBook(adapter.PROVIDER, "cw-batch-", MARKER_PREFIX, anthropic_line)
"""Message Batches: ``cw-batch-<id>`` and ``costwarden-batch:<id>``."""


def reservation_id(batch_id: str) -> str:
    """The ledger reservation that holds a Message Batch's budget from its creation to its results."""
    return ANTHROPIC.reservation_id(batch_id)


def marker_key(batch_id: str) -> str:
    """The ledger key of a Message Batch's marker hold (outside the ``budget:`` namespace)."""
    return ANTHROPIC.marker_key(batch_id)


# --- creation ------------------------------------------------------------------------------------


def submitted(guard: CallGuard, call: GuardedCall, http: httpx2.Response, book: BatchBook = ANTHROPIC) -> None:
    """The provider accepted a batch: keep its hold under the batch's name until its results."""
    try:
        batch_id = json.loads(http.content)["id"]
        if not isinstance(batch_id, str) or not batch_id:
            raise ValueError(f"batch id {batch_id!r}")
    except Exception as exc:
        call.charge_estimate(error=f"batch id unreadable ({describe(exc)}); charged the reserved worst case")
        return
    keep_for_later(call, KIND, f"batch {batch_id}", batch_id, book.reservation_id(batch_id),
                   book.marker_key(batch_id), keep_s=RESULTS_KEPT_S)


# --- results -------------------------------------------------------------------------------------


def watch_results(guard: CallGuard, request: Any, response: R, stream_cls: type[Any]) -> R:
    """Tap a batch results download so the batch is settled when it has been read to its end."""
    try:
        _watch(guard, request, response, stream_cls)
    except Exception:  # the application's response comes first
        log.exception("could not watch a batch results download")
    return response


def _watch(guard: CallGuard, request: Any, response: Any, stream_cls: type[Any]) -> None:
    match = RESULTS_PATH.search(urlsplit(str(request.url)).path.rstrip("/"))
    if match is None or str(request.method).lower() != "get":
        return
    http = getattr(response, "http_response", None)
    if http is None or not http.is_success:
        return
    tally = ANTHROPIC.tally()
    batch_id = match["id"]

    def end(tap: BodyTap, complete: bool, error: BaseException | None) -> None:
        if not complete or tap.undecodable:
            log.info("batch %s: results not read to their end; not settled yet", batch_id)
            return
        try:
            settle_tally(guard, batch_id, tally)
        except Exception:  # never raise into the application reading its results
            log.exception("batch %s: settling from its results failed", batch_id)

    if http.is_closed:  # read already (a caller that asked for the whole body)
        tap = JsonlTap(content_encoding=None, on_line=tally.add_line, on_end=end)
        tap.feed(http.content)
        tap.flush()
        tap.end(True)
        return
    tap = JsonlTap(
        content_encoding=http.headers.get("content-encoding"),
        on_line=tally.add_line,
        on_end=end,
        blocking=guard.blocking_io,  # settling waits on the ledger: async streams run it in a thread
    )
    http.stream = stream_cls(http.stream, tap)


def settle_batch(guard: CallGuard, batch_id: str, results: Iterable[Any], *, book: BatchBook = ANTHROPIC) -> bool:
    """Settle a batch from all its result lines (the parsed JSONL objects, the SDK's result
    objects, or the JSONL text lines); ``book`` says whose batch it is (Message Batches by default).

    True when this call accounted for the batch (settled it; without a ledger, reported it first
    in this process); False when that happened before — nothing is charged or emitted again — or
    the ledger failed (an uncharged event says so), or a line was not understood (nothing settled)."""
    return settle_tally(guard, batch_id, tally_of(results, book), book)


def tally_of(results: Iterable[Any], book: BatchBook = ANTHROPIC) -> ResultsTally:
    """The tally of result lines in any of the forms :func:`settle_batch` takes."""
    tally = book.tally()
    for line in results:
        if isinstance(line, (str, bytes)):  # the lines of a downloaded results file
            tally.add_line(line.encode() if isinstance(line, str) else line)
            continue
        to_dict = getattr(line, "to_dict", None)  # the SDK's result objects, as a plain client reads them
        tally.add(to_dict() if not isinstance(line, Mapping) and callable(to_dict) else line)
    return tally


def settle_tally(guard: CallGuard, batch_id: str, tally: ResultsTally, book: BatchBook = ANTHROPIC) -> bool:
    """Settle a batch from the tally of all its results (see :func:`settle_batch`); never from a
    tally with lines not understood (nothing is settled at $0 from what could not be read)."""
    if tally.unreadable:
        log.warning("batch %s: %d result lines not understood; not settled", batch_id, tally.unreadable)
        return False
    memory = remembered(guard, KIND)
    ledger, now, rid = guard.ledger, guard.clock(), book.reservation_id(batch_id)
    pending = _creation(memory, ledger, batch_id, now)
    models = sorted({m for m, _ in tally.used if m})
    requested = pending.model if pending and pending.model != "mixed" else None
    cost, unpriced = tally.cost(guard.pricer, requested)
    problems = []
    if unpriced:
        cost = max(cost, worst_case(ledger, pending, book.marker_key(batch_id), now))
        problems.append(f"{unpriced} results had no price or usage; charged at least the reserved worst case")
    ledger_failed, charged, alerts = False, False, []
    if ledger is not None:
        try:
            got = ledger.settle(rid, cost, now=now)
        except Exception as exc:
            log.error("batch %s: could not settle $%.6f from its results: %s", batch_id, cost, describe(exc))
            problems.append(f"ledger: {describe(exc)}")
            ledger_failed = True
        else:
            marker = book.marker_key(batch_id)
            if not any(a.key == marker for a in got):  # settled before, here or elsewhere
                log.debug("batch %s: settled before; nothing charged again", batch_id)
                return False
            alerts = [a for a in got if a.key != marker]
            charged = cost > 0
    # without a ledger to tell, this process reports a batch once; a failed settle keeps its record
    if not memory.reported_now(batch_id, once=ledger is None or ledger_failed, forget=not ledger_failed):
        return False
    for alert in alerts:
        guard.alert(alert)
    not_billed = [f"{tally.counts[k]} {k}" for k in RESULT_TYPES[1:] if tally.counts.get(k)]
    if not_billed:
        problems.append(f"{', '.join(not_billed)} of {tally.lines} requests (not billed)")
    if guard.sinks:
        guard.emit(
            _event(
                guard,
                book,
                pending,
                rid if ledger is not None else None,
                tally,
                models,
                cost,
                charged,
                alerts,
                now,
                "; ".join(problems) or None,
            )
        )
    return not ledger_failed


def _creation(memory: Remembered, ledger: Ledger | None, batch_id: str, now: datetime) -> BatchRecord | None:
    """The batch's record: this process's, else the one its creator wrote to the ledger."""
    pending = memory.record(batch_id)
    if pending is None and ledger is not None:  # created by another process, or before a restart
        return recorded(ledger, batch_id, now)
    return pending


def _event(
    guard: CallGuard,
    book: BatchBook,
    pending: BatchRecord | None,
    rid: str | None,
    tally: ResultsTally,
    models: list[str],
    cost: float,
    charged: bool,
    alerts: list[Alert],
    now: datetime,
    error: str | None,
) -> Any:
    usage = tally.usage()
    served = models[0] if len(models) == 1 else ("mixed" if models else None)
    return settled_event(
        guard, pending, now=now, served=served,
        provider=book.provider, api="batch", model=pending.model if pending else served or "", outcome="ok",
        batch=True, batch_requests=tally.lines, **usage_counts(usage), cost_usd=cost, charged=charged,
        usage_source="response",
        alerts=tuple(str(a) for a in alerts), reservation_id=rid, error=error,
    )


__all__ = ["ANTHROPIC", "MARKER_PREFIX", "BatchBook", "marker_key", "reservation_id", "settle_batch", "settle_tally",
           "submitted", "tally_of", "watch_results"]
