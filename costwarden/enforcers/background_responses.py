"""OpenAI Responses in background mode, settled when they complete — the OpenAI edge's bookkeeping.

``client.responses.create(..., background=True)`` answers at once with ``status: "queued"`` and no
usage; the model runs afterwards, and the application polls ``client.responses.retrieve(id)``. So:

* **At creation** (a queued or in-progress answer) the call's hold moves to a reservation named
  after the response, ``cw-bg-<response id>``, with the guard's ``batch_reservation_ttl_s``: the
  same holds, unchecked (the call was admitted already), plus a marker hold on
  ``costwarden-background:<response id>`` that tells which settlement took effect and the
  creation record (``batch_record.py``). Then the pre-send reservation is released
  (``deferred.py``). The creation's cost event has ``cost_usd`` 0 and ``charged``
  False, with the worst case in ``estimated_cost_usd``.
* **When a read shows it ended** (``GET …/responses/<id>``, or the answer to
  ``POST …/responses/<id>/cancel``, with status ``completed``, ``incomplete``, ``failed`` or
  ``cancelled``) the named reservation is settled to the real usage and one cost event is
  emitted. A response that ended without usage costs nothing if it failed or was cancelled, and
  its reserved worst case otherwise. Reading it again charges nothing more and emits nothing, in
  this process or another on the same ledger; nor does reading one that was billed when it was
  made (streamed to its end, or answered already completed), which no reservation holds.
* **Never read after it ended**: the worst case counts against the budgets until the TTL, then
  it is released, like any unsettled reservation. Its real spend is then not in the ledger.
* A background response that is also streamed is billed from its stream, as any stream is. When
  that stream ends before its usage (dropped, closed, abandoned), the response runs on at OpenAI,
  which bills all of it: its hold is kept under its name as at a creation
  (:func:`hold_running`), for a later read to settle. A resumed stream
  (``responses.retrieve(id, stream=True)``) settles it from its ``response.completed`` (or
  ``.incomplete`` / ``.failed``) event, as a JSON read would.

An event reported by another process than the creating one carries the creator's attribution,
read from the record.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from costwarden.adapters import openai as adapter
from costwarden.adapters.events.event import usage_counts
from costwarden.enforcers.attempt import complete_from_data, safely
from costwarden.enforcers.batch_record import BatchRecord, recorded
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.deferred import keep_for_later, remembered, settled_event, worst_case
from costwarden.engine.pricing import cost_in_context, price_context
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError, UnknownReservation, describe

if TYPE_CHECKING:
    import httpx2

    from costwarden.adapters.events.event import UsageSource
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall

log = logging.getLogger("costwarden.callguard")

PENDING = frozenset({"queued", "in_progress"})
ENDED = frozenset({"completed", "incomplete", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
READ_PATH = re.compile(r"/responses/(?P<id>[^/]+)(?P<cancel>/cancel)?$")
MARKER_PREFIX = "costwarden-background:"
KEPT_S = 30 * 86_400.0
"""How long the named reservation's record outlives its hold, so a late read still settles."""
KIND = "background"


def reservation_id(response_id: str) -> str:
    return f"cw-bg-{response_id}"


def marker_key(response_id: str) -> str:
    return f"{MARKER_PREFIX}{response_id}"


# --- creation ------------------------------------------------------------------------------------


def complete_or_hold(call: GuardedCall, data: Mapping[str, Any]) -> None:
    """Finish a call from its JSON answer: a background response still running keeps its hold
    under its own name; anything else completes from its usage."""
    if isinstance(data, Mapping) and call.body.get("background") is True and data.get("status") in PENDING:
        response_id = data.get("id")
        if isinstance(response_id, str) and response_id:
            keep_for_later(call, KIND, f"background response {response_id}", response_id,
                           reservation_id(response_id), marker_key(response_id), keep_s=KEPT_S)
            return
    complete_from_data(call, data, adapter.usage_from_response, _completion)


def hold_running(call: GuardedCall, response_id: str) -> None:
    """A streamed background response whose stream ended before its usage: it runs on, so its hold
    is kept under its name until a read shows it ended (on the settler thread when there is one)."""
    call.mark_ended()
    keep = partial(keep_for_later, keep_s=KEPT_S)
    call.guard.later(safely, call, keep, call, KIND, f"background response {response_id}", response_id,
                     reservation_id(response_id), marker_key(response_id))


def _completion(data: Mapping[str, Any]) -> Any:
    return data.get("choices", data.get("output"))


# --- reads ---------------------------------------------------------------------------------------


def read_response_id(method: str, path: str) -> str | None:
    """The response id when the request reads a response (``GET …/responses/<id>``, streamed or not)
    or cancels one."""
    match = READ_PATH.search(path.rstrip("/"))
    if match is None:
        return None
    if (method.upper() == "GET") != (match["cancel"] is None):
        return None
    return match["id"]


