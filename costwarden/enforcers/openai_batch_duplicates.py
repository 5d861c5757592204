"""Batches made by creation attempts that failed once sent — the OpenAI Batch API edge's answer to
retries without an idempotency key.

The ``openai`` SDK retries a batch creation that timed out, lost its connection or was answered
5xx, and sends no idempotency key: each such attempt may have made a batch, and a retry that
succeeds makes another. So the edge keeps, per creation call, a :class:`Creation`: the input file
it sends, its endpoint, when it began and how many attempts failed once sent. When such a call
ends — a retry succeeded, or the SDK gave up — the edge lists the recent batches
(``GET …/batches?limit=100``, newest first, page after page while they are recent enough, through
the inner transport with the creation's credentials: :func:`listing_steps`) and finds those made
from the same input file for the same endpoint since the first attempt began (less
:data:`SKEW_S` for clocks), other than the one returned and any this guard holds already
(:func:`duplicates`). Each is held exactly as a created batch is (:func:`hold`): its own
``cw-oai-batch-<id>`` reservation with the call's holds, a marker hold at the batch's worst case
and the creation record, so the same reads and sweeps settle it from its own output file; a
warning names it (it runs and is billed: cancel it if it is not wanted). Each one held has its
creation event too, as the batch the call returned has (:func:`report`): the call's decision,
rewrites and attribution, its worst case as the estimate, no cost, and its own reservation.

* **A retry succeeded**: the batch it returned takes the call's hold as before; the others found
  are held beside it. The listing is made after every earlier attempt was answered or abandoned,
  so what it does not show was not made.
* **The SDK gave up**: the batches found are held, and the call is charged the worst case only of
  the attempts that failed once sent beyond those found (a batch the last attempt is still making
  may not be listed yet), instead of every such attempt's.
* **The listing fails** (answer, network): a warning names the input file. After a successful
  retry the worst case of each attempt that failed once sent stays held, under a reservation named
  after the call's own (``<its id>-unlisted``), until the batch TTL (:func:`hold_unlisted`); after
  the SDK gave up, each such attempt is charged its worst case, as before the listing existed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from costwarden.enforcers.attempt import request_was_sent
from costwarden.enforcers.batch_record import record_hold
from costwarden.enforcers.batch_settle import KIND, RESULTS_KEPT_S, BatchBook
from costwarden.enforcers.deferred import creation_record, remembered
from costwarden.enforcers.guarded_call import merge_holds
from costwarden.enforcers.openai_batch_requests import Steps, beside, json_object, run, run_async
from costwarden.engine.ledger import Hold
from costwarden.errors import describe

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.guarded_call import GuardedCall

log = logging.getLogger("costwarden.callguard")

SKEW_S = 5.0
"""How much earlier than the creation's start a batch may say it was made (the API's clock against ours)."""
LIST_LIMIT = 100
MAX_PAGES = 10
"""Pages of :data:`LIST_LIMIT` batches read at most: more batches than that made since one creation began
are not looked through."""


@dataclass
class Creation:
    """A batch creation call as its attempts went; holds nothing of the call (weakly keyed by it)."""

    file_id: str
    """The input file the creation sends: the caller's, or the rewritten copy (``openai_batch_upload.py``)."""
    endpoint: str
    since: float
    """Unix time from which a batch made from ``file_id`` may be this call's: its start less :data:`SKEW_S`."""
    uncertain: int = 0
    """Attempts that failed once sent: each may have made a batch."""

    def failed(self, exc: BaseException | None = None, status: int | None = None) -> None:
        """An attempt raised ``exc`` or was answered ``status``: count it when it may have made a batch."""
        if (exc is not None and isinstance(exc, Exception) and request_was_sent(exc)) or (status or 0) >= 500:
            self.uncertain += 1


class Listed(NamedTuple):
    """The recent batches (newest first), or why they could not be listed."""

    batches: Sequence[Mapping[str, Any]] | None
    error: str | None = None


_CREATIONS: weakref.WeakKeyDictionary[GuardedCall, Creation] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def creation(call: GuardedCall) -> Creation | None:
    """The creation ``call`` is, once its first attempt was sent (None before: a new call)."""
    with _LOCK:
        return _CREATIONS.get(call)


def begin(call: GuardedCall, file_id: str, endpoint: str) -> Creation:
    """Start keeping the creation ``call`` is: it sends ``file_id`` to ``endpoint``."""
    made = Creation(file_id, endpoint, call.started_at.timestamp() - SKEW_S)
    with _LOCK:
        _CREATIONS[call] = made
    return made


