"""Compile loaded documents into an immutable :class:`~costwarden.engine.evaluate.PolicySet`.

Every problem the loader and the compiler find — in every file — is collected, and a policy set
is only built when there is none: a bad policy never loads partly and is never skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costwarden.engine.catalog import Catalog
from costwarden.engine.cel import EMPTY_HINT, CelCompileError
from costwarden.engine.decision import SURFACES, Effect, Severity
from costwarden.engine.diagnostics import Diagnostic, did_you_mean
from costwarden.engine.exemptions import CompiledExemption
from costwarden.engine.loader import SourceDocument, load_paths
from costwarden.engine.matching import Matcher
from costwarden.engine.rules import RULE_KINDS
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    OutcomeKey,
    RuleCompileError,
    Shortcut,
    outcome_key_of,
    shortcuts_of,
)
from costwarden.engine.schema import ExemptionDocument, Match, ModelCatalogDocument, PolicyDocument, rule_kind_of
from costwarden.engine.subject_fields import fields_of, misspelt_field
from costwarden.errors import PolicyError

if TYPE_CHECKING:
    from costwarden.engine.evaluate import PolicySet
    from costwarden.engine.pricing import LlmPricer

BUILTIN_CATALOG = Path(__file__).parent / "data" / "catalog.yaml"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    kind: str
    check: Check
    severity: Severity
    message: str | None
    static_results: dict[str, dict[int, Any]] = field(default_factory=dict, compare=False, repr=False)
    """RuleResults of the rule's static outcomes, per effect then outcome id (filled by the evaluator)."""
    shortcuts: tuple[Shortcut, ...] = ()
    """Inline tests for the check's commonest static outcomes (see ``rules.base.Shortcut``)."""
    outcome_key: OutcomeKey | None = None
    """An inline key that determines the check's outcome (see ``rules.base.OutcomeKey``)."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready to evaluate: matchers, per-surface effects and compiled rule checks."""

    name: str
    title: str
    severity: Severity
    subject_type: str
    match: Matcher
    exclude: Matcher | None
    effects: dict[str, Effect]
    on_error: str
    rules: tuple[CompiledRule, ...]
    file: str
    line: int
    document: PolicyDocument
    filters: bool = True
    """Whether namespaces, names, selector, ``when`` or ``exclude`` must be checked per subject."""


def compile_documents(
    documents: Sequence[SourceDocument], *, pricer: LlmPricer | None = None, diagnostics: Sequence[Diagnostic] = ()
) -> PolicySet:
    """Build a PolicySet from loaded documents, or raise PolicyError with every problem when any
    is an error (the ``diagnostics`` given, the loader's, included)."""
    from costwarden.engine.evaluate import PolicySet

    problems = list(diagnostics)
    builtin = load_paths(BUILTIN_CATALOG)
    problems += builtin.diagnostics
    catalog_docs = [d for d in (*builtin.documents, *documents) if d.kind == "ModelCatalog"]
    catalog = Catalog.merge([d.model.spec for d in catalog_docs if isinstance(d.model, ModelCatalogDocument)])
    policies: list[CompiledPolicy] = []
    for doc in documents:
        if isinstance(doc.model, PolicyDocument):
            compiled = _compile_policy(doc, doc.model, catalog, problems)
            if compiled is not None:
                policies.append(compiled)
    exemptions = _compile_exemptions(documents, policies, problems)
    if any(d.level == "error" for d in problems):  # warnings and notes never stop a load
        raise PolicyError(_sorted(problems))
    return PolicySet(
        tuple(policies), tuple(exemptions), catalog, catalog.pricer(pricer), tuple(d.file for d in documents)
    )


