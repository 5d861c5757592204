"""One generated Python function per (subject type, provider, kind, surface): the evaluation plan.

The evaluator works out once which policies and rules apply to a key, with their effects. This
module turns that list into straight-line code: no loop over policies, no per-rule dispatch, and
the rules' :class:`~costwarden.engine.rules.base.Shortcut` conditions inlined, so the commonest
outcomes (tags present, a workload on spot, a model allowed) cost a few attribute reads. For a
policy with one rule of each shortcut, the generated function reads::

    def run(subject, ctx):
        if (_t := subject.tags).get('team') and _t.get('feature'):
            r0_0 = res0_0_0
        else:
            try:
                o = check0_0(subject, ctx)
            except Exception as exc:  # never raise out of the engine: an error is a result
                o = error(exc)
            r0_0 = ones0_0.get(id(o)) or finish0_0(o, subject, ctx)
        ...
        return (*r0_0, *r0_1)

``res*`` are the prebuilt results of the shortcuts' static outcomes; ``ones*`` the results of the
check's static outcomes seen so far, by outcome id (static outcomes live as long as their rule,
so no other object can share an id with one); ``finish*`` builds the result of any other
outcome. Every rule result is a tuple, so a rule that
returns several outcomes, or a policy whose match filters reject the subject, needs no special
case. Conditions and constants come from rule modules; user strings only ever enter the source
through ``repr`` or as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from costwarden.engine.decision import Effect, Outcome, RuleResult
from costwarden.engine.rules.base import EvalContext
from costwarden.engine.subjects import Subject
from costwarden.errors import describe

if TYPE_CHECKING:
    from costwarden.engine.compile import CompiledPolicy, CompiledRule

Results = tuple[RuleResult, ...]
Runner = Callable[[Subject, EvalContext], Results]
Finish = Callable[[Any, Subject, EvalContext], Results]
"""Turns a check's outcome (or list of outcomes) into results."""
SlowPath = tuple[dict[int, Results], Finish]
"""A rule's static results seen so far (one-tuples by outcome id) and its Finish."""
Step = tuple["CompiledPolicy", Effect, bool, tuple[tuple["CompiledRule", dict[int, RuleResult]], ...]]


def _error(exc: Exception) -> Outcome:
    return Outcome("error", describe(exc))


def compile_plan(
    subject_type: str,
    steps: Sequence[Step],
    *,
    static_result: Callable[[CompiledPolicy, CompiledRule, Outcome, Effect], RuleResult],
    slow_rule: Callable[[CompiledPolicy, CompiledRule, Effect, dict[int, RuleResult]], SlowPath],
    admit: Callable[[CompiledPolicy, Effect], Callable[[Subject, EvalContext], Results | None]],
    label: str = "plan",
) -> tuple[Runner, str]:
    """The plan's function and its source. ``admit`` returns None for an admitted subject, or the
    results (errors of a failing ``when``) to report instead of the policy's rules."""
    lines = ["def run(subject, ctx):"]
    ns: dict[str, Any] = {"error": _error}
    outs: list[str] = []
    if any(effect != "deny" for _, effect, _, _ in steps):  # see EvalContext.unreserved
        lines.append("    lenient = ctx.unreserved()")
    for i, (policy, effect, filters, rules) in enumerate(steps):
        names = [f"r{i}_{j}" for j in range(len(rules))]
        context = "ctx" if effect == "deny" else "lenient"
        indent = "    "
        if filters and names:
            ns[f"admit{i}"] = admit(policy, effect)
            lines += [f"    a{i} = admit{i}(subject, {context})", f"    if a{i} is not None:"]
            lines.append(f"        {names[0]} = a{i}")
            lines += [f"        {n} = ()" for n in names[1:]]
            lines.append("    else:")
            indent = "        "
        for j, (rule, static) in enumerate(rules):
            name = names[j]
            ns[f"check{i}_{j}"] = rule.check
            ns[f"ones{i}_{j}"], ns[f"finish{i}_{j}"] = slow_rule(policy, rule, effect, static)
            cuts = [c for c in rule.shortcuts if subject_type in c.subject_types]
            for k, cut in enumerate(cuts):
                prefix = f"k{i}_{j}_{k}_"
                for const, value in cut.constants:
                    ns[prefix + const] = value
                condition = cut.condition.format(**{const: prefix + const for const, _ in cut.constants})
                ns[f"res{i}_{j}_{k}"] = (static_result(policy, rule, cut.outcome, effect),)
                lines += [f"{indent}{'elif' if k else 'if'} {condition}:", f"{indent}    {name} = res{i}_{j}_{k}"]
            call = [
                "try:",
                f"    o = check{i}_{j}(subject, {context})",
                "except Exception as exc:  # never raise out of the engine: an error is a result",
                "    o = error(exc)",
                f"{name} = ones{i}_{j}.get(id(o)) or finish{i}_{j}(o, subject, {context})",
            ]
            if cuts:
                lines.append(f"{indent}else:")
                lines += [f"{indent}    {line}" for line in call]
            else:
                lines += [f"{indent}{line}" for line in call]
            outs.append(name)
    if not outs:
        lines.append("    return ()")
    elif len(outs) == 1:
        lines.append(f"    return {outs[0]}")
    else:
        lines.append(f"    return ({', '.join('*' + n for n in outs)})")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<costwarden {label}>", "exec"), ns)  # noqa: S102 - our own generated source
    run: Runner = ns["run"]
    return run, source


__all__ = ["Finish", "Results", "Runner", "Step", "compile_plan"]
