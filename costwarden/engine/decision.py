"""Results, fixes and the Decision they combine into — plain data that serialises to JSON.

Every (subject, policy, rule) evaluation yields a :class:`RuleResult` with a ``result`` in the
PolicyReport vocabulary and the ``effect`` its policy has on the surface. How results combine into
a verdict lives here and nowhere else:

* a ``fail`` whose effect is ``deny`` denies;
* an ``error`` whose effect is ``deny`` (the policy's ``onError: deny``) denies — an error is
  never a pass;
* ``warn`` effects surface as warnings, ``audit`` effects are only recorded;
* an exempted failure is reported as ``skip`` with the exemption's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

if TYPE_CHECKING:
    from costwarden.engine.ledger import Hold

ResultKind = Literal["pass", "fail", "warn", "error", "skip"]
Effect = Literal["deny", "warn", "audit", "off"]
Surface = Literal["admission", "ci", "runtime", "audit"]
Severity = Literal["info", "low", "medium", "high", "critical"]
Verdict = Literal["allow", "deny"]

RESULTS: tuple[str, ...] = get_args(ResultKind)
EFFECTS: tuple[str, ...] = get_args(Effect)
SURFACES: tuple[str, ...] = get_args(Surface)
SEVERITIES: tuple[str, ...] = get_args(Severity)

DECISION_SCHEMA_VERSION = "costwarden.dev/decision/v1"


@dataclass(frozen=True, slots=True)
class Fix:
    """A concrete edit that resolves a failure.

    ``patch`` is a list of RFC 6902 JSON Patch operations on the raw input — the Kubernetes
    object, the cloud resource, or the LLM request body (``target`` says which) — so an enforcer
    can apply it without knowing the rule that produced it.
    """

    description: str
    patch: tuple[Mapping[str, Any], ...] = ()
    target: Literal["object", "request", "args"] = "object"

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "target": self.target,
            "patch": [dict(op) for op in self.patch],
        }


class Outcome(NamedTuple):
    """What a compiled rule check returns; the evaluator turns it into a RuleResult.

    Named tuples rather than frozen dataclasses: they are built on the per-subject hot path, and
    a tuple is several times cheaper to construct while just as immutable.
    """

    result: Literal["pass", "fail", "error", "skip"]
    message: str = ""
    path: str | None = None
    expected: Any = None
    actual: Any = None
    fix: Fix | None = None
    savings_usd_month: float | None = None
    savings_usd_per_call: float | None = None
    advisory: bool = False
    """An advisory failure never denies: where its policy would deny, it warns instead."""
    holds: tuple[Hold, ...] = ()
    """Budget amounts the call-guard must reserve if the call goes ahead (``budget`` rules)."""
    static: bool = False
    """Built once at compile time and returned for every subject: its result may be cached."""


class RuleResult(NamedTuple):
    """One rule's result on one subject, with everything needed to explain it."""

    policy: str
    rule: str
    result: ResultKind
    effect: Effect
    severity: Severity
    message: str
    path: str | None = None
    expected: Any = None
    actual: Any = None
    exemption: str | None = None
    fix: Fix | None = None
    savings_usd_month: float | None = None
    savings_usd_per_call: float | None = None
    holds: tuple[Hold, ...] = ()

    @property
    def is_blocking(self) -> bool:
        """Whether this result denies the subject on its surface."""
        return self.effect == "deny" and self.result in ("fail", "error")

    @property
    def is_violation(self) -> bool:
        """A failure of any effect (fail, warn, or a fail recorded in audit mode)."""
        return self.result in ("fail", "warn")

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "result": self.result,
            "effect": self.effect,
            "severity": self.severity,
            "message": self.message,
            "path": self.path,
            "expected": _plain(self.expected),
            "actual": _plain(self.actual),
            "exemption": self.exemption,
            "fix": self.fix.to_dict() if self.fix else None,
            "savings_usd_month": self.savings_usd_month,
            "savings_usd_per_call": self.savings_usd_per_call,
        }


