"""Tag checks a Terraform plan cannot settle, reported as such instead of passed or failed.

A plan knows a tag's key but not its value when the value is computed during the apply
(``after_unknown``; the adapter shows it as :data:`~costwarden.adapters.terraform.UNKNOWN_VALUE`),
and it may not show some keys at all: a tag map known only after apply, or the provider's
``default_tags`` (``default_tags = local.common_tags``; see
:mod:`costwarden.adapters.terraform.default_tags`); the adapter then annotates the resource with
:data:`~costwarden.adapters.terraform.tags.INCOMPLETE`. A ``requireTags`` rule would judge the
placeholder against its value regex, and report a tag missing that may well be there.
Neither is true, so :func:`settle` rewrites those results, the way the engine reports a failure it
cannot prove (an advisory failure): a ``warn`` that never blocks and names each tag and why. Real
failures on the same subject still fail, with the unjudged tags named apart.

The engine cannot tell a placeholder from a value; this lives here, on the CI surface, the only
one that reads plans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from costwarden.adapters.terraform import INCOMPLETE, INCOMPLETE_KEYS, PROVIDER, UNKNOWN_VALUE
from costwarden.engine.decision import Decision, RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.rules.require_tags import RequireTags
from costwarden.engine.subjects import Resource, Subject


def settle(decision: Decision, subject: Subject, policies: PolicySet) -> Decision:
    """``decision`` with its ``requireTags`` results on tags the plan cannot know rewritten."""
    if not isinstance(subject, Resource) or subject.provider != PROVIDER:
        return decision
    if UNKNOWN_VALUE not in subject.tags.values() and INCOMPLETE not in subject.annotations:
        return decision
    results = tuple(_settle(r, subject, policies) for r in decision.results)
    changed = any(a is not b for a, b in zip(results, decision.results, strict=True))
    return decision._replace(results=results) if changed else decision


def _settle(r: RuleResult, subject: Resource, policies: PolicySet) -> RuleResult:
    found = _require_tags(policies, r.policy, r.rule) if r.result in ("pass", "fail", "warn") else None
    if found is None:
        return r
    params, rule_message = found
    tags, failing = subject.tags, dict(r.actual) if r.result != "pass" and isinstance(r.actual, Mapping) else {}
    maybe_default = _maybe_default(subject.annotations)
    after_apply = [k for k in params.values if tags.get(k) == UNKNOWN_VALUE]
    defaulted = [k for k, v in failing.items() if not v and maybe_default(k)]
    if not after_apply and not defaulted:
        return r
    missing = [k for k, v in failing.items() if not v and not maybe_default(k)]
    bad = [(k, v) for k, v in failing.items() if v and v != UNKNOWN_VALUE]
    unjudged = _unjudged(after_apply, defaulted, params, subject.annotations.get(INCOMPLETE, ""))
    real = _real(missing, bad, params)
    if real:
        message = f"{'; '.join(real)}; cannot be judged at plan time: {'; '.join(unjudged)}"
        actual: Any = {k: failing[k] for k in (*missing, *(k for k, _ in bad))}
        result, effect = r.result, r.effect
    else:
        message = f"cannot be judged at plan time: {'; '.join(unjudged)}"
        actual = {k: tags.get(k) for k in (*defaulted, *after_apply)}
        result, effect = "warn", "warn" if r.effect == "deny" else r.effect
    if rule_message:
        message = f"{rule_message} ({message})"
    expected = {"keys": list(params.keys), "values": dict(params.values)}
    return r._replace(result=result, effect=effect, message=message, expected=expected, actual=actual,
                      fix=r.fix if real else None)


def _require_tags(policies: PolicySet, policy: str, rule: str) -> tuple[RequireTags, str | None] | None:
    """The ``requireTags`` parameters and message of a policy's rule; None for other kinds."""
    compiled = policies.get(policy)
    for spec in compiled.document.spec.rules if compiled is not None else ():
        params = getattr(spec, "requireTags", None)
        if spec.name == rule and isinstance(params, RequireTags):
            return params, spec.message
    return None


def _maybe_default(annotations: Mapping[str, str]) -> Callable[[str], bool]:
    """Whether a key missing from the resource may be one of the default tags the plan cannot show."""
    if INCOMPLETE not in annotations:
        return lambda key: False
    if INCOMPLETE_KEYS not in annotations:
        return lambda key: True
    keys = frozenset(annotations[INCOMPLETE_KEYS].split(","))
    return lambda key: key in keys


def _unjudged(after_apply: Sequence[str], defaulted: Sequence[str], params: RequireTags, why: str) -> list[str]:
    parts = [
        f"tag '{k}' is known only after apply: its value cannot be checked against {params.values[k]}"
        for k in after_apply
    ]
    if defaulted:
        names = ", ".join(f"'{k}'" for k in defaulted)
        one = len(defaulted) == 1
        parts.append(
            f"tag{'' if one else 's'} {names} {'is' if one else 'are'} not among the tags the plan shows, and "
            f"{why} may hold {'it' if one else 'them'}"
        )
    return parts


def _real(missing: Sequence[str], bad: Sequence[tuple[str, str]], params: RequireTags) -> list[str]:
    """The failures the plan does prove, worded as the rule words them."""
    parts = [f"missing required tag{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"] if missing else []
    parts += [f"tag '{k}'='{v}' does not match {params.values[k]}" for k, v in bad]
    return parts


__all__ = ["settle"]
