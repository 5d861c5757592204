"""The evaluator: one immutable, thread-safe :class:`PolicySet` judges subjects on a surface.

Policies are indexed by subject type at compile time; the candidates for a (provider, kind) pair
are worked out once and memoised. Evaluating a subject never raises: a failing rule, a CEL error
or an unreachable ledger becomes an ``error`` result whose effect the policy's ``onError`` sets.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costwarden.engine.catalog import Catalog
from costwarden.engine.cel import CelEvalError
from costwarden.engine.compile import CompiledPolicy, CompiledRule
from costwarden.engine.decision import SURFACES, Decision, Effect, Outcome, RuleResult, SubjectRef, Surface
from costwarden.engine.exemptions import CompiledExemption, ExemptionIndex
from costwarden.engine.judge import Judge
from costwarden.engine.ledger import Hold, Ledger
from costwarden.engine.plan import Finish, Results, Runner, Step, compile_plan, plan_body
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.rules.base import EvalContext
from costwarden.engine.subjects import Subject

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
    _contexts: dict[str, EvalContext] = field(init=False, repr=False, compare=False)
    _runners: dict[str, dict[str, Runner]] = field(init=False, repr=False, compare=False)
    _judges: dict[str, Callable[[Subject], Decision]] = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_type: dict[str, list[CompiledPolicy]] = {}
        for policy in self.policies:
            by_type.setdefault(policy.subject_type, []).append(policy)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})
        object.__setattr__(self, "_exemption_index", ExemptionIndex.build(list(self.exemptions)))
        object.__setattr__(self, "_candidates", {})
        object.__setattr__(self, "_runners", {s: {} for s in SURFACES})
        object.__setattr__(self, "_judges", {})
        object.__setattr__(self, "_lock", threading.Lock())
        contexts = {s: EvalContext(s, self.clock, None, self.pricer) for s in SURFACES}  # type: ignore[arg-type]
        object.__setattr__(self, "_contexts", contexts)

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
        self,
        subject: Subject,
        surface: Surface = "ci",
        *,
        now: datetime | None = None,
        ledger: Ledger | None = None,
        reserving: bool = False,
    ) -> Decision:
        """Judge ``subject`` with every matching policy on ``surface``.

        ``reserving=True`` tells budget rules that the caller reserves the decision's holds
        atomically next (``Ledger.reserve`` checks every limit), so a budget that only denies skips
        its own read of the spend — one ledger round trip less per budget on the call path.
        """
        if now is None and ledger is None:
            judge = self._judges.get(surface)
            if judge is None:
                judge = self.evaluator(surface)
            return judge(subject)
        if surface not in SURFACES:
            raise ValueError(f"unknown surface {surface!r}; surfaces: {', '.join(SURFACES)}")
        if now is not None and now.tzinfo is None:  # a naive time is UTC, as exemption expiries are
            now = now.replace(tzinfo=UTC)
        ctx = EvalContext(surface, now or self.clock, ledger, self.pricer, reserving)
        entry = subject.__dict__.get("_plan_entry")
        if entry is None:
            entry = plan_entry(subject)
        return self._runner(subject, surface)(subject, ctx, entry[1])

    def evaluator(self, surface: Surface = "ci") -> Callable[[Subject], Decision]:
        """``evaluate`` for one surface as a function of the subject alone, with the surface's
        context and plans bound: for loops that judge many subjects (admission, the call-guard,
        ``check``). Same decisions as ``evaluate(subject, surface)``; one function per surface
        (``engine/judge.py``), which inlines the plans of the subjects it meets.

        >>> judge = policies.evaluator("admission")  # doctest: +SKIP
        >>> decisions = [judge(s) for s in subjects]  # doctest: +SKIP
        """
        judge = self._judges.get(surface)
        if judge is not None:
            return judge
        ctx = self._contexts.get(surface)
        if ctx is None:
            raise ValueError(f"unknown surface {surface!r}; surfaces: {', '.join(SURFACES)}")
        with self._lock:
            judge = self._judges.get(surface)
            if judge is None:
                judge = Judge(
                    ctx,
                    plan_entry=plan_entry,
                    runner=lambda subject: self._runner(subject, surface),
                    body=lambda subject, prefix: self._plan_body(subject, surface, prefix),
                    label=f"judge {surface}",
                ).function
                self._judges[surface] = judge
        return judge

    def _plan(self, subject: Subject, surface: Surface) -> tuple[Step, ...]:
        """The policies to run for a (type, provider, kind, surface), with their effects."""
        return tuple(
            (
                p,
                p.effects[surface],
                p.filters,
                tuple((r, r.static_results.setdefault(p.effects[surface], {})) for r in p.rules),
            )
            for p in self.candidates(subject)
            if p.effects[surface] != "off"
        )

    def plan_source(self, subject: Subject, surface: Surface = "ci") -> str:
        """The Python source of the function that judges subjects like ``subject`` on ``surface``."""
        return self._compile_runner(subject, surface)[1]

    def _runner(self, subject: Subject, surface: Surface) -> Runner:
        """The plan for the subject's key on ``surface`` as one generated function
        (``engine/plan.py``): work done once per distinct key, so judging runs only its rules."""
        entry = subject.__dict__.get("_plan_entry")
        key = (entry or plan_entry(subject))[0]
        runners = self._runners[surface]
        run = runners.get(key)
        if run is None:
            run = self._compile_runner(subject, surface)[0]
            if len(runners) < _CACHE_LIMIT:
                runners[key] = run
        return run

    def _plan_parts(self, subject: Subject, surface: Surface) -> dict[str, Any]:
        ctx = self._contexts[surface]

        def static_result(policy: CompiledPolicy, rule: CompiledRule, o: Outcome, effect: Effect) -> RuleResult:
            return self._result(policy, rule, o, effect, subject, ctx)  # a static pass or skip: subject-free

        return {
            "steps": self._plan(subject, surface),
            "static_result": static_result,
            "slow_rule": self._slow_rule,
            "admit": self._admitter,
        }

    def _compile_runner(self, subject: Subject, surface: Surface) -> tuple[Runner, str]:
        label = f"plan {subject.type}/{subject.provider}/{subject.kind}/{surface}"
        return compile_plan(subject.type, surface, **self._plan_parts(subject, surface), label=label)

    def _plan_body(self, subject: Subject, surface: Surface, prefix: str) -> tuple[list[str], dict[str, Any]]:
        return plan_body(subject.type, surface, **self._plan_parts(subject, surface), prefix=prefix)

    def _slow_rule(
        self, policy: CompiledPolicy, rule: CompiledRule, effect: Effect, static: dict[int, RuleResult]
    ) -> tuple[dict[int, Results], Finish]:
        """For one rule in a plan: the results of its static outcomes as one-tuples, by outcome id
        (filled as they are first seen), and the function that turns any outcome into results."""
        ones: dict[int, Results] = {}
        result_of = self._result
        build = self._build_result

        def finish(outcome: Any, subject: Subject, ctx: EvalContext) -> Results:
            if outcome.__class__ is not Outcome:
                return tuple(result_of(policy, rule, o, effect, subject, ctx) for o in outcome)
            if not outcome.static:
                return (build(policy, rule, outcome, effect, subject, ctx),)
            result = result_of(policy, rule, outcome, effect, subject, ctx)
            key = id(outcome)
            if static.get(key) is result and len(ones) < _CACHE_LIMIT:  # cached: not an exempted failure
                ones[key] = one = (result,)
                return one
            return (result,)

        return ones, finish

    def _admitter(
        self, policy: CompiledPolicy, effect: Effect
    ) -> Callable[[Subject, EvalContext], tuple[RuleResult, ...] | None]:
        def admit(subject: Subject, ctx: EvalContext) -> tuple[RuleResult, ...] | None:
            errors: list[RuleResult] = []
            return None if self._admits(policy, effect, subject, ctx, errors) else tuple(errors)

        return admit

    def _admits(
        self, policy: CompiledPolicy, effect: Effect, subject: Subject, ctx: EvalContext, results: list[RuleResult]
    ) -> bool:
        """Namespaces, names, selector, ``when`` and ``exclude``; a failing ``when`` is an error result
        named for its block (rule ``match`` or ``exclude``), so the author looks at the right one."""
        block = "match"
        try:
            if not policy.match.matches_rest(subject):
                return False
            block = "exclude"
            return policy.exclude is None or not policy.exclude.matches(subject)
        except CelEvalError as exc:
            rule = CompiledRule(block, "when", _skip, policy.severity, None, {})
            results.append(
                self._result(policy, rule, Outcome("error", f"{block}.when failed: {exc}"), effect, subject, ctx)
            )
            return False

    def _result(
        self, policy: CompiledPolicy, rule: CompiledRule, o: Outcome, effect: Effect, subject: Subject, ctx: EvalContext
    ) -> RuleResult:
        """A RuleResult; those of static outcomes are built once per rule and effect (failures
        only where no exemption names the policy, as exemptions depend on the subject)."""
        if not (o.static and (o.result in ("pass", "skip") or policy.name not in self._exemption_index.by_policy)):
            return self._build_result(policy, rule, o, effect, subject, ctx)
        cache = rule.static_results.setdefault(effect, {})
        key = id(o)  # static outcomes live as long as their compiled rule: ids are stable
        cached = cache.get(key)
        if cached is None:
            cached = self._build_result(policy, rule, o, effect, subject, ctx)
            if len(cache) < _CACHE_LIMIT:
                cache[key] = cached
        return cached

    def _build_result(
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
        holds = o.holds
        if kind in ("fail", "warn", "error"):
            active, expired = self._exemption_index.lookup(policy.name, rule.name, subject, ctx.now)
            if active is not None:
                kind, exemption = "skip", active.name
                message = f"{message} [exempted by {active.describe()}]"
                holds = _unchecked(holds)
            elif expired is not None:
                message = f"{message} [exemption {expired.name} expired {expired.expires:%Y-%m-%d %H:%M} UTC]"
        elif (
            holds  # a budget that leaves its limit to the reservation (``reserving``) passes with holds:
            and policy.name in self._exemption_index.by_policy  # exempted, the reservation must not refuse
            and self._exemption_index.lookup(policy.name, rule.name, subject, ctx.now)[0] is not None
        ):
            holds = _unchecked(holds)  # (the spend still counts)
        # every field in RuleResult's order, built as the tuple it is (its keyword ``__new__`` is a
        # Python call of its own, once per rule on every judged call)
        return tuple.__new__(RuleResult, (
            policy.name,  # policy
            rule.name,  # rule
            kind,  # result
            effect,  # effect
            rule.severity,  # severity
            message,  # message
            o.path,  # path
            o.expected,  # expected
            o.actual,  # actual
            exemption,  # exemption
            o.fix,  # fix
            o.savings_usd_month,  # savings_usd_month
            o.savings_usd_per_call,  # savings_usd_per_call
            holds if kind == "pass" or not (effect == "deny" and kind in ("fail", "error")) else (),  # holds
        ))


def _unchecked(holds: tuple[Hold, ...]) -> tuple[Hold, ...]:
    """Holds an exemption waives: the amounts are reserved and counted, never refused."""
    return tuple(dataclasses.replace(h, check=False) if h.check else h for h in holds)


def _skip(subject: Subject, ctx: EvalContext) -> Outcome:
    return Outcome("skip")


_PLAN_KEYS: dict[tuple[str, str, str], str] = {}


def plan_entry(subject: Subject) -> tuple[str, SubjectRef]:
    """The key of the subject's plans and its SubjectRef, built once per subject (subjects are
    immutable). The key is the subject's type, provider and kind as one interned string: equal
    keys are the same object (``engine/judge.py`` compares them with ``is``), and ``repr``
    quotes and escapes, so no two different triples share one."""
    triple = (subject.type, subject.provider, subject.kind)
    key = _PLAN_KEYS.get(triple)
    if key is None:
        key = sys.intern(f"{triple[0]}{triple[1]!r}{triple[2]!r}")
        if len(_PLAN_KEYS) < _CACHE_LIMIT:
            _PLAN_KEYS[triple] = key
    ref = subject.__dict__.get("_subject_ref") or subject_ref(subject)
    entry = subject.__dict__["_plan_entry"] = (key, ref)
    return entry


def subject_ref(subject: Subject) -> SubjectRef:
    """The subject's SubjectRef, built once per subject (subjects are immutable)."""
    cache = subject.__dict__
    ref: SubjectRef | None = cache.get("_subject_ref")
    if ref is None:
        src = subject.source
        fields = (subject.type, subject.provider, subject.kind, subject.name, subject.namespace)
        ref = tuple.__new__(SubjectRef, (*fields, src.file, src.line, src.pointer))
        cache["_subject_ref"] = ref
    return ref


__all__ = ["Clock", "PolicySet", "plan_entry", "subject_ref", "utc_now"]
