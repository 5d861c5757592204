"""Kubernetes manifest text → objects, each with its line and its JSON pointer.

YAML goes through PyYAML's C safe loader (when built) with a flat constructor; JSON through the
standard library. ``kind: List`` and typed ``*List`` objects are expanded into their items, so
``kubectl get -o yaml`` output reads like the manifests it came from::

    >>> [(d["kind"], line, pointer) for d, line, pointer in read_manifests(
    ...     "kind: List\\nitems:\\n- kind: Pod\\n- kind: Job\\n")]
    [('Pod', 3, '/items/0'), ('Job', 4, '/items/1')]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from costwarden.errors import AdapterError

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_STR, _NULL, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_SEQ, _MAP, _MERGE = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map", "tag:yaml.org,2002:merge"
# PyYAML's implicit (YAML 1.1) resolvers by first character; "" is its key for the empty scalar.
_IMPLICIT: dict[str, list[tuple[str, Any]]] = _BaseLoader.yaml_implicit_resolvers
_BOOLS = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}


class _Loader(_BaseLoader):
    """The (C) safe loader with a flat constructor: PyYAML's generator-based one spends most of
    the load time building plain maps, lists and strings. Other tags go through PyYAML.

    The composer calls ``resolve`` (and the path-resolver hooks) once per node from C, so they
    are kept to the minimum the safe schema needs; the tags they give are PyYAML's own.
    """

    _has_merge = False

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], ()):
                    if regexp.match(value):
                        if tag == _MERGE:
                            self._has_merge = True
                        return tag
            return _STR
        return _SEQ if kind is SequenceNode else _MAP

    def build(self, root: Node) -> Any:
        memo: dict[int, Any] = {}
        construct = self.construct_object

        def build(node: Node) -> Any:
            cls = node.__class__
            if cls is ScalarNode:
                tag = node.tag
                if tag == _STR:
                    return node.value
                if tag == _NULL:
                    return None
                if tag == _BOOL and node.value.lower() in _BOOLS:
                    return _BOOLS[node.value.lower()]
                return construct(node, deep=True)
            done = memo.get(id(node), memo)
            if done is not memo:
                return done
            if cls is SequenceNode and node.tag == _SEQ:
                items: list[Any] = []
                memo[id(node)] = items
                items.extend([build(n) for n in node.value])
                return items
            if cls is MappingNode and node.tag == _MAP:
                if self._has_merge and any(k.tag == _MERGE for k, _ in node.value):
                    self.flatten_mapping(node)  # type: ignore[arg-type]
                out: dict[Any, Any] = {}
                memo[id(node)] = out
                for key_node, value_node in node.value:
                    key = build(key_node)
                    if isinstance(key, (list, dict)):
                        raise yaml.constructor.ConstructorError(
                            None, None, "found an unhashable key", key_node.start_mark)
                    out[key] = build(value_node)
                return out
            return construct(node, deep=True)

        try:
            return build(root)
        finally:
            self.constructed_objects.clear()
            self.recursive_objects.clear()


def _yaml_documents(text: str, file: str | None) -> Iterator[tuple[Any, Node]]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield loader.build(node), node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(p for p in (exc.context, exc.problem) if p) or "unreadable document"
        raise AdapterError(f"invalid YAML: {what}", file=file, line=mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise AdapterError(f"invalid YAML: {exc}", file=file) from exc
    except RecursionError as exc:
        raise AdapterError("invalid YAML: nested too deeply", file=file) from exc
    finally:
        loader.dispose()


def _item_lines(node: Node | None) -> list[int]:
    """The line of each ``items`` entry of a List document's node, or [] without a node."""
    if not isinstance(node, MappingNode):
        return []
    for key, value in node.value:
        if key.value == "items" and isinstance(value, SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _expand(doc: Any, line: int, pointer: str, node: Node | None) -> Iterator[tuple[dict[str, Any], int, str]]:
    """A document, or each item of a ``List`` / ``*List`` document (kubectl get -o yaml/json)."""
    if not isinstance(doc, dict):
        return  # not an object kubectl would apply (a YAML list, a scalar): nothing to judge here
    kind, items = doc.get("kind"), doc.get("items")
    if not (isinstance(kind, str) and kind.endswith("List") and isinstance(items, list)
            and all(isinstance(i, dict) for i in items)):
        yield doc, line, pointer
        return
    lines = _item_lines(node)
    item_kind = kind[: -len("List")] if kind != "List" else None
    for i, item in enumerate(items):
        if item_kind and "kind" not in item:  # typed lists (PodList) leave kind off their items
            item = {"apiVersion": doc.get("apiVersion"), "kind": item_kind, **item}
        yield from _expand(item, lines[i] if i < len(lines) else line, f"{pointer}/items/{i}", None)


def _json_documents(text: str, file: str | None) -> list[tuple[Any, int, str]] | None:
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "["):
        return None
    try:
        doc = json.loads(stripped)
    except ValueError:
        return None  # maybe YAML flow style; the YAML reader reports real errors with a line
    except RecursionError as exc:
        raise AdapterError("invalid JSON: nested too deeply", file=file) from exc
    line = text.count("\n", 0, len(text) - len(stripped)) + 1
    return [(d, line, f"/{i}") for i, d in enumerate(doc)] if isinstance(doc, list) else [(doc, line, "")]


def read_manifests(text: str, file: str | None = None) -> list[tuple[dict[str, Any], int, str]]:
    """Every object in a manifest text with its 1-based line and its JSON pointer in the document
    (``""``; ``/items/<i>`` for List items, ``/<i>`` in a JSON array). Skips what
    :func:`load_documents` skips."""
    text = text.removeprefix("\ufeff")
    out: list[tuple[dict[str, Any], int, str]] = []
    parsed = _json_documents(text, file)
    if parsed is not None:
        for doc, line, pointer in parsed:
            out.extend(_expand(doc, line, pointer, None))
        return out
    for doc, node in _yaml_documents(text, file):
        out.extend(_expand(doc, node.start_mark.line + 1, "", node))
    return out


def load_documents(text: str, file: str) -> list[tuple[dict[str, Any], int]]:
    """The objects of a multi-document YAML (or JSON) manifest, each with its 1-based start line.

    ``kind: List`` and typed ``*List`` objects are expanded into their items (JSON items carry
    the list's line); a top-level JSON array gives each object in it. Empty documents and
    documents that are not mappings (a YAML list, a bare scalar) are skipped: the caller decides
    what a file without objects means. Raises :class:`AdapterError` with the line on a YAML
    syntax error. :func:`read_manifests` also gives each object's pointer (``/items/<i>``).
    """
    return [(doc, line) for doc, line, _ in read_manifests(text, file)]


__all__ = ["load_documents", "read_manifests"]
