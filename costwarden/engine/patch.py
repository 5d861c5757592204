"""JSON Patch (RFC 6902) building blocks for fixes: pointers, look-ups and safe additions."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """Escape one reference token: ``~`` → ``~0`` then ``/`` → ``~1`` (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def join(base: str, *tokens: str | int) -> str:
    """``join("/metadata", "labels", "a/b")`` → ``/metadata/labels/a~1b``."""
    return base + "".join("/" + escape(str(t)) for t in tokens)


def split(pointer: str) -> list[str]:
    return [unescape(t) for t in pointer.split("/")[1:]] if pointer else []


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``doc``, or None when any step is missing."""
    node = doc
    for token in split(pointer):
        if isinstance(node, Mapping):
            node = node.get(token)
        elif isinstance(node, Sequence) and not isinstance(node, str) and token.isdigit():
            index = int(token)
            node = node[index] if index < len(node) else None
        else:
            return None
        if node is None:
            return None
    return node


def set_entries(doc: Any, map_pointer: str, entries: Mapping[str, Any]) -> list[Op]:
    """Operations that make ``doc[map_pointer]`` contain ``entries``, creating missing parents.

    Entries already holding the wanted value produce no operation, so applying the result to an
    already-fixed document changes nothing (idempotent patches).
    """
    tokens = split(map_pointer)
    for depth in range(len(tokens) + 1):
        prefix = join("", *tokens[:depth])
        if resolve(doc, prefix) is None and (depth or doc is None):
            rest: Any = dict(entries)
            for token in reversed(tokens[depth:]):
                rest = {token: rest}
            return [{"op": "add", "path": prefix, "value": rest}]
    current = resolve(doc, map_pointer)
    if not isinstance(current, Mapping):
        return [{"op": "replace", "path": map_pointer, "value": dict(entries)}]
    ops: list[Op] = []
    for key, value in entries.items():
        if current.get(key) != value:
            op = "replace" if key in current else "add"
            ops.append({"op": op, "path": join(map_pointer, key), "value": value})
    return ops


def append_items(doc: Any, list_pointer: str, items: Sequence[Any]) -> list[Op]:
    """Operations that append each item not already in the list at ``list_pointer``."""
    current = resolve(doc, list_pointer)
    if current is None:
        parent, _, last = list_pointer.rpartition("/")
        base = set_entries(doc, parent, {unescape(last): list(items)}) if parent else []
        return base or [{"op": "add", "path": list_pointer, "value": list(items)}]
    missing = [item for item in items if item not in current]
    return [{"op": "add", "path": list_pointer + "/-", "value": item} for item in missing]


# --- applying and diffing (RFC 6902) ----------------------------------------------------------


def apply_patch(doc: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """Apply RFC 6902 operations to ``doc`` in place; returns the (possibly new) root.
    Raises ValueError, KeyError or IndexError when an operation does not apply."""
    for op in ops:
        kind, tokens = op.get("op"), split(str(op.get("path", "")))
        if kind == "test":
            if _get(doc, tokens) != op.get("value"):
                raise ValueError(f"test failed at {op.get('path')}")
        elif kind in ("add", "replace"):
            if kind == "replace":
                _get(doc, tokens)
            doc = _put(doc, tokens, copy.deepcopy(op.get("value")), insert=kind == "add")
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind in ("move", "copy"):
            source = split(str(op.get("from", "")))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                _remove(doc, source)
            doc = _put(doc, tokens, value, insert=True)
        else:
            raise ValueError(f"unknown JSON Patch op {kind!r}")
    return doc


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        doc = doc[_index(doc, token, size=len(doc))] if isinstance(doc, list) else doc[token]
    return doc


def _index(items: list[Any], token: str, *, size: int) -> int:
    if not token.isdigit() or (token != "0" and token.startswith("0")) or int(token) >= size:
        raise IndexError(f"bad array index {token!r}")
    return int(token)


def _put(doc: Any, tokens: list[str], value: Any, *, insert: bool) -> Any:
    if not tokens:
        return value
    parent = _get(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        if last == "-" and insert:
            parent.append(value)
        elif insert:
            parent.insert(_index(parent, last, size=len(parent) + 1), value)
        else:
            parent[_index(parent, last, size=len(parent))] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise TypeError(f"cannot set {last!r} inside a {type(parent).__name__}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> None:
    if not tokens:
        raise ValueError("cannot remove the whole document")
    parent = _get(doc, tokens[:-1])
    if isinstance(parent, list):
        del parent[_index(parent, tokens[-1], size=len(parent))]
    else:
        del parent[tokens[-1]]


def diff(old: Any, new: Any, pointer: str = "") -> list[dict[str, Any]]:
    """JSON Patch operations that turn ``old`` into ``new`` (``~``/``/`` escaped in paths).
    Maps are compared key by key, lists element by element when their length is kept or they
    grew at the end; anything else is replaced whole. Equal documents give ``[]``."""
    if type(old) is type(new) and old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        ops = [{"op": "remove", "path": join(pointer, k)} for k in old if k not in new]
        for key, value in new.items():
            if key in old:
                ops += diff(old[key], value, join(pointer, key))
            else:
                ops.append({"op": "add", "path": join(pointer, key), "value": value})
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(new) >= len(old):
        head = [op for i, item in enumerate(old) for op in diff(item, new[i], join(pointer, i))]
        tail = [{"op": "add", "path": join(pointer, i), "value": new[i]} for i in range(len(old), len(new))]
        if len(new) == len(old) or not head:
            return head + tail
    return [{"op": "replace", "path": pointer, "value": new}]


__all__ = ["Op", "append_items", "apply_patch", "diff", "escape", "join", "resolve", "set_entries", "split", "unescape"]