# --- the listing -----------------------------------------------------------------------------------


def listing_steps(request: httpx2.Request, made: Creation) -> Steps[list[Mapping[str, Any]]]:
    """List the batches beside the creation ``request``, newest first, until they are older than ``made``."""
    batches: list[Mapping[str, Any]] = []
    params = {"limit": str(LIST_LIMIT)}
    for _ in range(MAX_PAGES):
        page = json_object((yield beside(request, "GET", "/batches", params=params)))
        data = page.get("data")
        if not isinstance(data, list):
            raise ValueError("the listing has no 'data' list")
        batches += [b for b in data if isinstance(b, Mapping)]
        last = data[-1] if data and isinstance(data[-1], Mapping) else {}
        if page.get("has_more") is not True or _created_at(last) < made.since or not isinstance(last.get("id"), str):
            break
        params = {"limit": str(LIST_LIMIT), "after": last["id"]}
    return batches


def list_batches(send: Callable[[httpx2.Request], httpx2.Response], request: httpx2.Request,
                 made: Creation) -> Listed:
    """The sync transport's listing; never raises (a failure is in :attr:`Listed.error`)."""
    try:
        return Listed(run(listing_steps(request, made), send))
    except Exception as exc:
        return Listed(None, str(exc) if isinstance(exc, ValueError) else describe(exc))


async def list_batches_async(send: Callable[[httpx2.Request], Awaitable[httpx2.Response]], request: httpx2.Request,
                             made: Creation) -> Listed:
    """The async transport's listing; never raises."""
    try:
        return Listed(await run_async(listing_steps(request, made), send))
    except Exception as exc:
        return Listed(None, str(exc) if isinstance(exc, ValueError) else describe(exc))


def _created_at(batch: Mapping[str, Any]) -> float:
    created = batch.get("created_at")
    return float(created) if isinstance(created, int | float) and not isinstance(created, bool) else float("-inf")


def duplicates(call: GuardedCall, made: Creation, batches: Sequence[Mapping[str, Any]], returned: str | None,
               book: BatchBook) -> list[str]:
    """Ids of the batches listed that attempts of ``call`` made, but for ``returned`` and those this guard holds."""
    from costwarden.enforcers.openai_batch_reads import holds  # it imports openai_batches, which imports this
    from costwarden.enforcers.openai_batches import endpoint_of

    found = []
    for batch in batches:
        batch_id = batch.get("id")
        if not isinstance(batch_id, str) or batch_id == returned or batch.get("input_file_id") != made.file_id:
            continue
        if endpoint_of(batch.get("endpoint")) == endpoint_of(made.endpoint) and _created_at(batch) >= made.since \
                and not holds(call.guard, book, batch_id):
            found.append(batch_id)
    return found


def due(call: GuardedCall, final: bool) -> Creation | None:
    """The creation ``call`` is, when its batches must be listed now: an attempt of it failed once
    sent, and this attempt ends it (``final``: it succeeded, or the SDK retries no more)."""
    made = creation(call)
    return made if final and made is not None and made.uncertain > 0 else None


def batch_id(response: httpx2.Response) -> str | None:
    """The id of the batch a 2xx creation answer returned; None for another, or an unreadable one."""
    if not response.is_success:
        return None
    try:
        found = json.loads(response.content).get("id")
    except Exception:
        return None
    return found if isinstance(found, str) else None


# --- holding what was found --------------------------------------------------------------------------


def account(call: GuardedCall, made: Creation, listed: Listed, *, returned: str | None, gave_up: bool,
            book: BatchBook) -> None:
    """Hold the batches ``listed`` shows attempts of ``call`` made (see the module); ``returned``
    is the batch the successful attempt returned, ``gave_up`` when none succeeded. Runs before the
    call is finished: after the SDK gave up, it sets what the call is charged (``lost_usd``)."""
    if listed.batches is None:
        log.warning("call-guard: could not list the OpenAI batches made from input file %s (%s); %d creation "
                    "attempts failed once sent and may each have made a batch: %s", made.file_id, listed.error,
                    made.uncertain, "each is charged its worst case" if gave_up else
                    "their worst case stays held until the batch TTL")
        if gave_up:
            call.lost_usd = made.uncertain * (call.estimate_usd or 0.0)
        else:
            hold_unlisted(call, made.uncertain)
        return
    found = duplicates(call, made, listed.batches, returned, book)
    if not gave_up and returned is None:  # a 2xx answer without a readable id: its batch, the newest, is
        found = found[1:]  # charged its worst case under the call's reservation (batch_settle.submitted)
    held = [batch_id for batch_id in found if hold(call, batch_id, book)]
    for batch_id in held:
        report(call, batch_id, book)
    if found:
        log.warning("call-guard: OpenAI batch creation from input file %s was retried after an attempt that failed "
                    "once sent, and %s made from it too (%s): held for its worst case and settled from its own "
                    "output like any batch; cancel it if it is not wanted", made.file_id,
                    "a batch was" if len(found) == 1 else f"{len(found)} batches were", ", ".join(found))
    if gave_up:
        call.lost_usd = max(0, made.uncertain - len(held)) * (call.estimate_usd or 0.0)


