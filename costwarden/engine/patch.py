"""JSON Patch (RFC 6902) building blocks for fixes: pointers, look-ups and safe additions."""

from __future__ import annotations

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


__all__ = ["Op", "append_items", "escape", "join", "resolve", "set_entries", "split", "unescape"]
