"""One generated Python function per (subject type, provider, kind, surface): the evaluation plan.

The evaluator works out once which policies and rules apply to a key, with their effects. This
module turns that list into straight-line code: no loop over policies, no per-rule dispatch, and
the rules' :class:`~costwarden.engine.rules.base.Shortcut` conditions inlined, so the commonest
outcomes (tags present, a workload on spot, a model allowed) cost a few attribute reads. For a
policy with one rule of each shortcut, the generated function reads::

    def run(subject, ctx, ref):
        blocked = False
        if (_t := subject.tags).get('team') and _t.get('feature'):
            r0_0 = res0_0_0
        else:
            try:
                o = check0_0(subject, ctx)
            except Exception as exc:  # never raise out of the engine: an error is a result
                o = error(exc)
            r0_0 = ones0_0.get(id(o)) or finish0_0(o, subject, ctx)
            for _r in r0_0:
                if _r.effect == 'deny' and (_r.result == 'fail' or _r.result == 'error'):
                    blocked = True
        ...
        return new(Decision, (SURFACE, ref, r0_0 + r0_1, not blocked))

``res*`` are the prebuilt results of the shortcuts' static outcomes; ``ones*`` the results of the
check's static outcomes seen so far, by outcome id (static outcomes live as long as their rule,
so no other object can share an id with one); ``finish*`` builds the result of any other
outcome. A rule with an :class:`~costwarden.engine.rules.base.OutcomeKey` also gets a
``table*`` of those results by key value, looked up before the check is called. Every rule
result is a tuple, so a rule that returns several outcomes, or a policy whose match filters
reject the subject, needs no special case. The function returns the Decision with
its verdict worked out on the way: a shortcut's pass or skip never blocks, so only the results of
checks are tested, and only in policies that deny on the surface. Conditions and constants come
from rule modules; user strings only ever enter the source through ``repr`` or as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from costwarden.engine.decision import Decision, Effect, Outcome, RuleResult, SubjectRef
from costwarden.engine.rules.base import EvalContext
from costwarden.engine.subjects import Subject
from costwarden.errors import describe

if TYPE_CHECKING:
    from costwarden.engine.compile import CompiledPolicy, CompiledRule

Results = tuple[RuleResult, ...]
Runner = Callable[[Subject, EvalContext, SubjectRef], Decision]
"""A plan: judges a subject (with its SubjectRef) on the plan's surface."""
Finish = Callable[[Any, Subject, EvalContext], Results]
"""Turns a check's outcome (or list of outcomes) into results."""
SlowPath = tuple[dict[int, Results], Finish]
"""A rule's static results seen so far (one-tuples by outcome id) and its Finish."""
Step = tuple["CompiledPolicy", Effect, bool, tuple[tuple["CompiledRule", dict[int, RuleResult]], ...]]


TABLE_LIMIT = 4096
"""Results a plan keeps per rule by outcome key (``rules.base.OutcomeKey``); beyond, it calls."""


def _error(exc: Exception) -> Outcome:
    return Outcome("error", describe(exc))


def compile_plan(
    subject_type: str,
    surface: str,
    steps: Sequence[Step],
    *,
    static_result: Callable[[CompiledPolicy, CompiledRule, Outcome, Effect], RuleResult],
    slow_rule: Callable[[CompiledPolicy, CompiledRule, Effect, dict[int, RuleResult]], SlowPath],
    admit: Callable[[CompiledPolicy, Effect], Callable[[Subject, EvalContext], Results | None]],
    label: str = "plan",
) -> tuple[Runner, str]:
    """The plan's function and its source. ``admit`` returns None for an admitted subject, or the
    results (errors of a failing ``when``) to report instead of the policy's rules."""
    body, ns = plan_body(subject_type, surface, steps, static_result=static_result, slow_rule=slow_rule, admit=admit)
    source = "\n".join(["def run(subject, ctx, ref):", *body]) + "\n"
    exec(compile(source, f"<costwarden {label}>", "exec"), ns)  # noqa: S102 - our own generated source
    run: Runner = ns["run"]
    return run, source


def plan_body(
    subject_type: str,
    surface: str,
    steps: Sequence[Step],
    *,
    static_result: Callable[[CompiledPolicy, CompiledRule, Outcome, Effect], RuleResult],
    slow_rule: Callable[[CompiledPolicy, CompiledRule, Effect, dict[int, RuleResult]], SlowPath],
    admit: Callable[[CompiledPolicy, Effect], Callable[[Subject, EvalContext], Results | None]],
    prefix: str = "",
) -> tuple[list[str], dict[str, Any]]:
    """The plan as the lines of a function body (indented one level) over the locals ``subject``,
    ``ctx`` and ``ref``, ending in ``return``, and the globals they use: each plan's own names start
    with ``prefix``, so several plans can share one function (see ``judge_source``)."""
    lines: list[str] = []
    ns: dict[str, Any] = {"error": _error, "new": tuple.__new__, "Decision": Decision, "SURFACE": surface}
    outs: list[str] = []
    may_block = any(effect == "deny" for _, effect, _, _ in steps)
    if any(effect != "deny" for _, effect, _, _ in steps):  # see EvalContext.unreserved
        lines.append("    lenient = ctx.unreserved()")
    if may_block:
        lines.append("    blocked = False")
    for i, (policy, effect, filters, rules) in enumerate(steps):
        names = [f"r{i}_{j}" for j in range(len(rules))]
        context = "ctx" if effect == "deny" else "lenient"
        # a result's effect is at most its policy's (engine/evaluate.py): only a deny can block
        tally = _tally if effect == "deny" else _no_tally
        indent = "    "
        if filters and names:
            admit_i = f"{prefix}admit{i}"
            ns[admit_i] = admit(policy, effect)
            lines += [f"    a{i} = {admit_i}(subject, {context})", f"    if a{i} is not None:"]
            lines.append(f"        {names[0]} = a{i}")
            lines += [f"        {line}" for line in tally(names[0])]
            lines += [f"        {n} = ()" for n in names[1:]]
            lines.append("    else:")
            indent = "        "
        for j, (rule, static) in enumerate(rules):
            parts = (policy, rule, effect, static)
            call = _rule_lines(i, j, parts, subject_type, context, tally, prefix, ns, static_result, slow_rule)
            lines += [f"{indent}{line}" for line in call]
            outs.append(names[j])
    if not outs:
        results = "()"
    elif len(outs) == 1:
        results = outs[0]
    else:
        results = " + ".join(outs)  # tuple + tuple: cheaper than a starred display
    lines.append(f"    return new(Decision, (SURFACE, ref, {results}, {'not blocked' if may_block else 'True'}))")
    return lines, ns


