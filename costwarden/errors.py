"""Every exception costwarden raises, in one place.

::

    CostwardenError
    ├── PolicyError            a policy file or set is invalid; carries every positioned Diagnostic
    ├── SubjectError           a subject could not be built from the given data
    ├── AdapterError           an input source could not be read or understood
    │   ├── UnrecognizedInput  a file holds nothing costwarden knows how to judge
    │   └── PricingError       no price is known for a model (never priced at $0)
    ├── LedgerError            the budget ledger could not be reached or refused an operation
    │   └── UnknownReservation a settle named a reservation the ledger has no record of
    └── EnforcementError       an enforcer could not apply a decision
        ├── PolicyViolation    the call-guard refused a request; carries the Decision
        └── BudgetExceeded     the call-guard refused a request for budget; carries the Decision

Evaluating one subject never raises out of the engine: a failure inside a rule becomes an
``error`` result whose effect is set by the policy's ``onError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costwarden.engine.decision import Decision
    from costwarden.engine.diagnostics import Diagnostic


class CostwardenError(Exception):
    """Root of every costwarden exception."""


class PolicyError(CostwardenError):
    """A policy file or policy set is invalid. Nothing from it was loaded."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        count = len(self.diagnostics)
        errors = [d for d in self.diagnostics if d.level == "error"] or self.diagnostics
        first = errors[0].headline() if errors else "invalid policy"  # a note or warning never leads
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(f"{first}{more}")

    def render(self, *, color: bool = False) -> str:
        """Every diagnostic in the compiler-style format with source line, caret and hint."""
        return "\n".join(d.render(color=color) for d in self.diagnostics)


class SubjectError(CostwardenError):
    """A subject could not be built from the given data (wrong type, missing field)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class AdapterError(CostwardenError):
    """An input source could not be read or understood."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class UnrecognizedInput(AdapterError):
    """A file holds nothing costwarden judges (a workflow file, Helm values...). When walking a
    folder such files are skipped; a file named explicitly is an error."""


class PricingError(AdapterError):
    """No price is known for a model or instance type. Callers must not treat this as $0."""


class LedgerError(CostwardenError):
    """The budget ledger could not be reached, timed out, or refused an operation."""


class UnknownReservation(LedgerError):
    """A settle named a reservation the ledger has no record of: never made there, or made and
    purged once its TTL and the store's record grace had passed (a call that outlived them)."""


class EnforcementError(CostwardenError):
    """An enforcer could not turn a Decision into an effect."""


class PolicyViolation(EnforcementError):
    """A request was refused by policy. ``decision`` holds every result that led to it; the
    call-guard also sets ``request``: the request body that decision judged (its fixes applied)."""

    def __init__(self, decision: Decision, message: str | None = None, *, request: Any = None) -> None:
        self.decision = decision
        self.request = request
        super().__init__(message or decision.summary())


class BudgetExceeded(PolicyViolation):
    """A request was refused because a budget would be exceeded."""


def describe(exc: BaseException) -> str:
    """A one-line description of an exception for an ``error`` result."""
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if not isinstance(exc, CostwardenError) else text


__all__ = [
    "AdapterError",
    "BudgetExceeded",
    "CostwardenError",
    "EnforcementError",
    "LedgerError",
    "PolicyError",
    "PolicyViolation",
    "PricingError",
    "SubjectError",
    "UnrecognizedInput",
    "describe",
]
