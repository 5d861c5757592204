"""Reserving a guarded call's budget holds: all or nothing, fail closed, warn-only budgets counted.

:func:`reserve_call` merges a decision's holds per key and reserves them under a new id:

* a budget already over its limit whose policy only warns on this surface is held unchecked
  (``Hold.check=False``): the spend is counted and its alerts fire, the call is never refused;
* a refusal by a budget that does not deny here (warn or audit) retries under a new id with the
  non-enforced holds unchecked; a refusal by an enforced one raises ``BudgetExceeded``;
* an unreachable ledger refuses the call (``PolicyViolation`` naming the ledger) unless no budget
  that holds for it is enforced with ``onError: deny`` — then the call goes ahead unreserved.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from costwarden.enforcers.guarded_call import GuardedCall, merge_holds
from costwarden.engine.decision import Decision
from costwarden.engine.ledger import Hold, Reservation
from costwarden.errors import BudgetExceeded, PolicyViolation, describe

if TYPE_CHECKING:
    from costwarden.enforcers.callguard import CallGuard

log = logging.getLogger("costwarden.callguard")


def reserve_call(guard: CallGuard, call: GuardedCall, holds: Sequence[Hold], ttl_s: float) -> None:
    """Reserve ``holds`` for ``call`` all-or-nothing (sets ``call.held``); raises BudgetExceeded on a
    refusal by an enforced budget, PolicyViolation when the ledger is down and budgets fail closed."""
    merged = merge_holds(holds)
    if not merged or guard.ledger is None:
        return
    over = {h.key for r in call.decision.results if r.result != "pass" for h in r.holds}
    if over:  # budgets already over their limit that only warn here: count the spend, never refuse
        merged = [dataclasses.replace(h, check=False) if h.key in over else h for h in merged]
    outcome = _try_reserve(guard, call, merged, ttl_s)
    if outcome is None:
        return
    if not outcome.granted and outcome.refused_key not in _enforced_keys(guard, call.decision):
        # A budget that only warns (or audits) here never refuses a call: hold the amounts
        # anyway, so the spend is counted, without checking their limits (a new id: refusals are kept).
        log.warning("%s call to %s goes ahead over budget %s: its policy does not deny on the runtime "
                    "surface", call.edge.name, call.model, outcome.refused_key)
        enforced = _enforced_keys(guard, call.decision)
        merged = [h if h.key in enforced else dataclasses.replace(h, check=False) for h in merged]
        outcome = _try_reserve(guard, call, merged, ttl_s)  # the ledger may fail here too
        if outcome is None:
            return
    if not outcome.granted:
        spent = f"${outcome.spent_usd:,.4f} spent of " if outcome.spent_usd is not None else ""
        limit = f"${outcome.limit_usd:,.2f}" if outcome.limit_usd is not None else "its limit"
        err = BudgetExceeded(
            call.decision,
            f"{call.edge.name} call to {call.model} refused: reserving ${sum(h.amount_usd for h in merged):,.4f} "
            f"would exceed budget {outcome.refused_key} ({spent}{limit})",
        )
        guard.record_denial(call.edge, call.body, err, call.model_requested, call.started_at, call.started)
        raise err
    call.held = True
    call.holds, call.ttl_s = tuple(merged), ttl_s

def _try_reserve(guard: CallGuard, call: GuardedCall, holds: Sequence[Hold], ttl_s: float) -> Reservation | None:
    """Reserve under a new id; on a ledger outage, refuse (fail closed) unless every budget
    here says ``onError: allow`` or is not enforced, in which case the call goes ahead
    unreserved (None)."""
    assert guard.ledger is not None
    call.reservation_id = reservation_id()
    try:
        return guard.ledger.reserve(call.reservation_id, holds, ttl_s=ttl_s, now=call.started_at)
    except Exception as exc:  # fail closed: spend that cannot be verified is not allowed ...
        if not _fails_closed(guard, call.decision):  # ... unless every budget here says otherwise
            log.warning("%s call to %s goes ahead unreserved: the budget ledger is unavailable (%s) and "
                        "its budgets are not enforced or say onError: allow", call.edge.name, call.model,
                        describe(exc))
            call.reservation_id = None
            return None
        err = PolicyViolation(
            call.decision,
            f"{call.edge.name} call to {call.model} refused: the budget ledger is unavailable "
            f"({describe(exc)}); enforced budgets fail closed",
        )
        guard.record_denial(call.edge, call.body, err, call.model_requested, call.started_at, call.started)
        raise err from exc

def _enforced_keys(guard: CallGuard, decision: Decision) -> set[str]:
    """Budget keys whose refusal refuses the call: held by results that deny on this surface,
    of budgets that deny (or downgrade) when exceeded."""
    warn_only = guard.warn_only_budgets
    enforced = (r for r in decision.results if r.effect == "deny" and (r.policy, r.rule) not in warn_only)
    return {h.key for r in enforced for h in r.holds}

def _fails_closed(guard: CallGuard, decision: Decision) -> bool:
    """Whether an unreachable ledger denies the call: the policy's ``onError`` decides (DESIGN.md,
    "Money and state"), so it does when a budget that holds for it is enforced (``deny`` on this
    surface) with ``onError: deny``, the default. Only evaluated on an outage."""
    lenient = {p.name for p in guard.policies.policies if p.on_error != "deny"}
    return any(r.holds and r.effect == "deny" and r.policy not in lenient for r in decision.results)


def reservation_id() -> str:
    """A reservation id unique across processes and restarts: 96 random bits drawn once per
    process (again after a fork), then a counter — a uuid4 costs a getrandom syscall per call."""
    if _IDS.pid != os.getpid():
        _IDS.reset()
    return f"cw-{_IDS.prefix}{next(_IDS.counter):x}"


class _Ids:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pid = os.getpid()
        self.prefix = f"{uuid.uuid4().hex[:24]}-"
        self.counter = itertools.count()


_IDS = _Ids()


__all__ = ["reservation_id", "reserve_call"]
