"""Exemptions: named, owned, reasoned and always expiring waivers of policies or rules.

Expiry is judged at decision time against the evaluation clock, so every surface stops applying
an expired exemption at the same moment. An exemption matches subjects by provider, kind,
namespace and name only — never by the subject's own tags — so a subject cannot exempt itself.
A date without a time expires at the end of that day (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from costwarden.engine.matching import Matcher
from costwarden.engine.schema import ExemptionDocument
from costwarden.engine.subjects import Subject

_LAST = datetime.max.replace(tzinfo=UTC)
_FIRST = datetime.min.replace(tzinfo=UTC)


def expiry_of(value: datetime | date) -> datetime:
    """An aware UTC datetime for an ``expires`` value (dates run to the end of the day).

    A time with another zone is converted to UTC (messages print it as UTC); values at the edge of
    the calendar (``9999-12-31``) are clamped to the last representable moment instead of raising.
    """
    try:
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.combine(value + timedelta(days=1), time(0), tzinfo=UTC)
    except OverflowError:
        return _LAST if value.year > 1 else _FIRST


@dataclass(frozen=True, slots=True)
class CompiledExemption:
    name: str
    targets: Mapping[str, frozenset[str] | None]
    matcher: Matcher | None
    expires: datetime
    owner: str
    reason: str

    @classmethod
    def build(cls, doc: ExemptionDocument) -> CompiledExemption:
        spec = doc.spec
        targets: dict[str, frozenset[str] | None] = {}
        for t in spec.policies:  # a policy named twice waives what either entry waives
            rules = frozenset(t.rules) if t.rules is not None else None
            if t.policy in targets:
                earlier = targets[t.policy]
                rules = None if earlier is None or rules is None else earlier | rules
            targets[t.policy] = rules
        matcher = Matcher.build(spec.match)
        return cls(
            doc.metadata.name,
            targets,
            None if matcher is None or matcher.is_empty else matcher,
            expiry_of(spec.expires),
            spec.owner,
            spec.reason,
        )

    def covers(self, policy: str, rule: str, subject: Subject) -> bool:
        if policy not in self.targets:
            return False
        rules = self.targets[policy]
        if rules is not None and rule not in rules:
            return False
        return self.matcher is None or self.matcher.matches(subject)

    def describe(self) -> str:
        return f"{self.name} (owner {self.owner}, until {self.expires:%Y-%m-%d %H:%M} UTC): {self.reason}"


@dataclass(frozen=True, slots=True)
class ExemptionIndex:
    """Exemptions indexed by the policies they name."""

    by_policy: Mapping[str, tuple[CompiledExemption, ...]]

    @classmethod
    def build(cls, exemptions: list[CompiledExemption]) -> ExemptionIndex:
        index: dict[str, list[CompiledExemption]] = {}
        for exemption in exemptions:
            for policy in exemption.targets:
                index.setdefault(policy, []).append(exemption)
        return cls({k: tuple(v) for k, v in index.items()})

    def lookup(
        self, policy: str, rule: str, subject: Subject, now: datetime
    ) -> tuple[CompiledExemption | None, CompiledExemption | None]:
        """(an active exemption covering the result, else an expired one that would have)."""
        expired = None
        for exemption in self.by_policy.get(policy, ()):
            if exemption.covers(policy, rule, subject):
                if now < exemption.expires:
                    return exemption, None
                expired = exemption
        return None, expired


__all__ = ["CompiledExemption", "ExemptionIndex", "expiry_of"]
