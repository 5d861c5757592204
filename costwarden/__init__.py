"""costwarden — policy-as-code governance for AI spend.

One policy language, one verdict, enforced at admission, in CI, around LLM calls and in audits::

    import costwarden

    policies = costwarden.load_policies()            # the built-in library
    decision = policies.evaluate(subject, surface="ci")
    if not decision.allowed:
        print(decision.summary())

Attributes are imported lazily so that ``costwarden --version`` and ``import costwarden`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AdapterError": "costwarden.errors",
    "BudgetExceeded": "costwarden.errors",
    "CallGuard": "costwarden.enforcers.callguard",
    "CostwardenError": "costwarden.errors",
    "Decision": "costwarden.engine.decision",
    "LedgerError": "costwarden.errors",
    "LlmCall": "costwarden.engine.subjects",
    "PolicyError": "costwarden.errors",
    "PolicySet": "costwarden.engine.evaluate",
    "PolicyViolation": "costwarden.errors",
    "PricingError": "costwarden.errors",
    "Resource": "costwarden.engine.subjects",
    "RuleResult": "costwarden.engine.decision",
    "ServingConfig": "costwarden.engine.subjects",
    "attribution": "costwarden.enforcers.attribution",
    "builtin_library_path": "costwarden.api",
    "guard_openai": "costwarden.enforcers.openai_guard",
    "load_policies": "costwarden.api",
    "open_ledger": "costwarden.adapters.ledger",
    "subject_from_dict": "costwarden.engine.subjects",
}

if TYPE_CHECKING:
    from costwarden.adapters.ledger import open_ledger
    from costwarden.api import builtin_library_path, load_policies
    from costwarden.enforcers.attribution import attribution
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.openai_guard import guard_openai
    from costwarden.engine.decision import Decision, RuleResult
    from costwarden.engine.evaluate import PolicySet
    from costwarden.engine.subjects import LlmCall, Resource, ServingConfig, subject_from_dict
    from costwarden.errors import (
        AdapterError,
        BudgetExceeded,
        CostwardenError,
        LedgerError,
        PolicyError,
        PolicyViolation,
        PricingError,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costwarden' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AdapterError",
    "BudgetExceeded",
    "CallGuard",
    "CostwardenError",
    "Decision",
    "LedgerError",
    "LlmCall",
    "PolicyError",
    "PolicySet",
    "PolicyViolation",
    "PricingError",
    "Resource",
    "RuleResult",
    "ServingConfig",
    "__version__",
    "attribution",
    "builtin_library_path",
    "guard_openai",
    "load_policies",
    "open_ledger",
    "subject_from_dict",
]