def _sorted(problems: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(problems, key=lambda d: (d.file, d.line, d.column))


def _compile_policy(
    doc: SourceDocument, model: PolicyDocument, catalog: Catalog, problems: list[Diagnostic]
) -> CompiledPolicy | None:
    spec = model.spec
    before = len(problems)
    match = _matcher(doc, spec.match, ("spec", "match"), spec.subject, problems) or Matcher.build(None)
    exclude = _matcher(doc, spec.exclude, ("spec", "exclude"), spec.subject, problems) if spec.exclude else None
    rules = []
    for index, rule in enumerate(spec.rules):
        compiled = _compile_rule(doc, model, index, rule, catalog, problems)
        if compiled is not None:
            rules.append(compiled)
    if len(problems) > before:
        return None
    effects = {surface: spec.enforcement.effect(surface) for surface in SURFACES}
    return CompiledPolicy(
        name=model.metadata.name,
        title=model.metadata.title or model.metadata.name,
        severity=model.metadata.severity,
        subject_type=spec.subject,
        match=match or _MATCH_ALL,
        exclude=exclude if exclude is not None and not exclude.is_empty else None,
        effects=effects,
        on_error=spec.onError,
        rules=tuple(rules),
        file=doc.file,
        line=doc.line,
        document=model,
        filters=_has_filters(match or _MATCH_ALL, exclude),
    )


def _has_filters(match: Matcher, exclude: Matcher | None) -> bool:
    return match.constrains_rest or exclude is not None


_MATCH_ALL = Matcher(None, None, None, None, None, None)
_CEL_HINT = "CEL expressions see one variable, 'subject'"


def _matcher(
    doc: SourceDocument, block: Any, loc: tuple[str | int, ...], subject: str, problems: list[Diagnostic]
) -> Matcher | None:
    if isinstance(block, Match) and block.when is not None and not block.when.strip():
        # Matcher.build reads a blank 'when' as no condition: in 'match' the policy would apply to
        # every subject, in 'exclude' the condition the author meant to write would be lost.
        hint = f"{EMPTY_HINT}, or remove 'when'"
        problems.append(
            doc.diagnostic((*loc, "when"), "invalid-cel", "invalid CEL: the expression is empty", hint, value=True)
        )
        return None
    try:
        built = Matcher.build(block)
    except CelCompileError as exc:
        problems.append(
            _offset_diag(
                doc, (*loc, "when"), "invalid-cel", f"invalid CEL: {exc.message}", exc.offset, exc.hint or _CEL_HINT
            )
        )
        return None
    if isinstance(block, Match) and block.when and _misspelt(doc, (*loc, "when"), block.when, subject, problems):
        return None  # after the syntax: an expression that does not parse is reported as such
    return built


def _compile_rule(
    doc: SourceDocument, model: PolicyDocument, index: int, rule: Any, catalog: Catalog, problems: list[Diagnostic]
) -> CompiledRule | None:
    key = rule_kind_of(rule)
    kind = RULE_KINDS[key]
    loc: tuple[str | int, ...] = ("spec", "rules", index, key)
    subject = model.spec.subject
    if subject not in kind.subjects:
        problems.append(
            doc.diagnostic(
                loc,
                "wrong-subject",
                f"rule kind '{key}' does not judge {subject} subjects",
                f"'{key}' judges: {', '.join(kind.subjects)}; change spec.subject or the rule",
            )
        )
        return None
    env = CompileEnv(catalog=catalog, policy=model.metadata.name, rule=rule.name)
    try:
        check = kind.compile(getattr(rule, key), env)
    except RuleCompileError as exc:
        hint = exc.hint
        if hint is None and isinstance(exc.__cause__, CelCompileError):  # a rule's CEL without a hint of its own
            hint = _CEL_HINT
        if exc.offset is not None:
            problems.append(_offset_diag(doc, (*loc, *exc.loc), exc.code, exc.message, exc.offset, hint))
        else:
            problems.append(doc.diagnostic((*loc, *exc.loc), exc.code, exc.message, hint))
        return None
    cel = getattr(getattr(rule, key), "cel", None)  # an expr rule's expression, once it parses
    if isinstance(cel, str) and _misspelt(doc, (*loc, "cel"), cel, subject, problems):
        return None
    severity = rule.severity or model.metadata.severity
    return CompiledRule(
        rule.name, key, check, severity, rule.message, shortcuts=shortcuts_of(check), outcome_key=outcome_key_of(check)
    )


def _misspelt(
    doc: SourceDocument, loc: tuple[str | int, ...], source: str, subject: str, problems: list[Diagnostic]
) -> bool:
    """Report a field ``source`` reads that ``subject`` subjects do not have (it would fail on every
    subject: an enforced policy would deny them all); whether there was one."""
    found = misspelt_field(source, subject)
    if found is None:
        return False
    name, offset, closest = found
    fields = fields_of(subject)
    parent = name.rsplit(".", 1)[0] if "." in name else None
    known = sorted(fields[parent] or ()) if parent is not None else sorted(fields)
    hint = f"did you mean '{closest}'? " if closest else ""
    hint += f"{subject} subjects have: {', '.join(known)}" if parent is None else \
        f"subject.{parent} has: {', '.join(known)}"
    problems.append(_offset_diag(doc, loc, "invalid-cel", f"invalid CEL: {subject} subjects have no field "
                                 f"'{name}'", offset, hint))
    return True


def _offset_diag(
    doc: SourceDocument, loc: tuple[str | int, ...], code: str, message: str, offset: int, hint: str | None
) -> Diagnostic:
    """A diagnostic inside a scalar (a CEL expression): the caret points at the offending character."""
    return doc.diagnostic(loc, code, message, hint, offset=offset)


def _compile_exemptions(
    documents: Sequence[SourceDocument], policies: list[CompiledPolicy], problems: list[Diagnostic]
) -> list[CompiledExemption]:
    by_name = {p.name: p for p in policies}
    known = {d.model.metadata.name for d in documents if isinstance(d.model, PolicyDocument)}
    out = []
    for doc in documents:
        model = doc.model
        if not isinstance(model, ExemptionDocument):
            continue
        ok = True
        for i, target in enumerate(model.spec.policies):
            if target.policy not in known:
                problems.append(
                    doc.diagnostic(
                        ("spec", "policies", i, "policy"),
                        "unknown-policy",
                        f"exemption names unknown policy '{target.policy}'",
                        did_you_mean(target.policy, sorted(known), what="policies"),
                    )
                )
                ok = False
            elif target.rules and target.policy in by_name:
                rules = [r.name for r in by_name[target.policy].rules]
                for j, rule in enumerate(target.rules):
                    if rule not in rules:
                        problems.append(
                            doc.diagnostic(
                                ("spec", "policies", i, "rules", j),
                                "unknown-rule",
                                f"policy '{target.policy}' has no rule '{rule}'",
                                did_you_mean(rule, rules, what="rules"),
                            )
                        )
                        ok = False
        if ok:
            out.append(CompiledExemption.build(model))
    return out


__all__ = ["BUILTIN_CATALOG", "CompiledPolicy", "CompiledRule", "compile_documents"]
