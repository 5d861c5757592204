"""What the three subject records share: the decorator that keeps their fields on the instances
only, and the behaviour they have in common (``to_dict``, ``label``)."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, ClassVar, TypeVar

_S = TypeVar("_S")


def _fields_on_instances(cls: type[_S]) -> type[_S]:
    """Remove the class attributes ``@dataclass`` leaves for field defaults. Subjects set every
    field in ``__init__``, so the defaults are never read from the class; but a class attribute
    of the same name stops CPython from specialising reads of the instance's attribute, and rules
    read subject fields on every decision (``capacity``, ``workload``: ~2x slower with them)."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in cls.__dict__ and not isinstance(cls.__dict__[f.name], (property, cached_property)):
            delattr(cls, f.name)
    return cls


class _Subject:
    """Behaviour shared by the three subject records (not a public base class)."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """A fresh JSON-shaped dict (``subject_from_dict`` builds the same subject back)."""
        return self._build()  # type: ignore[attr-defined, no-any-return]

    def label(self) -> str:
        """A short human name: ``kubernetes/Job default/train``."""
        ns = getattr(self, "namespace", None)
        name = getattr(self, "name", None) or "-"
        kind = getattr(self, "kind", self.type)
        provider = getattr(self, "provider", "")
        where = f"{ns}/{name}" if ns else name
        return f"{provider}/{kind} {where}" if provider else f"{kind} {where}"
