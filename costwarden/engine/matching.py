"""Which subjects a policy or exemption applies to: providers, kind globs, namespaces, names,
Kubernetes label-selector semantics on tags, and an optional CEL ``when``.

A selector and a ``when`` match on what the subject proves: a requirement on a tag whose value is
not known yet (a Terraform plan's ``unknown_tags``), or on the absence of a key the resource may
still carry, is not satisfied, nor is a ``when`` that reads such a tag (unless it reads
``subject.unknown_tags`` itself). So a policy's ``match`` leaves such a resource out, while an
``exclude`` never waives a rule on a guess.

Provider and kind are decided once per distinct (type, provider, kind) and cached by the policy
set; the rest is a short closure per policy.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from costwarden.engine.cel import CelProgram, compile_cel
from costwarden.engine.schema import ExemptionMatch, LabelSelector, Match
from costwarden.engine.subjects import LlmCall, Resource, Subject, UnknownTags
from costwarden.engine.unknown_reads import unknown_tag_read

TagTest = Callable[[Mapping[str, str], UnknownTags], bool]
NOTHING_UNKNOWN = UnknownTags()


ANY = re.compile(r"(?s:.*)")
"""The pattern of a ``["*"]`` list: matches every value, and also subjects without one."""


def glob_pattern(globs: Sequence[str] | None) -> re.Pattern[str] | None:
    """One compiled regex for a list of globs; None means the key was not given."""
    if globs is None:
        return None
    if "*" in globs:
        return ANY
    return re.compile("|".join(fnmatch.translate(g) for g in globs) or "(?!)")


def subject_tags(subject: Subject) -> Mapping[str, str]:
    """Tags as selectors see them; an LLM call's feature, user and team count as tags."""
    return subject.attribution if isinstance(subject, LlmCall) else subject.tags


def compile_selector(selector: LabelSelector | None) -> TagTest | None:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression holds."""
    if selector is None:
        return None
    if not selector.matchLabels and not selector.matchExpressions:
        return _everything  # an empty selector selects everything, as in Kubernetes
    labels = tuple(selector.matchLabels.items())
    exprs = tuple((e.key, e.operator, frozenset(e.values)) for e in selector.matchExpressions)

    def test(tags: Mapping[str, str], unknown: UnknownTags) -> bool:
        for key, value in labels:
            if tags.get(key) != value or key in unknown.values:
                return False
        return all(_holds(tags, unknown, key, op, values) for key, op, values in exprs)

    return test


def _holds(tags: Mapping[str, str], unknown: UnknownTags, key: str, op: str, values: frozenset[str]) -> bool:
    """One ``matchExpressions`` requirement, on what the tags prove."""
    present = key in tags
    if not present and unknown.may_hold(key):
        return False  # neither present nor absent is proven
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if key in unknown.values:
        return False  # a value not known yet is in no set and out of none
    if op == "In":
        return present and tags[key] in values
    return not present or tags[key] not in values  # NotIn


def _everything(tags: Mapping[str, str], unknown: UnknownTags) -> bool:
    return True



@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled ``match`` (or ``exclude``) block.

    ``None`` in a field means the key was not given; a ``["*"]`` list is ``ANY`` (or, for
    providers, ``None`` with ``every_provider`` set), so an ``exclude`` of wildcards still removes
    every subject instead of reading as an empty block that removes none.
    """

    providers: frozenset[str] | None
    kinds: re.Pattern[str] | None
    namespaces: re.Pattern[str] | None
    names: re.Pattern[str] | None
    selector: TagTest | None
    when: CelProgram | None
    every_provider: bool = False

    @classmethod
    def build(cls, match: Match | ExemptionMatch | None) -> Matcher | None:
        if match is None:
            return None
        selector = compile_selector(match.selector) if isinstance(match, Match) else None
        when_src = match.when if isinstance(match, Match) else None
        every_provider = match.providers is not None and "*" in match.providers
        return cls(
            providers=frozenset(match.providers) if match.providers is not None and not every_provider else None,
            kinds=glob_pattern(match.kinds),
            namespaces=glob_pattern(match.namespaces),
            names=glob_pattern(match.names),
            selector=selector,
            when=compile_cel(when_src) if when_src else None,
            every_provider=every_provider,
        )

    @property
    def constrains_rest(self) -> bool:
        """Whether namespaces, names, selector or ``when`` can reject a subject."""
        rest = (self.namespaces, self.names)
        return (
            any(p is not None and p is not ANY for p in rest)
            or self.when is not None
            or (self.selector is not None and self.selector is not _everything)
        )

    def matches_kind(self, provider: str, kind: str) -> bool:
        """Provider and kind only; kind globs match ``Kind`` or ``provider/Kind``."""
        if self.providers is not None and provider not in self.providers:
            return False
        return self.kinds is None or bool(self.kinds.match(kind) or self.kinds.match(f"{provider}/{kind}"))

    def matches_rest(self, subject: Subject) -> bool:
        """Namespaces, names, selector and ``when``; raises CelEvalError when ``when`` fails."""
        if self.namespaces is not None and self.namespaces is not ANY:
            ns = subject.namespace
            if ns is None or not self.namespaces.match(ns):
                return False
        if self.names is not None and not self.names.match(subject.name):
            return False
        if self.selector is not None:
            unknown = subject.unknown_tags if isinstance(subject, Resource) else NOTHING_UNKNOWN
            if not self.selector(subject_tags(subject), unknown):
                return False
        if self.when is None:
            return True
        return unknown_tag_read(self.when, subject) is None and self.when.evaluate_bool(subject.as_cel)

    def matches(self, subject: Subject) -> bool:
        return self.matches_kind(subject.provider, subject.kind) and self.matches_rest(subject)

    @property
    def is_empty(self) -> bool:
        """Whether no key was given: such a match admits everything, such an exclude removes nothing."""
        fields = (self.providers, self.kinds, self.namespaces, self.names, self.selector, self.when)
        return not self.every_provider and all(v is None for v in fields)


__all__ = ["Matcher", "compile_selector", "glob_pattern", "subject_tags"]
