"""What every rule kind provides, and what a compiled rule check receives.

A rule kind is one module in ``engine/rules/`` with a pydantic parameter model (the YAML contract,
camelCase keys) and a ``compile`` function that turns validated parameters into a plain closure::

    class MaxOutputTokens(RuleParams):
        limit: int

    def compile(params: MaxOutputTokens, env: CompileEnv) -> Check:
        def check(subject: Subject, ctx: EvalContext) -> Outcome:
            ...
        return check

    KIND = RuleKind("maxOutputTokens", MaxOutputTokens, ("llm_call",), compile)

and one line in ``engine/rules/__init__.py``'s ``RULE_KINDS``. Compile-time problems a schema
cannot express (an invalid regex, bad CEL) raise :class:`RuleCompileError` with a path relative
to the rule's parameters, which the loader turns into a positioned diagnostic.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from costwarden.engine.decision import Outcome, Surface
from costwarden.engine.subjects import LlmCall, Subject

if TYPE_CHECKING:
    from costwarden.engine.catalog import Catalog
    from costwarden.engine.ledger import Ledger
    from costwarden.engine.pricing import LlmPricer


class RuleParams(BaseModel):
    """Base of every rule kind's parameter model: strict, frozen, camelCase as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class RuleCompileError(Exception):
    """A rule's parameters are well-formed but cannot be compiled (bad regex, bad CEL).

    ``loc`` is the path inside the rule parameters, e.g. ``("values", "environment")``.
    """

    def __init__(
        self,
        message: str,
        loc: tuple[str | int, ...] = (),
        *,
        code: str = "invalid-rule",
        hint: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.message = message
        self.loc = loc
        self.code = code
        self.hint = hint
        self.offset = offset
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class CompileEnv:
    """What a rule can use while it compiles: the merged model catalog and its names."""

    catalog: Catalog
    policy: str
    rule: str


class EvalContext:
    """Per-evaluation inputs a check may read: the surface, the clock and the stateful services.

    ``now`` is the evaluation time given by the caller, or the clock read when a check or an
    exemption first asks for it (most evaluations never do). A context without a fixed time and
    without a ledger holds no per-call state, so the policy set reuses one per surface.
    """

    __slots__ = ("_clock", "_now", "ledger", "pricer", "reserving", "surface")

    def __init__(
        self,
        surface: Surface,
        now: datetime | Callable[[], datetime],
        ledger: Ledger | None = None,
        pricer: LlmPricer | None = None,
        reserving: bool = False,
    ) -> None:
        self.surface = surface
        self._now: datetime | None = now if isinstance(now, datetime) else None
        self._clock: Callable[[], datetime] | None = None if isinstance(now, datetime) else now
        self.ledger = ledger
        self.pricer = pricer
        self.reserving = reserving
        """The caller reserves the decision's budget holds atomically right after (the call-guard):
        a ``budget`` rule that only denies may leave the limit check to the reservation."""

    def unreserved(self) -> EvalContext:
        """This context for a policy that does not deny on its surface: its budgets read the
        spend themselves (to warn), as nothing after the evaluation refuses on their behalf."""
        if not self.reserving:
            return self
        return EvalContext(self.surface, self._now or self._clock or _utcnow, self.ledger, self.pricer, False)

    @property
    def now(self) -> datetime:
        if self._now is not None:
            return self._now
        assert self._clock is not None
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


Check = Callable[[Subject, EvalContext], "Outcome | list[Outcome]"]

MEMO_LIMIT = 2048


NOT_CHAT_APIS = frozenset({"embeddings", "completions", "images", "audio"})
"""LLM APIs a chat model does not serve: a tier's downgrade target (a chat model) cannot stand in there."""


def chat_downgradable(subject: LlmCall) -> bool:
    """Whether a model downgrade to a tier's chat model keeps ``subject`` a valid request: not for a
    call without output (embeddings), a legacy Completions one nor an image generation, which
    ``/embeddings``, ``/completions`` and ``/images/generations`` would refuse once rewritten."""
    return bool(subject.request.choices) and subject.request.api not in NOT_CHAT_APIS


def memo_outcome(memo: dict[Any, Outcome], key: Any, build: Callable[[], Outcome]) -> Outcome:
    """The outcome for ``key``, built once and marked static so the evaluator reuses its result.

    For outcomes that depend only on a few subject values (a model, a feature, a tag set) and
    carry no per-subject patch. The memo never evicts (a static outcome's identity must stay
    stable); once it holds ``MEMO_LIMIT`` entries, outcomes are built afresh and not memoised.
    """
    found = memo.get(key)
    if found is not None:
        return found
    outcome = build()
    if len(memo) >= MEMO_LIMIT:
        return outcome
    # setdefault: where two threads build the same key at once, both get the one outcome kept
    # (a replaced entry would be freed, and the evaluator caches results by outcome id)
    return memo.setdefault(key, outcome._replace(static=True))


@dataclass(frozen=True, slots=True)
class Shortcut:
    """A test the evaluator may inline instead of calling a check, for its commonest outcomes.

    ``condition`` is a Python expression over ``subject`` (a subject of one of ``subject_types``)
    with ``{name}`` placeholders for ``constants``; wherever it holds, the check would return
    ``outcome`` — a static ``pass`` or ``skip``, whose result needs neither the subject nor an
    exemption lookup. Anything the condition does not cover goes to the check, so a shortcut can
    only be incomplete, never different. The evaluator generates one function per (subject type,
    kind, surface) from them (``engine/plan.py``); tests compare it with the plain checks.
    """

    condition: str
    outcome: Outcome
    subject_types: tuple[str, ...] = ("resource", "llm_call", "serving_config")
    constants: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not (self.outcome.static and self.outcome.result in ("pass", "skip")):
            raise ValueError("a shortcut's outcome must be a static pass or skip")


@dataclass(frozen=True, slots=True)
class OutcomeKey:
    """An inline expression whose value determines a check's outcome, for the generated plans.

    ``expression`` is a Python expression over ``subject`` (a subject of one of
    ``subject_types``) whose value is hashable, with this promise: two subjects with equal values
    get the same outcome from the check. The plan then keeps, per key value, the result of a
    static outcome it has seen (a memoised failure, say) and serves the next subject with that
    key from the table instead of calling the check. Outcomes the check builds afresh are never
    kept, so a key can only make a plan faster, never different; tests compare plans with and
    without keys.
    """

    expression: str
    subject_types: tuple[str, ...] = ("resource", "llm_call", "serving_config")
    after_shortcut: bool = False
    """The expression reads names the rule's first shortcut condition binds (it is always
    evaluated before the key): plans use the key only together with the rule's shortcuts."""


_SHORTCUTS: weakref.WeakKeyDictionary[Check, tuple[tuple[Shortcut, ...], OutcomeKey | None]] = (
    weakref.WeakKeyDictionary()
)


def with_shortcuts(check: Check, shortcuts: Iterable[Shortcut], key: OutcomeKey | None = None) -> Check:
    """Register ``shortcuts`` and an outcome ``key`` for a compiled ``check`` (returned unchanged)."""
    _SHORTCUTS[check] = (tuple(shortcuts), key)
    return check


def shortcuts_of(check: Check) -> tuple[Shortcut, ...]:
    return _SHORTCUTS.get(check, ((), None))[0]


def outcome_key_of(check: Check) -> OutcomeKey | None:
    return _SHORTCUTS.get(check, ((), None))[1]


P = TypeVar("P", bound=RuleParams)


@dataclass(frozen=True, slots=True)
class RuleKind(Generic[P]):
    """A rule kind's registry entry: its YAML key, parameter model, subjects and compiler."""

    key: str
    params: type[P]
    subjects: tuple[str, ...]
    compile: Callable[[P, CompileEnv], Check]
    summary: str = ""


__all__ = [
    "NOT_CHAT_APIS",
    "chat_downgradable",
    "Check",
    "CompileEnv",
    "EvalContext",
    "RuleCompileError",
    "RuleKind",
    "RuleParams",
    "OutcomeKey",
    "Shortcut",
    "outcome_key_of",
    "shortcuts_of",
    "with_shortcuts",
]
