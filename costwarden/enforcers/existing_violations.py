"""Pre-existing violations on UPDATE: Kyverno's ``allowExistingViolations``, made to notice "worse".

Installing a policy must not block every routine edit (a label change, ``kubectl rollout
restart``'s annotation) of the workloads admitted before it existed. So on UPDATE the old object
is judged too, and a violation of the new object that the old object already had, **no worse**,
is not a reason to deny: it becomes a ``warn`` result whose message says it pre-existed (the
API server shows it as a warning) and loses its fix (``/mutate`` leaves what it did not cause as
it is, so a label change never moves a workload onto spot nodes or rewrites its labels).

"The same violation" is judged from structured data, never from messages (they embed names and
prices): the subject (type, kind, name — for a vLLM container, the workload and container name and
the pod template it sits in, not its index, so inserting a sidecar before it or reordering the
containers changes nothing, while a renamed container is a new one, as Kubernetes sees it), the
policy, the rule and the path the rule examined must match, and the rule's measured ``actual``
value must not have moved away from what it ``expected``:

* numbers (``maxHourlyCost``'s $/hour, a vLLM setting against its floor, TP×PP against the GPUs
  held): the distance to ``expected`` did not grow — scaling 4 → 40 GPUs while over a cost cap is
  worse, 40 → 10 is not;
* mappings (``requireTags``' failing tags → values): no tag fails that did not, none with a new value;
  an ``expr`` rule's CEL measures the subject values it read (``subject.workload.replicas`` → 12,
  the whole subject when it may read anything), so its failure is pre-existing only while they
  are unchanged — under ``replicas <= 10`` a label edit is excused, ``kubectl scale`` 12 → 500 is
  not, nor 12 → 11 (a CEL expression does not say which way is better; 12 → 10 passes outright);
* lists (deprecated vLLM arguments): no new entry;
* anything else: ``expected`` and ``actual`` unchanged.

``error`` results are never excused: an evaluation that failed is not a known violation. The old
object is judged by today's policies, as in Kyverno: a violation of a policy installed after the
object was admitted is pre-existing on its next update (that is what the setting is for).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from costwarden.engine.decision import Decision, RuleResult, SubjectRef

PREEXISTING = "pre-existing violation, not made worse by this update"
WORSE = "the object already violated this rule; this update makes it worse"

FailureKey = tuple[str, str, str, str | None, str, str, str | None]
# ``.../containers/3`` at the end of a named container's pointer: its index, not its identity.
_CONTAINER_INDEX = re.compile(r"/(?:containers|initContainers)/\d+$")


def is_violation(r: RuleResult) -> bool:
    """A failure an enforcer acts on: it denies, warns, or (with a fix) is patched by /mutate."""
    return r.result in ("fail", "warn") and r.effect in ("deny", "warn")


def failure_key(subject: SubjectRef, r: RuleResult) -> FailureKey:
    """What identifies one violation across the old and the new object (no free text). A named
    container (subject ``<workload>/<container>``: object names never hold a ``/``) is known by
    its name within its pod template, not by its index among the containers."""
    pointer = subject.pointer
    if pointer and "/" in subject.name:
        pointer = _CONTAINER_INDEX.sub("/containers", pointer)
    return subject.type, subject.kind, subject.name, pointer, r.policy, r.rule, r.path


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def no_worse(old: RuleResult, new: RuleResult) -> bool:
    """Whether ``new`` measures at most as badly as ``old`` (same policy, rule and path)."""
    old_actual, new_actual = _number(old.actual), _number(new.actual)
    old_expected, new_expected = _number(old.expected), _number(new.expected)
    if old_actual is not None and new_actual is not None and old_expected is not None and new_expected is not None:
        return abs(new_actual - new_expected) <= abs(old_actual - old_expected)
    if new.expected != old.expected:
        return False
    if isinstance(new.actual, Mapping) and isinstance(old.actual, Mapping):
        return all(k in old.actual and old.actual[k] == v for k, v in new.actual.items())
    if isinstance(new.actual, list | tuple) and isinstance(old.actual, list | tuple):
        return all(item in old.actual for item in new.actual)
    return bool(new.actual == old.actual)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The violations of the object an UPDATE replaces, and how to excuse them in the new one's
    decisions.

    >>> baseline = Baseline.of(evaluate_object(policies, old_object))   # doctest: +SKIP
    >>> decisions = baseline.excuse(evaluate_object(policies, new_object))  # doctest: +SKIP
    """

    violations: Mapping[FailureKey, RuleResult]

    @classmethod
    def of(cls, decisions: Sequence[Decision]) -> Baseline:
        return cls({failure_key(d.subject, r): r for d in decisions for r in d.results if is_violation(r)})

    def excuse(self, decisions: Sequence[Decision]) -> list[Decision]:
        """``decisions`` with each violation the old object had, no worse, turned into a warning
        without a fix; a violation made worse says so in its message."""
        return [self._excuse_one(d) for d in decisions]

    def _excuse_one(self, decision: Decision) -> Decision:
        results = tuple(self._rewrite(decision.subject, r) for r in decision.results)
        return decision if all(a is b for a, b in zip(results, decision.results, strict=True)) \
            else decision._replace(results=results)

    def _rewrite(self, subject: SubjectRef, r: RuleResult) -> RuleResult:
        if not is_violation(r):
            return r
        old = self.violations.get(failure_key(subject, r))
        if old is None:
            return r
        if no_worse(old, r):
            return r._replace(result="warn", effect="warn", message=f"{PREEXISTING}: {r.message}", fix=None)
        return r._replace(message=f"{r.message} ({WORSE})")


__all__ = ["PREEXISTING", "WORSE", "Baseline", "FailureKey", "failure_key", "is_violation", "no_worse"]
