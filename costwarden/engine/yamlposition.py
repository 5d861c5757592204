"""Paths into a composed YAML node tree → line and column: the key or value a path names (through
merge keys), or its nearest existing ancestor, and a character inside a scalar however it was
written (quoted, escaped, folded, block). Used only when something needs reporting, so reading a
policy costs nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from costwarden.engine.diagnostics import Position
from costwarden.engine.yamlsource import MAX_DEPTH, MERGE, STR, Path, node_position


def locate(
    root: Node, loc: Path, *, value: bool = False, offset: int | None = None, lines: Sequence[str] | None = None
) -> Position:
    """The position of ``loc`` under ``root``: its key, or with ``value`` its value; else its
    nearest existing ancestor's. ``offset`` moves into a scalar (e.g. a CEL error): with the
    file's ``lines``, into any scalar (quoted with escapes, multi-line, block); without, a
    one-line scalar without escapes."""
    key, node, depth = find_node(root, loc)
    if not value or depth < len(loc):
        return node_position(key if key is not None else node)
    pos = node_position(node)
    if offset is None or not isinstance(node, ScalarNode) or not 0 <= offset < len(node.value):
        return pos
    if lines is not None:
        return _offset_in_scalar(node, lines, offset) or pos
    if node.style in (None, "", "'", '"') and node.start_mark.line == node.end_mark.line:
        return Position(pos.line, pos.column + offset + bool(node.style), 1)
    return pos


def _offset_in_scalar(node: ScalarNode, lines: Sequence[str], offset: int) -> Position | None:
    """Where the scalar's ``offset``-th character was written: its value's characters are matched
    in order against the source between the node's marks, skipping what YAML drops (quotes,
    escapes' backslashes, a block header, indentation, folded line breaks); None when they cannot
    be matched (e.g. a ``\\n`` escape)."""
    start, end = node.start_mark, node.end_mark
    source: list[tuple[str, int, int]] = []  # (character, 0-based line, 0-based column)
    for line in range(start.line, min(end.line, len(lines) - 1) + 1):
        text = lines[line]
        first = start.column if line == start.line else 0
        last = end.column if line == end.line else len(text)
        source.extend((text[col], line, col) for col in range(first, min(last, len(text))))
        if line != end.line:
            source.append(("\n", line, len(text)))
    j = 0
    if node.style in ("|", ">"):  # the header ('|', '>-', '|2', a comment) ends at the first break
        j = next((k + 1 for k, (ch, _, _) in enumerate(source) if ch == "\n"), len(source))
    elif node.style in ("'", '"'):
        j = 1
    for i, char in enumerate(node.value[: offset + 1]):
        while j < len(source) and source[j][0] != char:
            j += 1
        if j >= len(source):
            return None
        if i == offset:
            return Position(source[j][1] + 1, source[j][2] + 1, 1)
        j += 1
    return None


def find_node(root: Node, loc: Path) -> tuple[Node | None, Node, int]:
    """The (key node, value node) at ``loc``, or at its nearest existing ancestor; and how deep it got."""
    key: Node | None = None
    node = root
    depth = 0
    for part in loc:
        step = _step(node, part, 0)
        if step is None:
            break
        key, node = step
        depth += 1
    return key, node, depth


def _step(node: Node, part: str | int, level: int) -> tuple[Node | None, Node] | None:
    if isinstance(node, SequenceNode):
        if isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None
    if not isinstance(node, MappingNode) or level > MAX_DEPTH:
        return None
    merges: list[Node] = []
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode):
            if key_node.tag == MERGE:
                merges.append(value_node)
            elif key_node.tag == STR and key_node.value == part:
                return key_node, value_node
    for merged in merges:
        for source in merged.value if isinstance(merged, SequenceNode) else [merged]:
            found = _step(source, part, level + 1)
            if found is not None:
                return found
    return None


__all__ = ["find_node", "locate"]