class _FinalEvent:
    """Keeps the response object of a resumed stream's last event (``response.completed`` ...)."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: Mapping[str, Any] | None = None

    def on_event(self, data: str) -> bool:
        event = json.loads(data) if data.startswith("{") else None
        if isinstance(event, Mapping) and event.get("type") in FINAL_EVENTS and isinstance(event.get("response"),
                                                                                            Mapping):
            self.response = event["response"]
        return True


def watch(guard: CallGuard, provider: str, response_id: str, response: httpx2.Response, stream_cls: type[Any]) -> None:
    """Settle the background response when the read's body has been read (a JSON object, or a
    resumed stream's final event), if it shows it ended."""
    kind = response.headers.get("content-type", "")
    sse = "text/event-stream" in kind
    if not response.is_success or not (sse or "json" in kind):
        return
    final = _FinalEvent() if sse else None

    def end(tap: BodyTap, complete: bool, error: BaseException | None) -> None:
        if tap.undecodable or tap.truncated:
            return
        source: UsageSource
        if final is not None:  # a stream settles from its final event, however far it was read after it
            data, source = final.response, "stream"
        elif complete:
            try:
                data, source = json.loads(bytes(tap.body)), "response"
            except ValueError:
                return
        else:
            return
        # A response not run in background (``background: false``) was settled when it was created.
        if isinstance(data, Mapping) and data.get("status") in ENDED and data.get("background") is not False:
            safely_settle(guard, provider, response_id, data, source)

    read = response.is_closed
    tap = BodyTap(sse=sse, content_encoding=None if read else response.headers.get("content-encoding"),
                  observer=final, on_end=end, blocking=guard.blocking_io)
    if read:
        tap.feed(response.content)
        tap.flush()
        tap.end(True)
    else:
        response.stream = stream_cls(response.stream, tap)


def safely_settle(
    guard: CallGuard, provider: str, response_id: str, data: Mapping[str, Any], source: UsageSource = "response"
) -> None:
    try:
        settle(guard, provider, response_id, data, source)
    except Exception:  # the application's read comes first
        log.exception("background response %s: settling failed", response_id)


def settle(
    guard: CallGuard, provider: str, response_id: str, data: Mapping[str, Any], source: UsageSource = "response"
) -> bool:
    """Settle an ended background response from its response object (read whole, or from a
    resumed stream: ``source``); True when this call accounted for it (False: it was before, here
    or in another process)."""
    memory = remembered(guard, KIND)
    ledger, now, rid = guard.ledger, guard.clock(), reservation_id(response_id)
    pending = memory.record(response_id)
    if pending is None and ledger is None:
        return False  # not held here: billed when it was made (streamed to its end, or done at once)
    if pending is None and ledger is not None:  # created by another process, or before a restart
        pending = recorded(ledger, response_id, now)
    problems: list[str] = []
    try:
        usage = adapter.usage_from_response(data)
    except AdapterError:
        usage = None
    cost = _cost(guard, provider, response_id, data, usage, pending, now, problems)
    charged, alerts = False, []
    if ledger is not None:
        try:
            got = ledger.settle(rid, cost, now=now)
        except UnknownReservation:
            return False  # never held: billed when it was made (or its record is gone, after KEPT_S)
        marker = marker_key(response_id)
        if not any(a.key == marker for a in got):
            return False  # settled before
        alerts = [a for a in got if a.key != marker]
        charged = cost > 0
    if not memory.reported_now(response_id, once=ledger is None, forget=True):
        return False  # no ledger to tell: this process reports a response once
    for alert in alerts:
        guard.alert(alert)
    if guard.sinks:
        guard.emit(_event(guard, provider, pending, rid if ledger is not None else None, data, usage, cost,
                          charged, alerts, now, "; ".join(problems) or None, source))
    return True


def _cost(
    guard: CallGuard, provider: str, response_id: str, data: Mapping[str, Any], usage: TokenUsage | None,
    pending: BatchRecord | None, now: datetime, problems: list[str],
) -> float:
    """What the ended response costs: its usage priced, else nothing if it failed or was cancelled,
    else its reserved worst case."""
    status = str(data.get("status"))
    model = data.get("model") if isinstance(data.get("model"), str) else None
    if usage is not None:
        cost = _price(guard, provider, model or (pending.model_requested if pending else ""), usage, data, problems)
        if cost is not None:
            return cost
    elif status in ("failed", "cancelled"):
        return 0.0
    else:
        problems.append(f"{status} without usage; charged the reserved worst case")
    return worst_case(guard.ledger, pending, marker_key(response_id), now)


def _price(
    guard: CallGuard, provider: str, model: str, usage: Any, data: Mapping[str, Any], problems: list[str]
) -> float | None:
    """The usage's cost at the service tier the response object reports (the one that served it;
    the request body is not kept past the creation). Background responses are not batch-priced."""
    try:
        return cost_in_context(guard.pricer, provider, model, usage, batch=False, context=price_context(data))
    except Exception as exc:
        problems.append(f"usage not priced ({describe(exc)}); charged the reserved worst case")
        return None


def _event(
    guard: CallGuard, provider: str, pending: BatchRecord | None, rid: str | None, data: Mapping[str, Any],
    usage: TokenUsage | None, cost: float, charged: bool, alerts: list[Any], now: datetime, error: str | None,
    source: UsageSource,
) -> Any:
    served = data.get("model") if isinstance(data.get("model"), str) else None
    return settled_event(
        guard, pending, now=now, served=served,
        provider=provider, api="responses", model=served or (pending.model_requested if pending else ""),
        outcome="ok" if data.get("status") in ("completed", "incomplete") else "error",
        **usage_counts(usage), cost_usd=cost, charged=charged,
        usage_source=source if usage is not None else "estimate", alerts=tuple(str(a) for a in alerts),
        reservation_id=rid, error=error,
    )


__all__ = ["MARKER_PREFIX", "complete_or_hold", "hold_running", "read_response_id", "reservation_id", "settle",
           "watch"]