class SubjectRef(NamedTuple):
    """Who a decision is about, in the few fields a report shows (a named tuple: one is built
    per subject judged)."""

    type: str
    provider: str
    kind: str
    name: str
    namespace: str | None = None
    file: str | None = None
    line: int | None = None
    pointer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "source": {"file": self.file, "line": self.line, "pointer": self.pointer},
        }


class _DecisionFields(NamedTuple):
    surface: Surface
    subject: SubjectRef
    results: tuple[RuleResult, ...] = ()
    allowed: bool = True


class Decision(_DecisionFields):
    """The verdict of a whole policy set on one subject for one surface.

    ``allowed`` is worked out from ``results`` when the Decision is built (no result blocks), so
    reading the verdict costs a field read; it is never given by the caller, and ``_replace``
    works it out again.
    """

    __slots__ = ()

    def __new__(
        cls, surface: Surface, subject: SubjectRef, results: tuple[RuleResult, ...] = (), allowed: bool | None = None
    ) -> Decision:
        # ``allowed`` is accepted (pickling passes every field back) but always recomputed
        for r in results:  # noqa: SIM110 - RuleResult.is_blocking inlined; all() and a generator cost 2x
            if r.effect == "deny" and (r.result == "fail" or r.result == "error"):
                return tuple.__new__(cls, (surface, subject, results, False))
        return tuple.__new__(cls, (surface, subject, results, True))

    def _replace(self, **changes: Any) -> Decision:
        unknown = set(changes) - {"surface", "subject", "results", "allowed"}
        if unknown:
            raise ValueError(f"Decision has no fields {sorted(unknown)}")
        surface = changes.get("surface", self.surface)
        return Decision(surface, changes.get("subject", self.subject), changes.get("results", self.results))

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Decision:  # type: ignore[override]  # works out allowed
        return cls(*iterable)

    @property
    def verdict(self) -> Verdict:
        return "allow" if self.allowed else "deny"

    @property
    def blocking(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.is_blocking)

    @property
    def warnings(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.result == "warn")

    @property
    def violations(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.result in ("fail", "warn", "error"))

    def fixes(self, *, only_blocking: bool = False) -> list[Fix]:
        """Fixes of the failures, in result order (an enforcer applies them in this order)."""
        chosen = self.blocking if only_blocking else self.violations
        return [r.fix for r in chosen if r.fix is not None]

    @property
    def holds(self) -> tuple[Hold, ...]:
        """Every budget hold the results ask to reserve (all or nothing, in one ledger call)."""
        return tuple(h for r in self.results for h in r.holds)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RESULTS, 0)
        for r in self.results:
            out[r.result] += 1
        return out

    def result_for(self, policy: str, rule: str) -> RuleResult | None:
        return next((r for r in self.results if r.policy == policy and r.rule == rule), None)

    def summary(self) -> str:
        """One line: the verdict and the blocking results with their fixes."""
        if self.allowed:
            return f"allowed by {len(self.results)} result(s)"
        parts = []
        for r in self.blocking:
            fix = f" (fix: {r.fix.description})" if r.fix else ""
            parts.append(f"[{r.policy}/{r.rule}] {r.message}{fix}")
        return "denied: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DECISION_SCHEMA_VERSION,
            "surface": self.surface,
            "verdict": self.verdict,
            "subject": self.subject.to_dict(),
            "counts": self.counts(),
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _plain(value: Any) -> Any:
    """Make expected/actual JSON-safe (tuples, sets and mappings become lists and dicts)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items: Iterable[Any] = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    return str(value)


__all__ = [
    "DECISION_SCHEMA_VERSION",
    "EFFECTS",
    "RESULTS",
    "SEVERITIES",
    "SURFACES",
    "Decision",
    "Effect",
    "Fix",
    "Outcome",
    "ResultKind",
    "RuleResult",
    "Severity",
    "SubjectRef",
    "Surface",
    "Verdict",
]
