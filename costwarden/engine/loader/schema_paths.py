"""The types the policy schema allows along a path into a document, and the value found there."""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from costwarden.engine.yamlsource import Path


def _members(tp: Any) -> list[Any]:
    """The alternatives of a type, Annotated and Optional unwrapped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


def _types_at(root: Any, path: Path) -> list[Any]:
    """Every type the schema allows at ``path`` (several where a union is not yet decided)."""
    found = [root]
    for part in path:
        found = [c for t in found for m in _members(t) if (c := _child(m, part)) is not None]
    return found


def _child(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(part) if isinstance(part, str) else None
        return info.annotation if info is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None


def _get(data: Any, path: Path) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data
