"""Who an LLM call is for: feature, user, team and tags, carried in a context variable.

::

    with attribution(feature="search", team="growth"):
        with attribution(user="u-123"):          # nests: inner values win, tags merge
            client.messages.create(...)          # feature=search, team=growth, user=u-123

It is a context variable: each asyncio task starts with a copy of its creator's context (and
``asyncio.to_thread`` carries it), so concurrent requests of a web app each see their own
attribution. A plain ``threading.Thread`` or a ``ThreadPoolExecutor`` worker starts with an empty
context instead: submit ``contextvars.copy_context().run`` with the work, or open ``attribution``
inside the worker. The call-guard reads it when a call starts; ``metadata.user_id`` (Anthropic) or
``safety_identifier``/``user`` (OpenAI) fill a missing user, then the guard's defaults. A budget
``per: [user]`` skips a call with no user at all (the library's ``require-llm-attribution`` policy
flags such calls: a warning at runtime, which a policy of your own can make ``deny``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Attribution:
    """Feature, user, team and free-form tags of the calls made inside an ``attribution`` block."""

    feature: str | None = None
    user: str | None = None
    team: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def over(self, outer: Attribution) -> Attribution:
        """This attribution with ``outer`` filling what it leaves unset; tags merge, ours win."""
        tags = {**outer.tags, **self.tags} if outer.tags else self.tags
        return Attribution(
            self.feature or outer.feature,
            self.user or outer.user,
            self.team or outer.team,
            MappingProxyType(dict(tags)) if tags is not self.tags else tags,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, str] | None) -> Attribution:
        """``{"feature": ..., "user": ..., "team": ..., "any-tag": ...}`` as an Attribution."""
        values = dict(values or {})
        feature, user, team = values.pop("feature", None), values.pop("user", None), values.pop("team", None)
        return cls(feature, user, team, MappingProxyType({k: str(v) for k, v in values.items()}))


_EMPTY = Attribution()
_CURRENT: ContextVar[Attribution] = ContextVar("costwarden_attribution", default=_EMPTY)


@contextmanager
def attribution(
    *, feature: str | None = None, user: str | None = None, team: str | None = None, **tags: str
) -> Iterator[Attribution]:
    """Attribute the LLM calls made inside the block; blocks nest (inner values win, tags merge)."""
    inner = Attribution(feature, user, team, MappingProxyType(dict(tags))).over(_CURRENT.get())
    token = _CURRENT.set(inner)
    try:
        yield inner
    finally:
        _CURRENT.reset(token)


def current_attribution() -> Attribution:
    """The attribution in force in this thread or task (empty outside any block)."""
    return _CURRENT.get()


__all__ = ["Attribution", "attribution", "current_attribution"]