def _rule_lines(
    i: int,
    j: int,
    parts: tuple[CompiledPolicy, CompiledRule, Effect, dict[int, RuleResult]],
    subject_type: str,
    context: str,
    tally: Callable[..., list[str]],
    prefix: str,
    ns: dict[str, Any],
    static_result: Callable[[CompiledPolicy, CompiledRule, Outcome, Effect], RuleResult],
    slow_rule: Callable[[CompiledPolicy, CompiledRule, Effect, dict[int, RuleResult]], SlowPath],
) -> list[str]:
    """The lines (not indented) that set ``r{i}_{j}`` to rule j of policy i's results:
    its shortcuts, then its outcome table, then its check. Fills ``ns`` with what they use."""
    policy, rule, effect, static = parts
    name = f"r{i}_{j}"
    check, ones, finish, table = (f"{prefix}{what}{i}_{j}" for what in ("check", "ones", "finish", "table"))
    ns[check] = rule.check
    ns[ones], ns[finish] = slow_rule(policy, rule, effect, static)
    lines: list[str] = []
    cuts = [c for c in rule.shortcuts if subject_type in c.subject_types]
    for k, cut in enumerate(cuts):  # static passes and skips: they never block
        constant = f"{prefix}k{i}_{j}_{k}_"
        for const, value in cut.constants:
            ns[constant + const] = value
        condition = cut.condition
        if cut.constants:
            condition = condition.format(**{const: constant + const for const, _ in cut.constants})
        res = f"{prefix}res{i}_{j}_{k}"
        ns[res] = (static_result(policy, rule, cut.outcome, effect),)
        lines += [f"{'elif' if k else 'if'} {condition}:", f"    {name} = {res}"]
    call = [
        "try:",
        f"    o = {check}(subject, {context})",
        "except Exception as exc:  # never raise out of the engine: an error is a result",
        "    o = error(exc)",
    ]
    key = rule.outcome_key
    if key is not None and subject_type in key.subject_types and (cuts or not key.after_shortcut):
        # the table keeps (results, whether they block): both fixed for a static result
        ns[table] = {}
        call = [
            f"_k = {key.expression}",
            f"_e = {table}.get(_k)",
            "if _e is None:",
            *(f"    {line}" for line in call),
            f"    {name} = {ones}.get(id(o))",
            f"    if {name} is None:",
            f"        {name} = {finish}(o, subject, {context})",
            *(f"        {line}" for line in tally(name)),
            "    else:",
            *(f"        {line}" for line in tally(name, "_b")),
            f"        if len({table}) < {TABLE_LIMIT}:",
            f"            {table}[_k] = ({name}, {'_b' if effect == 'deny' else 'False'})",
            "else:",
            f"    {name}, _b = _e",
            *(["    if _b:", "        blocked = True"] if effect == "deny" else []),
        ]
    else:
        call.append(f"{name} = {ones}.get(id(o)) or {finish}(o, subject, {context})")
        call += tally(name)
    if cuts:
        return [*lines, "else:", *(f"    {line}" for line in call)]
    return call


def judge_source(plans: Sequence[tuple[str, list[str]]]) -> str:
    """One function that judges subjects of every plan in ``plans`` (the names of their keys, and
    their bodies from ``plan_body``), and hands any other subject to ``miss``. The keys are
    interned strings (``evaluate.plan_entry``), so telling the plans apart costs an ``is`` each.

    The evaluator regenerates it as it meets new keys (``PolicySet.evaluator``): one Python frame
    per decision, where a dispatch function and a plan function would be two."""
    lines = [
        "def judge(subject):",
        "    entry = subject._plan_entry  # set to None by the subject's __init__",
        "    if entry is None:  # a subject judged for the first time",
        "        entry = plan_entry(subject)",
        "    key, ref = entry",
        "    ctx = CTX",
    ]
    for key_name, body in plans:
        lines.append(f"    if key is {key_name}:")
        lines += [f"    {line}" for line in body]
    lines.append("    return miss(subject)")
    return "\n".join(lines) + "\n"


def _tally(name: str, flag: str = "") -> list[str]:
    """Lines that set ``blocked`` when a result in ``name`` blocks (``Decision.allowed``'s test),
    and ``flag`` to whether one does."""
    test = "_r.effect == 'deny' and (_r.result == 'fail' or _r.result == 'error')"
    if not flag:
        return [f"for _r in {name}:", f"    if {test}:", "        blocked = True"]
    return [
        f"{flag} = False",
        f"for _r in {name}:",
        f"    if {test}:",
        f"        blocked = {flag} = True",
    ]


def _no_tally(name: str, flag: str = "") -> list[str]:
    return [f"{flag} = False"] if flag else []


__all__ = ["Finish", "Results", "Runner", "Step", "compile_plan", "judge_source", "plan_body"]
