"""One composed YAML document → plain Python values, checking what YAML itself lets through:
duplicate keys, non-string keys, unsupported tags, scalars their tag does not fit, merge keys
(``<<: *defaults``, explicit keys win over merged ones), and documents that aliases or nesting
blow up. Where a plain scalar is written as a YAML 1.1 boolean (``yes``, ``on``) its path is
recorded, so the loader can warn about it.

It is separate from :mod:`costwarden.engine.yamlsource` because reading a text (decoding,
parsing, syntax errors) and turning one document's node tree into values are different jobs;
scalars are converted by the core schema in :mod:`costwarden.engine.yamlcore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from costwarden.engine.yamlcore import (
    BOOL,
    BOOLS,
    FLOAT,
    INT,
    KEPT_AS_STRING,
    MAP,
    MERGE,
    NULL,
    SEQ,
    STR,
    TAG,
    YAML11_BOOLEANS,
    core_float,
    core_tag,
)
from costwarden.engine.yamlproblems import Problem, node_position

Path = tuple[str | int, ...]

MAX_DEPTH = 100
MAX_ALIASED = 100_000  # nodes built again through aliases: stops "billion laughs" documents


@dataclass
class YamlDocument:
    """One document of a stream: its plain value, its node tree and where 1.1 booleans were written."""

    index: int
    node: Node
    data: Any
    problems: list[Problem] = field(default_factory=list)
    yaml11_booleans: list[Path] = field(default_factory=list)

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1


class _Abort(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


class DocumentBuilder:
    """Builds plain values from one document's nodes, reporting what YAML itself lets through."""

    def __init__(self, index: int) -> None:
        self.doc_index = index
        self.seen: set[int] = set()
        self.aliased = 0
        self.active: set[int] = set()
        self.problems: list[Problem] = []
        self.yaml11: list[Path] = []

    def document(self, node: Node) -> YamlDocument:
        try:
            data = self.build(node, (), 0)
        except _Abort as abort:
            self.problems.append(abort.problem)
            data = None
        return YamlDocument(self.doc_index, node, data, self.problems, self.yaml11)

    def build(self, node: Node, path: Path, depth: int) -> Any:
        if id(node) in self.seen:
            self.aliased += 1
            if self.aliased > MAX_ALIASED:
                raise _Abort(
                    Problem(
                        node_position(node),
                        "yaml-syntax",
                        f"aliases expand the document by more than {MAX_ALIASED} nodes",
                    )
                )
        else:
            self.seen.add(id(node))
        if depth > MAX_DEPTH:
            raise _Abort(
                Problem(node_position(node), "yaml-syntax", f"document is nested more than {MAX_DEPTH} levels deep")
            )
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise _Abort(Problem(node_position(node), "yaml-syntax", "alias refers to itself (recursive)"))
        self.active.add(id(node))
        try:
            if node.tag not in (SEQ, MAP):
                self.problems.append(_unsupported_tag(node))
            if isinstance(node, MappingNode):
                return self.mapping(node, path, depth)
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        text: str = node.value
        tag = node.tag
        if tag in (STR, MERGE) or tag in KEPT_AS_STRING:
            if not node.style and text in YAML11_BOOLEANS:  # plain: None (Python) or '' (libyaml)
                self.yaml11.append(path)
            return text
        if tag in (NULL, BOOL, INT, FLOAT) and core_tag(text) != tag:
            self.problems.append(
                Problem(node_position(node), "yaml-syntax", f"{text!r} is not a valid {tag.removeprefix(TAG)}")
            )
            return text
        if tag == NULL:
            return None
        if tag == BOOL:
            return BOOLS[text]
        if tag == INT:
            return self.integer(node, text)
        if tag == FLOAT:
            return core_float(text)
        self.problems.append(_unsupported_tag(node))
        return text

    def integer(self, node: ScalarNode, text: str) -> int | str:
        try:
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text)
        except ValueError:
            self.problems.append(
                Problem(node_position(node), "invalid-value", f"integer has too many digits ({len(text)})")
            )
            return text

    def mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == MERGE:
                merges.append(value_node)
                continue
            key = self.key(key_node)
            if key is None:
                continue
            if key in first_line:
                self.problems.append(
                    Problem(
                        node_position(key_node),
                        "duplicate-key",
                        f"duplicate key {key!r} (first defined on line {first_line[key]})",
                        "remove one of them; YAML keeps only the last, silently",
                    )
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key), depth + 1)
        for merged in merges:
            for key, value in self.merged(merged, path, depth).items():
                result.setdefault(key, value)
        return result

    def merged(self, node: Node, path: Path, depth: int) -> dict[str, Any]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        combined: dict[str, Any] = {}
        for source in sources:
            if not isinstance(source, MappingNode):
                self.problems.append(
                    Problem(
                        node_position(source),
                        "invalid-type",
                        "a merge key ('<<') takes a mapping or a list of mappings",
                    )
                )
                continue
            value = self.build(source, path, depth + 1)
            for key, item in value.items():
                combined.setdefault(key, item)
        return combined

    def key(self, node: Node) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == STR:
            return str(node.value)
        shown = (
            node.value
            if isinstance(node, ScalarNode)
            else ("a list" if isinstance(node, SequenceNode) else "a mapping")
        )
        hint = f'quote it: "{node.value}"' if isinstance(node, ScalarNode) else None
        self.problems.append(
            Problem(node_position(node), "invalid-type", f"mapping keys must be strings, got {shown!s}", hint)
        )
        return None


def _unsupported_tag(node: Node) -> Problem:
    if isinstance(node, ScalarNode) and not node.tag.startswith("tag:yaml.org,2002:"):
        # `when: !has(subject.tags.team)` is a CEL negation that YAML reads as a tag
        text = f"{node.tag} {node.value}".strip()
        hint = f"a leading '!' starts a YAML tag; if this is an expression, quote it: '{text}'"
    else:
        hint = "remove the tag; policy files use plain YAML values"
    return Problem(node_position(node), "yaml-syntax", f"unsupported YAML tag {node.tag!r}", hint)


__all__ = ["MAX_ALIASED", "MAX_DEPTH", "DocumentBuilder", "Path", "YamlDocument"]
