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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from costwarden.engine.decision import Outcome, Surface
from costwarden.engine.subjects import Subject

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


@dataclass(slots=True)
class EvalContext:
    """Per-evaluation inputs a check may read: the surface, the clock and the stateful services.

    Built once per ``PolicySet.evaluate`` call and shared by every check of that call.
    """

    surface: Surface
    now: datetime
    ledger: Ledger | None = None
    pricer: LlmPricer | None = None
    cache: dict[str, Any] = field(default_factory=dict)


Check = Callable[[Subject, EvalContext], "Outcome | list[Outcome]"]
P = TypeVar("P", bound=RuleParams)


@dataclass(frozen=True, slots=True)
class RuleKind(Generic[P]):
    """A rule kind's registry entry: its YAML key, parameter model, subjects and compiler."""

    key: str
    params: type[P]
    subjects: tuple[str, ...]
    compile: Callable[[P, CompileEnv], Check]
    summary: str = ""


__all__ = ["Check", "CompileEnv", "EvalContext", "RuleCompileError", "RuleKind", "RuleParams"]
