"""Exemptions: named, owned, reasoned and always expiring waivers of policies or rules.

Expiry is judged at decision time against the evaluation clock, so every surface stops applying
an expired exemption at the same moment. An exemption matches subjects by provider, kind,
namespace and name only — never by the subject's own tags — so a subject cannot exempt itself.
A date without a time expires at the end of that day (UTC).

An exemption that has expired still loads (it is inert), but its author should hear of it:
:func:`expiry_warnings` gives ``costwarden validate`` a positioned warning for each one that has
expired, and a note for each one that soon will — never an error, so a pipeline keeps passing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from costwarden.engine.diagnostics import Diagnostic, Level
from costwarden.engine.matching import Matcher
from costwarden.engine.schema import ExemptionDocument
from costwarden.engine.subjects import Subject

if TYPE_CHECKING:
    from costwarden.engine.loader import SourceDocument

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


EXPIRING_SOON = timedelta(days=14)
"""How far ahead ``costwarden validate`` notes an exemption's end, by default."""


def expiry_warnings(
    documents: Sequence[SourceDocument], now: datetime, *, soon: timedelta = EXPIRING_SOON
) -> list[Diagnostic]:
    """At the ``expires`` value of each exemption: a warning where it ended before ``now`` (it
    waives nothing any more), a note where it ends within ``soon`` of it (the waived policies will
    apply again; nothing is wrong yet)."""
    found: list[Diagnostic] = []
    for doc in documents:
        if not isinstance(doc.model, ExemptionDocument):
            continue
        value = doc.model.spec.expires
        ends = expiry_of(value)
        name = doc.model.metadata.name
        level: Level = "warning"
        if ends <= now:
            code = "exemption-expired"
            when = f"{_moment(value, ends)}, {_span(now - ends)} ago"
            message = f"exemption {name!r} expired at {when}; it waives nothing"
            hint = "give it a later 'expires' if the waiver is still needed, or delete it"
        elif ends - now <= soon:
            level, code = "note", "exemption-expiring"
            message = f"exemption {name!r} expires at {_moment(value, ends)}, in {_span(ends - now)}"
            hint = "renew it before then if the waiver is still needed; after it, the policies apply again"
        else:
            continue
        where = doc.diagnostic(("spec", "expires"), code, message, hint, value=True)
        found.append(dataclasses.replace(where, level=level))
    return found


def _moment(value: datetime | date, ends: datetime) -> str:
    if isinstance(value, datetime):
        return f"{ends:%Y-%m-%d %H:%M} UTC"
    return f"the end of {value.isoformat()} (UTC)"


def _span(delta: timedelta) -> str:
    days, hours = delta.days, delta.seconds // 3600
    count, unit = (days, "day") if days else (hours, "hour")
    if not count:
        return "less than an hour"
    return f"{count} {unit}{'s' if count != 1 else ''}"


__all__ = ["EXPIRING_SOON", "CompiledExemption", "ExemptionIndex", "expiry_of", "expiry_warnings"]
