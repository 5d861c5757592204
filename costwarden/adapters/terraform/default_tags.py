"""A provider's ``default_tags`` as far as the plan shows them.

A resource's effective tags are in ``tags_all``; only when the plan does not know it (one of the
resource's own tags is known only after apply) are the default tags needed. The plan's
``configuration`` holds an expression as ``constant_value`` only when it has no references; any
other (``local.common_tags``, ``merge(local.base, {team = var.team})``) is written as its
``references`` alone, and locals are not in the plan at all. What can be read, is:

* a constant map, or a lone root variable (``var.default_tags``), whose value the plan records;
* otherwise the provider's other resources whose ``tags_all`` the plan knows: every key of their
  ``tags_all`` that they do not set themselves is a default tag, with its value. A key that each of
  them sets itself may still be a default tag (``maybe``); with no such resource, any key may be.

A resource that relies on default tags the plan cannot show has incomplete tags
(:class:`~costwarden.engine.subjects.UnknownTags`), so that a rule says a missing tag cannot be
judged at plan time rather than report it missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.adapters.terraform.tags import _text
from costwarden.adapters.terraform.values import _dig, _mapping


@dataclass(frozen=True, slots=True)
class DefaultTags:
    """Known default tags; ``unresolved`` names the expression when more may exist, and ``maybe``
    the only keys they can be (None: any)."""

    tags: Mapping[str, str]
    unresolved: str | None = None
    maybe: frozenset[str] | None = None

    def incomplete(self, present: Iterable[str]) -> tuple[str | None, frozenset[str] | None]:
        """Why a resource relying on these default tags may carry keys the plan does not show,
        and the only keys they can be (None: any); (None, None) when the unknown ones can only be
        keys it already has (``present``). See :class:`~costwarden.engine.subjects.UnknownTags`."""
        maybe = None if self.maybe is None else self.maybe - set(present)
        if self.unresolved is None or maybe == frozenset():
            return None, None
        return f"the provider's {self.unresolved}", maybe


def from_configuration(block: Any, variables: Mapping[str, Any]) -> DefaultTags | None:
    """The ``default_tags`` block of a provider's ``expressions``: None when it sets none;
    ``unresolved`` set when its value is not in the plan."""
    expression = _mapping(_dig(block, (0, "tags")))
    if not expression:
        return None
    constant = expression.get("constant_value")
    if isinstance(constant, Mapping):
        return DefaultTags(_strings(constant))
    references = [str(r) for r in expression.get("references") or ()]
    if len(references) == 1 and references[0].startswith("var."):
        value = _mapping(variables.get(references[0][4:])).get("value")
        if isinstance(value, Mapping):  # `tags = var.default_tags`: the plan records root variables
            return DefaultTags(_strings(value))
    roots = [r for r in references if not any(r.startswith((o + ".", o + "[")) for o in references)]
    return DefaultTags({}, f"default_tags = {', '.join(roots) or 'an expression'} (not in the plan)")


def inferred(unknown: DefaultTags, siblings: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> DefaultTags:
    """Default tags read off the ``tags_all`` the plan knows for other resources of the provider
    (each ``(after, after_unknown)``); ``unknown`` is what the configuration gave."""
    tags: dict[str, str] = {}
    maybe: set[str] | None = None
    for after, after_unknown in siblings:
        tags_all, own = after.get("tags_all"), after.get("tags")
        if not isinstance(tags_all, Mapping) or after_unknown.get("tags_all") or after_unknown.get("tags"):
            continue
        own_keys = set(own) if isinstance(own, Mapping) else set()
        tags |= {str(k): _text(v) for k, v in tags_all.items() if k not in own_keys}
        maybe = own_keys if maybe is None else maybe & own_keys
    if maybe is None:
        return unknown  # no resource of this provider shows its tags_all
    left = frozenset(maybe - set(tags))
    return DefaultTags(tags, unknown.unresolved if left else None, left or None)


def _strings(value: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _text(v) for k, v in value.items()}
