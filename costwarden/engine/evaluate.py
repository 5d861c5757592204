"""The evaluator: one immutable, thread-safe :class:`PolicySet` judges subjects on a surface.

Policies are indexed by subject type at compile time; the candidates for a (provider, kind) pair
are worked out once and memoised. Evaluating a subject never raises: a failing rule, a CEL error
or an unreachable ledger becomes an ``error`` result whose effect the policy's ``onError`` sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costwarden.engine.catalog import Catalog
from costwarden.engine.cel import CelEvalError
from costwarden.engine.compile import CompiledPolicy, CompiledRule
from costwarden.engine.decision import SURFACES, Decision, Effect, Outcome, RuleResult, SubjectRef, Surface
from costwarden.engine.exemptions import CompiledExemption, ExemptionIndex
from costwarden.engine.ledger import Ledger
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.rules.base import EvalContext
from costwarden.engine.subjects import Subject
from costwarden.errors import describe

Clock = Callable[[], datetime]
_CACHE_LIMIT = 4096


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PolicySet:
    """A compiled set of policies, exemptions and the model catalog. Safe to share between threads.

    >>> import costwarden
    >>> policies = costwarden.load_policies()              # the built-in library
    >>> decision = policies.evaluate(subject, surface="ci")  # doctest: +SKIP
    """

    policies: tuple[CompiledPolicy, ...]
    exemptions: tuple[CompiledExemption, ...]
    catalog: Catalog
    pricer: LlmPricer | None
    files: tuple[str, ...] = ()
    clock: Clock = utc_now
    _by_type: dict[str, tuple[CompiledPolicy, ...]] = field(init=False, repr=False, compare=False)
    _exemption_index: ExemptionIndex = field(init=False, repr=False, compare=False)
    _candidates: dict[tuple[str, str, str], tuple[CompiledPolicy, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_type: dict[str, list[CompiledPolicy]] = {}
        for policy in self.policies:
            by_type.setdefault(policy.subject_type, []).append(policy)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})
        object.__setattr__(self, "_exemption_index", ExemptionIndex.build(list(self.exemptions)))
        object.__setattr__(self, "_candidates", {})

    # --- inspection ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.policies)

    def __iter__(self) -> Iterator[CompiledPolicy]:
        return iter(self.policies)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.policies]

    def get(self, name: str) -> CompiledPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    def with_clock(self, clock: Clock) -> PolicySet:
        """The same policies judged against another clock (exemption expiry, budget windows)."""
        return PolicySet(self.policies, self.exemptions, self.catalog, self.pricer, self.files, clock)

    # --- evaluation ------------------------------------------------------------------------------

    def candidates(self, subject: Subject) -> tuple[CompiledPolicy, ...]:
        """Policies whose subject type, providers and kinds admit the subject (memoised)."""
        key = (subject.type, subject.provider, subject.kind)
        found = self._candidates.get(key)
        if found is None:
            found = tuple(
                p for p in self._by_type.get(subject.type, ()) if p.match.matches_kind(subject.provider, subject.kind)
            )
            if len(self._candidates) < _CACHE_LIMIT:
                self._candidates[key] = found
        return found

    def evaluate(
        self, subject: Subject, surface: Surface = "ci", *, now: datetime | None = None, ledger: Ledger | None = None
    ) -> Decision:
        """Judge ``subject`` with every matching policy on ``surface``."""
        if surface not in SURFACES:
            raise ValueError(f"unknown surface {surface!r}; surfaces: {', '.join(SURFACES)}")
        when = now or self.clock()
        if when.tzinfo is None:  # a naive time is read as UTC, as exemption expiries are
            when = when.replace(tzinfo=UTC)
        ctx = EvalContext(surface, when, ledger, self.pricer)
        results: list[RuleResult] = []
        for policy in self.candidates(subject):
            effect = policy.effects[surface]
            if effect != "off":
                self._evaluate_policy(policy, effect, subject, ctx, results)
        return Decision(surface, _ref(subject), tuple(results))

    def _evaluate_policy(
        self, policy: CompiledPolicy, effect: Effect, subject: Subject, ctx: EvalContext, results: list[RuleResult]
    ) -> None:
        try:
            if not policy.match.matches_rest(subject):
                return
            if policy.exclude is not None and policy.exclude.matches(subject):
                return
        except CelEvalError as exc:
            results.append(
                self._result(policy, _WHEN_RULE, Outcome("error", f"match.when failed: {exc}"), effect, subject, ctx)
            )
            return
        for rule in policy.rules:
            try:
                outcome: Any = rule.check(subject, ctx)
            except Exception as exc:  # never raise out of the engine: an error is a result
                outcome = Outcome("error", describe(exc))
            if isinstance(outcome, Outcome):
                results.append(self._result(policy, rule, outcome, effect, subject, ctx))
            else:
                results.extend(self._result(policy, rule, o, effect, subject, ctx) for o in outcome)

    def _result(
        self, policy: CompiledPolicy, rule: CompiledRule, o: Outcome, effect: Effect, subject: Subject, ctx: EvalContext
    ) -> RuleResult:
        kind: Any = o.result
        message = o.message
        if o.result == "error":
            effect = effect if policy.on_error == "deny" else "audit"
        elif o.result == "fail":
            if o.advisory and effect == "deny":
                effect = "warn"
            if effect == "warn":
                kind = "warn"
            if rule.message:
                message = f"{rule.message} ({o.message})" if o.message else rule.message
        exemption = None
        if kind in ("fail", "warn", "error"):
            active, expired = self._exemption_index.lookup(policy.name, rule.name, subject, ctx.now)
            if active is not None:
                kind, exemption = "skip", active.name
                message = f"{message} [exempted by {active.describe()}]"
            elif expired is not None:
                message = f"{message} [exemption {expired.name} expired {expired.expires:%Y-%m-%d %H:%M} UTC]"
        return RuleResult(
            policy=policy.name,
            rule=rule.name,
            result=kind,
            effect=effect,
            severity=rule.severity,
            message=message,
            path=o.path,
            expected=o.expected,
            actual=o.actual,
            exemption=exemption,
            fix=o.fix,
            savings_usd_month=o.savings_usd_month,
            savings_usd_per_call=o.savings_usd_per_call,
            holds=o.holds if kind == "pass" else (),
        )


_WHEN_RULE = CompiledRule("match", "when", lambda s, c: Outcome("skip"), "medium", None)


def _ref(subject: Subject) -> SubjectRef:
    src = subject.source
    return SubjectRef(
        subject.type, subject.provider, subject.kind, subject.name, subject.namespace, src.file, src.line, src.pointer
    )


__all__ = ["Clock", "PolicySet", "utc_now"]
