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

from costwarden.engine.decision import Decision, Fix
from costwarden.engine.patch import split
from costwarden.errors import EnforcementError

MAX_ROUNDS = 3


def apply_patch(doc: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """A patched deep copy of ``doc`` (add, replace, remove, test; ``-`` appends to a list)."""
    result = copy.deepcopy(doc)
    for op in ops:
        result = _apply_one(result, op)
    return result


def _apply_one(doc: Any, op: Mapping[str, Any]) -> Any:
    kind, tokens = op.get("op"), split(str(op.get("path", "")))
    if not tokens:
        if kind in ("add", "replace"):
            return copy.deepcopy(op["value"])
        raise EnforcementError(f"cannot {kind} the document root")
    parent = doc
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if kind == "test":
        current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
        if current != op.get("value"):
            raise EnforcementError(f"test failed at {op['path']}")
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
    elif kind in ("add", "replace"):
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        parent.pop(last, None)
    else:
        raise EnforcementError(f"unsupported JSON Patch operation {kind!r}")
    return doc


@dataclass
class FixOutcome:
    """The fixed document, the decision on it, and every fix applied on the way."""

    document: Any
    decision: Decision
    applied: list[Fix] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def fix_until_clean(
    doc: Any, judge: Callable[[Any], Decision], *, target: str = "object", max_rounds: int = MAX_ROUNDS
) -> FixOutcome:
    """Apply the blocking failures' fixes for ``target`` and judge again, until none is left.

    Stops when the decision allows, when a blocking failure has no fix (the fixes cannot help),
    or after ``max_rounds``; the caller reads ``outcome.decision`` for the final verdict.
    """
    decision = judge(doc)
    outcome = FixOutcome(doc, decision)
    for _ in range(max_rounds):
        blocking = decision.blocking
        if not blocking or any(r.fix is None or r.fix.target != target for r in blocking):
            break
        fixes = [r.fix for r in blocking if r.fix is not None]
        ops = [op for f in fixes for op in f.patch]
        if not ops:
            break
        doc = apply_patch(doc, ops)
        decision = judge(doc)
        outcome = FixOutcome(doc, decision, outcome.applied + fixes)
    return outcome


__all__ = ["MAX_ROUNDS", "FixOutcome", "apply_patch", "fix_until_clean"]
