"""Apply RFC 6902 JSON Patch operations to a JSON document without touching the original.

The call-guard applies the request fixes the engine proposes (``Fix.patch``) to the body an SDK is
about to send. Only the containers on a patched path are copied, so a large ``messages`` list that
a fix does not touch is shared with the caller's body, never mutated::

    >>> body = {"model": "claude-opus-4-5", "max_tokens": 8192}
    >>> apply_patch(body, [{"op": "replace", "path": "/model", "value": "claude-haiku-4-5"}])
    {'model': 'claude-haiku-4-5', 'max_tokens': 8192}
    >>> body["model"]
    'claude-opus-4-5'

All six operations are supported (``add``, ``remove``, ``replace``, ``move``, ``copy``, ``test``);
an operation that cannot apply raises :class:`~costwarden.errors.EnforcementError` and the
document is left as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

from costwarden.engine.patch import split
from costwarden.errors import EnforcementError

_MISSING = object()


def apply_patch(doc: Any, ops: Iterable[Mapping[str, Any]]) -> Any:
    """``doc`` with every operation of ``ops`` applied in order (copy-on-write)."""
    root: list[Any] = [doc]
    owned: set[int] = set()
    for op in ops:
        _apply_one(root, owned, op)
    return root[0]


def _apply_one(root: list[Any], owned: set[int], op: Mapping[str, Any]) -> None:
    kind = op.get("op")
    path = op.get("path")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise EnforcementError(f"JSON Patch: invalid path {path!r} in {dict(op)!r}")
    if kind == "test":
        if _get(root[0], path) != op.get("value", _MISSING):
            raise EnforcementError(f"JSON Patch: test failed at {path!r}")
    elif kind in ("add", "replace"):
        if "value" not in op:
            raise EnforcementError(f"JSON Patch: {kind} at {path!r} has no value")
        _put(root, owned, path, copy.deepcopy(op["value"]), replace=kind == "replace")
    elif kind == "remove":
        _remove(root, owned, path)
    elif kind in ("move", "copy"):
        source = op.get("from")
        if not isinstance(source, str):
            raise EnforcementError(f"JSON Patch: {kind} to {path!r} has no 'from'")
        value = copy.deepcopy(_get(root[0], source))
        if kind == "move":
            if path.startswith(source + "/"):
                raise EnforcementError(f"JSON Patch: cannot move {source!r} into its own child {path!r}")
            _remove(root, owned, source)
        _put(root, owned, path, value, replace=False)
    else:
        raise EnforcementError(f"JSON Patch: unknown op {kind!r}")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in split(path):
        node = _child(node, token, path)
    return node


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, Mapping):
        if token not in node:
            raise EnforcementError(f"JSON Patch: {path!r} does not exist")
        return node[token]
    if isinstance(node, list):
        index = _index(node, token, path, allow_end=False)
        return node[index]
    raise EnforcementError(f"JSON Patch: {path!r} goes through a scalar")


def _index(node: Sequence[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise EnforcementError(f"JSON Patch: {token!r} is not an array index in {path!r}")
    index = int(token)
    if index > len(node) or (index == len(node) and not allow_end):
        raise EnforcementError(f"JSON Patch: index {index} out of range in {path!r}")
    return index


def _parent(root: list[Any], owned: set[int], path: str) -> tuple[Any, str]:
    """The (copied, so writable) container holding the last token of ``path``, and that token."""
    tokens = split(path)
    node = _own(root, 0, owned)
    for token in tokens[:-1]:
        if isinstance(node, MutableMapping) and token in node:
            node[token] = _own_value(node[token], owned)
            node = node[token]
        elif isinstance(node, MutableSequence):
            index = _index(node, token, path, allow_end=False)
            node[index] = _own_value(node[index], owned)
            node = node[index]
        else:
            raise EnforcementError(f"JSON Patch: parent of {path!r} does not exist")
    return node, tokens[-1]


def _own(root: list[Any], index: int, owned: set[int]) -> Any:
    root[index] = _own_value(root[index], owned)
    return root[index]


def _own_value(value: Any, owned: set[int]) -> Any:
    if id(value) in owned or not isinstance(value, (Mapping, list)):
        return value
    fresh: Any = dict(value) if isinstance(value, Mapping) else list(value)
    owned.add(id(fresh))
    return fresh


def _put(root: list[Any], owned: set[int], path: str, value: Any, *, replace: bool) -> None:
    if path == "":
        root[0] = value
        return
    parent, token = _parent(root, owned, path)
    if isinstance(parent, MutableMapping):
        if replace and token not in parent:
            raise EnforcementError(f"JSON Patch: cannot replace missing {path!r}")
        parent[token] = value
    elif isinstance(parent, MutableSequence):
        index = _index(parent, token, path, allow_end=not replace)
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        raise EnforcementError(f"JSON Patch: parent of {path!r} is a scalar")


def _remove(root: list[Any], owned: set[int], path: str) -> None:
    if path == "":
        raise EnforcementError("JSON Patch: cannot remove the whole document")
    parent, token = _parent(root, owned, path)
    if isinstance(parent, MutableMapping):
        if token not in parent:
            raise EnforcementError(f"JSON Patch: cannot remove missing {path!r}")
        del parent[token]
    elif isinstance(parent, MutableSequence):
        del parent[_index(parent, token, path, allow_end=False)]
    else:
        raise EnforcementError(f"JSON Patch: parent of {path!r} is a scalar")


__all__ = ["apply_patch"]
