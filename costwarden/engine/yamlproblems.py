"""Problems found while reading YAML, and where they are: a node's position from its marks, a text
offset's position, the text's lines as YAML counts them, and a problem turned into a
:class:`~costwarden.engine.diagnostics.Diagnostic` with its source line.

It is separate from :mod:`costwarden.engine.yamlsource` (reading) and
:mod:`costwarden.engine.yamlbuild` (building values) because both report problems the same way,
and the loader turns them into diagnostics long after reading. Finding the node a path names is
:mod:`costwarden.engine.yamlposition`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from yaml.nodes import Node

from costwarden.engine.diagnostics import Diagnostic, Position

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found while reading YAML, before any schema is involved."""

    position: Position
    code: str
    message: str
    hint: str | None = None


def split_lines(text: str) -> list[str]:
    """The text's lines as YAML counts them (``\\r\\n``, ``\\r``, ``\\n``, NEL, LS, PS)."""
    return _LINE_BREAK.split(text)


def diagnostic_at(
    file: str, lines: Sequence[str], pos: Position, code: str, message: str, hint: str | None = None
) -> Diagnostic:
    """A Diagnostic at ``pos`` with its source line filled in."""
    if lines and pos.line > len(lines):  # libyaml's end-of-stream mark sits past a last line with no break
        pos = Position(len(lines), len(lines[-1]) + 1, 1)
    source = lines[pos.line - 1] if 0 < pos.line <= len(lines) else None
    return Diagnostic(
        file=file,
        line=pos.line,
        column=pos.column,
        code=code,
        message=message,
        hint=hint,
        source_line=source,
        length=max(pos.length, 1),
    )


def node_position(node: Node) -> Position:
    """Where a node starts; the length spans it when it sits on one line."""
    start, end = node.start_mark, node.end_mark
    length = end.column - start.column if end.line == start.line else 1
    return Position(start.line + 1, start.column + 1, max(length, 1))


def offset_position(text: str, offset: int) -> Position:
    """Where the character at ``offset`` of ``text`` is (or the end, for ``len(text)``)."""
    before = split_lines(text[:offset])
    return Position(len(before), len(before[-1]) + 1)


__all__ = ["Problem", "diagnostic_at", "node_position", "offset_position", "split_lines"]
