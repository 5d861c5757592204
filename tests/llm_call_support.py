"""What the tests of the OpenAI request adapters (embeddings, completions, images) share: ``llm_call``
policies written inline, a call judged as the call-guard judges it, and the text or token inputs
(``input``, ``prompt``) no OpenAI API takes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.engine.decision import Decision
from costwarden.engine.evaluate import PolicySet

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
"""When :func:`judge` judges a call, so that budget windows are fixed."""


def llm_call_policy(name: str, rules: dict[str, str], *, match: str = "", on_error: str = "") -> str:
    """An enforced (``default: deny``) Policy ``name`` on ``llm_call`` subjects: one rule per item of
    ``rules`` (its name, then its kind and parameters as one line of YAML), matching ``match`` (a flow
    mapping) and with ``onError: on_error`` when they are given."""
    lines = [f"apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  subject: llm_call\n"]
    if match:
        lines.append(f"  match: {match}\n")
    lines.append("  enforcement: {default: deny}\n")
    if on_error:
        lines.append(f"  onError: {on_error}\n")
    lines.append("  rules:\n")
    lines.extend(f"    - name: {rule}\n      {body}\n" for rule, body in rules.items())
    return "".join(lines)


USER_BUDGET = "budget: {per: [user], limitUsd: 1, window: day}"
"""The rule of a $1 daily budget per user, for :func:`llm_call_policy`."""

SMALL_EMBEDDINGS_ONLY = llm_call_policy(
    "embedders", {"small-only": 'allowedModels: {default: ["text-embedding-3-small"], onViolation: deny}'},
    match="{kinds: [embeddings]}")
"""Policy ``embedders``: an embeddings call of another model than text-embedding-3-small is denied."""


def judge(policies: PolicySet, call: Any) -> Decision:
    """``call`` judged at run time at :data:`NOW`, reserving its budgets' holds on a fresh ledger."""
    return policies.evaluate(call, "runtime", now=NOW, ledger=MemoryLedger(), reserving=True)


def results(decision: Decision) -> dict[str, str]:
    """Each rule's result, by ``policy/rule``."""
    return {f"{r.policy}/{r.rule}": r.result for r in decision.results}


WRONG_TYPES: list[tuple[Any, str]] = [(42, "got int"), ({"text": "hi"}, "got dict")]
"""An input of neither text nor tokens, and the type the refusal names."""

MIXED_LISTS: list[tuple[Any, str]] = [
    (["hi", 1], "a list of str, int"),
    ([1, True], "a list of int, bool"),  # a bool is not a token id
    ([1, -2], "a list of int"),
    ([[1, 2], "hi"], "a list of list, str"),
    ([[1, 2.5]], "a list of list"),
]
"""A list that is not of strings, of token ids or of token-id lists, and what the refusal says it is."""
