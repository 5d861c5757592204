"""Positional YAML reading: text → plain Python values, keeping every node's place in the file.

Policies are read by the YAML 1.2 core schema, not PyYAML's 1.1 (``on`` and ``yes`` stay strings,
``0777`` is decimal); quoted scalars are always strings, and merge keys (``<<: *defaults``) are
supported with explicit keys winning over merged ones. The composed node tree is kept, so a path
such as ``("spec", "rules", 0, "budget")`` can be turned back into a line and column when, and only
when, something about it needs reporting (:mod:`costwarden.engine.yamlposition` does that).

This module is the entry point: bytes → text (:func:`decode`) and text → a stream of documents
(:func:`read_stream`), with parser errors turned into problems. The parts it uses live next to it,
and their names are re-exported here:

* :mod:`costwarden.engine.yamlcore` — the core schema: how a plain scalar resolves, the loader;
* :mod:`costwarden.engine.yamlbuild` — one document's node tree → values, and what YAML lets
  through that a policy must not have (duplicate keys, odd tags, alias bombs);
* :mod:`costwarden.engine.yamlproblems` — problems, positions, the text's lines, diagnostics.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from costwarden.engine.diagnostics import Position
from costwarden.engine.yamlbuild import MAX_DEPTH as MAX_DEPTH
from costwarden.engine.yamlbuild import DocumentBuilder, Path, YamlDocument
from costwarden.engine.yamlcore import MERGE as MERGE
from costwarden.engine.yamlcore import STR as STR
from costwarden.engine.yamlcore import YAML11_BOOLEANS, CoreLoader, core_tag
from costwarden.engine.yamlproblems import Problem, diagnostic_at, node_position, offset_position, split_lines

# YAML's printable set; anything outside it is rejected before libyaml sees it.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class YamlStream:
    """Every document read from one text, the text's lines, and any problem that stopped reading."""

    lines: list[str]
    documents: list[YamlDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_stream(text: str) -> YamlStream:
    """Compose every document in ``text``; never raises (problems are returned)."""
    stream = YamlStream(lines=split_lines(text))
    bad = _NON_PRINTABLE.search(text)
    if bad:
        char = ord(bad.group())
        stream.problems.append(
            Problem(
                offset_position(text, bad.start()),
                "yaml-syntax",
                f"character U+{char:04X} is not allowed in YAML",
                "remove it or write it as an escape in a double-quoted string",
            )
        )
        return stream
    loader = CoreLoader(text)
    try:
        _compose(loader, stream)
    except yaml.MarkedYAMLError as exc:
        stream.problems.append(_syntax_problem(exc, stream.lines))
    except yaml.YAMLError as exc:
        stream.problems.append(Problem(_error_position(exc, text), "yaml-syntax", _one_line(str(exc))))
    except RecursionError:
        stream.problems.append(Problem(Position(1, 1), "yaml-syntax", "YAML is nested too deeply"))
    except Exception as exc:  # noqa: BLE001 - a parser bug must still become a diagnostic
        stream.problems.append(Problem(Position(1, 1), "yaml-syntax", f"cannot read YAML: {exc!r}"))
    finally:
        loader.dispose()
    return stream


def _compose(loader: CoreLoader, stream: YamlStream) -> None:
    index = 0
    while loader.check_node():
        node = loader.get_node()
        if node is not None:
            stream.documents.append(DocumentBuilder(index).document(node))
        index += 1


def _syntax_problem(exc: yaml.MarkedYAMLError, lines: Sequence[str]) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    pos = Position(mark.line + 1, mark.column + 1) if mark is not None else Position(1, 1)
    problem = _one_line(exc.problem or exc.context or "invalid YAML")
    hint = None
    if exc.context and exc.problem:
        where = exc.context_mark
        hint = exc.context + (f" (line {where.line + 1}, column {where.column + 1})" if where else "")
    text = lines[pos.line - 1] if 0 < pos.line <= len(lines) else ""
    if "\t" in text[: pos.column]:
        hint = "YAML does not allow tabs for indentation; indent with spaces"
    return Problem(pos, "yaml-syntax", problem, hint)


def _error_position(exc: yaml.YAMLError, text: str) -> Position:
    offset = getattr(exc, "position", None)
    if isinstance(offset, int) and 0 <= offset <= len(text):
        return offset_position(text, offset)
    return Position(1, 1)


def _one_line(message: str) -> str:
    return " ".join(message.split())


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(data: bytes) -> tuple[str, None] | tuple[None, Problem]:
    """UTF-8 (or UTF-16/32 with a BOM) bytes → text, or where the first undecodable byte is."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8-sig")
    try:
        return data.decode(encoding).removeprefix("\ufeff"), None
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode(encoding, errors="replace").removeprefix("\ufeff")
        name = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        return None, Problem(
            offset_position(before, len(before)),
            "invalid-encoding",
            f"file is not valid {name}: byte 0x{data[exc.start]:02x} at offset {exc.start}",
            "policy files are UTF-8 text; is this a binary file?",
        )


__all__ = [
    "YAML11_BOOLEANS",
    "Path",
    "Problem",
    "YamlDocument",
    "YamlStream",
    "core_tag",
    "decode",
    "diagnostic_at",
    "node_position",
    "read_stream",
    "split_lines",
]
