"""Apply a Decision's fixes to the raw input and re-judge until nothing fixable is left.

Fixes are RFC 6902 JSON Patch operations; several fixes may touch the same path (two model
downgrades from two rules), so fixes are applied and the result judged again, up to a few rounds,
until no blocking failure with a fix remains. Enforcers (admission webhook, call-guard, examples)
share this one implementation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costwarden.engine import patch
from costwarden.engine.decision import Decision, Fix, RuleResult
from costwarden.errors import EnforcementError, describe

MAX_ROUNDS = 3


def apply_patch(doc: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """A patched deep copy of ``doc``; raises EnforcementError when an operation does not apply."""
    try:
        return patch.apply_patch(copy.deepcopy(doc), ops)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EnforcementError(f"fix does not apply: {describe(exc)}") from exc


@dataclass
class FixOutcome:
    """The fixed document, the decision on it, and every fix applied on the way."""

    document: Any
    decision: Decision
    applied: list[Fix] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def blocking_fixes(target: str) -> Callable[[Sequence[Decision]], list[RuleResult] | None]:
    """Select the blocking failures' fixes on ``target``; None (stop) when one has no such fix."""

    def select(decisions: Sequence[Decision]) -> list[RuleResult] | None:
        blocking = [r for d in decisions for r in d.blocking]
        if any(r.fix is None or r.fix.target != target for r in blocking):
            return None
        return blocking

    return select


def fix_until_clean(
    doc: Any,
    judge: Callable[[Any], Decision],
    *,
    target: str = "object",
    max_rounds: int = MAX_ROUNDS,
    select: Callable[[Sequence[Decision]], list[RuleResult] | None] | None = None,
) -> FixOutcome:
    """Apply the selected failures' fixes and judge again, until none is left.

    By default the blocking failures are fixed, and fixing stops when one of them has no fix on
    ``target`` (the fixes cannot make the subject pass). Within a round, a fix whose paths
    overlap one applied earlier waits for the next round (its operations were computed on the
    round's starting document); a fix that no longer applies is dropped, never half-applied.
    """
    chooser = select or blocking_fixes(target)
    decision = judge(doc)
    outcome = FixOutcome(doc, decision)
    for _ in range(max_rounds):
        pending = chooser([decision])
        if not pending:
            break
        doc, done = apply_round(doc, pending)
        if not done:
            break
        decision = judge(doc)
        outcome = FixOutcome(doc, decision, outcome.applied + [r.fix for r in done if r.fix is not None])
    return outcome


def apply_round(doc: Any, pending: list[RuleResult]) -> tuple[Any, list[RuleResult]]:
    """Apply each pending fix whose paths do not overlap one applied before it in the round.
    Returns the patched copy and the results whose fixes applied."""
    touched: list[list[str]] = []
    done: list[RuleResult] = []
    for result in pending:
        if result.fix is None or not result.fix.patch:
            continue
        paths = [patch.split(str(op.get(k))) for op in result.fix.patch for k in ("path", "from") if k in op]
        if any(_overlaps(p, t) for p in paths for t in touched):
            continue
        try:
            doc = apply_patch(doc, result.fix.patch)
        except EnforcementError:
            continue
        touched += paths
        done.append(result)
    return doc, done


def _overlaps(a: list[str], b: list[str]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


__all__ = ["MAX_ROUNDS", "FixOutcome", "apply_patch", "apply_round", "blocking_fixes", "fix_until_clean"]
