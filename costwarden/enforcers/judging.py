"""How the call-guard judges a request before it leaves: the ``llm_call`` subject, the runtime
decision, the request fixes, and the refusal with its cost event; and which rules judge a call's
outcome afterwards (:func:`post_call_policies`). The functions read the guard's settings
(policies, ledger, defaults, fixes); :class:`~costwarden.enforcers.callguard.CallGuard` calls them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.attribution import Attribution, current_attribution
from costwarden.enforcers.fixes import FixOutcome, apply_patch, fix_until_clean
from costwarden.engine.decision import Decision, Fix, RuleResult
from costwarden.engine.subjects import LlmCall
from costwarden.errors import BudgetExceeded, EnforcementError, PolicyViolation

if TYPE_CHECKING:
    from costwarden.adapters.events.event import CostEvent
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import ProviderEdge
    from costwarden.engine.evaluate import PolicySet


def judge_request(
    guard: CallGuard, edge: ProviderEdge, body: Mapping[str, Any], who: Attribution, *, batch: bool, now: datetime
) -> tuple[Mapping[str, Any], LlmCall, Decision, tuple[str, ...]]:
    """Evaluate, apply request fixes and re-evaluate until nothing fixable blocks: (the body to
    send, its subject, its decision, the fixes applied). Raises the refusal, judged on the fixed
    body, when it is still blocked."""
    subject = subject_of(guard, edge, body, who, batch)
    policies, ledger = guard.policies, guard.ledger
    first = policies.evaluate(subject, "runtime", now=now, ledger=ledger, reserving=True)
    if first.allowed:  # nothing blocks, so there is nothing to fix (what fix_until_clean would find)
        return body, subject, first, ()
    judged: list[LlmCall] = [subject]
    decisions = [first]

    def judge(doc: Mapping[str, Any]) -> Decision:
        if decisions:  # the body as sent was judged above
            return decisions.pop()
        judged.append(subject_of(guard, edge, doc, who, batch))
        return policies.evaluate(judged[-1], "runtime", now=now, ledger=ledger, reserving=True)

    if guard.apply_fixes:
        outcome = fix_until_clean(body, judge, max_rounds=guard.max_fix_rounds, select=_request_fixes)
    else:
        outcome = FixOutcome(body, judge(body))
    if not outcome.decision.allowed:
        raise refusal(guard, edge, judged[-1], outcome.decision, outcome.document, asked=subject.model)
    final = outcome.document
    applied = (f.description for f in outcome.applied if _reflected(final, f))
    return final, judged[-1], outcome.decision, tuple(dict.fromkeys(applied))


def _request_fixes(decisions: Sequence[Decision]) -> list[RuleResult] | None:
    """The blocking failures' request fixes, even beside failures that have none: a budget's
    verdict depends on the model and ``max_tokens`` the other fixes change (a call whose worst
    case is over budget as Opus may fit once downgraded). None (stop) when no fix is left."""
    fixable = [r for d in decisions for r in d.blocking if r.fix is not None and r.fix.target == "request"]
    return fixable or None


def subject_of(guard: CallGuard, edge: ProviderEdge, body: Mapping[str, Any], who: Attribution,
               batch: bool) -> LlmCall:
    """The ``llm_call`` subject of ``body``: attribution from ``who``, then the body, then the guard's defaults."""
    d = guard.defaults
    tags = {**d.tags, **who.tags} if d.tags else who.tags
    subject = edge.subject(
        body, feature=who.feature or d.feature, user=who.user, team=who.team or d.team, tags=tags, batch=batch
    )
    return dataclasses.replace(subject, user=d.user) if subject.user is None and d.user else subject


def refusal(
    guard: CallGuard, edge: ProviderEdge, subject: LlmCall, decision: Decision,
    request: Mapping[str, Any] | None = None, *, asked: str | None = None,
) -> PolicyViolation:
    """The error a refused call raises: :class:`BudgetExceeded` when a budget failed, else
    :class:`PolicyViolation`; ``request`` is the body ``decision`` judged, ``asked`` the model the
    caller asked for when fixes changed it."""
    blocking = decision.blocking
    budget = any(r.result == "fail" and (r.policy, r.rule) in guard.budget_rules for r in blocking)
    cls = BudgetExceeded if budget else PolicyViolation
    model = subject.model if asked in (None, subject.model) else f"{asked} (rewritten to {subject.model})"
    message = f"{edge.name} call to {model} refused before sending — {decision.summary()}"
    return cls(decision, message, request=request)


def refusal_event(
    guard: CallGuard, edge: ProviderEdge, body: Mapping[str, Any], exc: PolicyViolation, model_requested: str,
    now: datetime, started: float, *, batch: bool = False,
) -> CostEvent:
    """The cost event of a call refused before sending (nothing spent)."""
    from costwarden.adapters.events.event import CostEvent

    who = current_attribution()
    user = who.user or _body_user(edge, body, batch)  # as subject_of: the context, the body, the defaults
    who = who.over(guard.defaults)
    return CostEvent(
        provider=edge.name,
        api="batch" if batch or edge.batch_items is not None else exc.decision.subject.kind,
        model_requested=model_requested,
        model=str((exc.request if isinstance(exc.request, Mapping) else body).get("model", model_requested)),
        outcome="denied",
        verdict="deny",
        started_at=now,
        finished_at=now,
        feature=who.feature,
        user=user or who.user,
        team=who.team,
        tags=dict(who.tags),
        stream=body.get("stream") is True,
        batch=batch or edge.batch_items is not None,
        latency_ms=(time.perf_counter() - started) * 1000,
        findings=tuple(f"{r.policy}/{r.rule}: {r.message}" for r in exc.decision.violations),
        error=str(exc),
    )


def _body_user(edge: ProviderEdge, body: Mapping[str, Any], batch: bool) -> str | None:
    """The user the body names (``metadata.user_id``, ``safety_identifier``, ``user``), if any."""
    try:
        return edge.subject(body, batch=batch).user
    except Exception:  # a body the adapter cannot read has no user to report
        return None


def _reflected(doc: Mapping[str, Any], fix: Fix) -> bool:
    """Whether ``fix`` shows in the final body (a downgrade a later round superseded does not)."""
    try:
        return bool(apply_patch(doc, fix.patch) == doc)
    except (EnforcementError, LookupError, TypeError, ValueError):
        return False


def replace_item(body: Mapping[str, Any], pointer: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the batch item at ``/requests/<i>/params`` replaced (copying only that path)."""
    index = int(pointer.split("/")[2])
    requests = list(body["requests"])
    requests[index] = {**requests[index], "params": params}
    return {**body, "requests": requests}


POST_CALL_RULE_KINDS = frozenset({"requirePromptCaching", "expr"})
"""Rule kinds that judge a call's outcome (usage, actual cost, latency). The others only repeat their
pre-call verdict (``budget`` checks settled spend, which the settlement itself just moved), so the
post-call phase runs these alone, without the ledger."""


def post_call_policies(policies: PolicySet) -> PolicySet | None:
    """The policy set narrowed to its post-call rules, or None when it has none."""
    narrowed = []
    for policy in policies.policies:
        rules = tuple(r for r in policy.rules if r.kind in POST_CALL_RULE_KINDS)
        if rules:
            narrowed.append(policy if len(rules) == len(policy.rules) else dataclasses.replace(policy, rules=rules))
    return dataclasses.replace(policies, policies=tuple(narrowed)) if narrowed else None


__all__ = ["POST_CALL_RULE_KINDS", "judge_request", "post_call_policies", "refusal", "refusal_event", "replace_item",
           "subject_of"]