def gave_up(call: GuardedCall, exc: BaseException, listed: Listed, book: BatchBook) -> None:
    """The last attempt of ``call`` raised ``exc``: hold the batches ``listed`` shows, then finish
    the call charged what :func:`account` set (``GuardedCall.failed`` adds a sent batch creation's
    worst case to that: taken off first)."""
    made = creation(call)
    if made is not None:
        account(call, made, listed, returned=None, gave_up=True, book=book)
    sent = call.lost_usd > 0
    if sent:
        call.lost_usd -= call.estimate_usd or 0.0
    call.failed(exc, sent=sent, final=True)


def hold(call: GuardedCall, batch_id: str, book: BatchBook) -> bool:
    """Hold ``batch_id``, which an attempt of ``call`` made, as a created batch: the holds
    ``deferred.keep_for_later`` moves to a batch the API returned, taken beside them (unchecked:
    the call's reservation admitted that spend). False when the ledger did not take them."""
    guard, ledger, record = call.guard, call.guard.ledger, creation_record(call)
    if ledger is not None:
        now, ttl_s, estimate = guard.clock(), guard.batch_reservation_ttl_s, call.estimate_usd or 0.0
        holds = [dataclasses.replace(h, check=False) for h in merge_holds(call.decision.holds)]
        holds.append(Hold(book.marker_key(batch_id), estimate, estimate, expires_at=now + timedelta(seconds=ttl_s),
                          alert_at=(0.0,)))
        kept = record_hold(batch_id, record, now, RESULTS_KEPT_S)
        if kept is not None:
            holds.append(kept)
        try:
            granted = ledger.reserve(book.reservation_id(batch_id), holds, ttl_s=ttl_s, now=now,
                                     keep_s=RESULTS_KEPT_S).granted
        except Exception as exc:
            log.error("batch %s: could not hold it (%s)", batch_id, describe(exc))
            return False
        if not granted:
            return False
    remembered(guard, KIND).keep(batch_id, record)
    return True


def report(call: GuardedCall, batch_id: str, book: BatchBook) -> None:
    """Emit the creation event of ``batch_id``, held beside ``call`` (:func:`hold`): the event a
    call that created a batch finishes with (``deferred.keep_for_later``: ``GuardedCall.defer``),
    from a twin of ``call`` that holds nothing, named after the batch's reservation. Runs before
    ``call`` finishes (its twin would be finished already otherwise)."""
    call.defer_beside(book.reservation_id(batch_id) if call.guard.ledger is not None else None)


def hold_unlisted(call: GuardedCall, attempts: int) -> None:
    """Hold ``attempts`` times the call's worst case, unchecked, under ``<its reservation>-unlisted``
    until the batch TTL: the batches that attempts which failed once sent may have made."""
    ledger = call.guard.ledger
    if ledger is None or not call.held or call.reservation_id is None or attempts <= 0:
        return
    holds = [dataclasses.replace(h, amount_usd=h.amount_usd * attempts, check=False)
             for h in merge_holds(call.decision.holds)]
    try:
        ledger.reserve(f"{call.reservation_id}-unlisted", holds, ttl_s=call.guard.batch_reservation_ttl_s,
                       now=call.guard.clock())
    except Exception as exc:
        log.error("reservation %s-unlisted: could not hold the worst case of %d batch creation attempts (%s)",
                  call.reservation_id, attempts, describe(exc))


__all__ = ["LIST_LIMIT", "MAX_PAGES", "SKEW_S", "Creation", "Listed", "account", "batch_id", "begin", "creation", "due",
           "duplicates", "gave_up", "hold", "hold_unlisted", "list_batches", "list_batches_async", "listing_steps",
           "report"]
