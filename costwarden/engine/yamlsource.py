"""Positional YAML reading: text → plain Python values, keeping every node's place in the file.

PyYAML resolves scalars by YAML 1.1 (``on`` → True, ``0777`` → octal, ``1:30`` → 90). Policies are
read by the YAML 1.2 core schema instead: only ``true``/``false`` (and their ``True``/``TRUE``
spellings) are booleans, ``null``/``~``/empty is None, ints and floats are the 1.2 forms, everything
else — ``yes``, ``on``, dates — is a string (pydantic parses dates itself). Quoted scalars are always
strings. Merge keys (``<<: *defaults``) are supported; explicit keys win over merged ones.

The composed node tree is kept, so a path such as ``("spec", "rules", 0, "budget")`` can be turned
back into a line and column when, and only when, something about it needs reporting
(:mod:`costwarden.engine.yamlposition` does that).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

from costwarden.engine.diagnostics import Diagnostic, Position

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
MERGE, SEQ, MAP = _TAG + "merge", _TAG + "seq", _TAG + "map"
_KEPT_AS_STRING = {_TAG + "timestamp", _TAG + "value"}

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# What YAML 1.1 tools (kubectl, PyYAML's safe_load) read as booleans but 1.2 keeps as strings.
YAML11_BOOLEANS = frozenset(w for b in ("yes", "no", "on", "off", "y", "n") for w in (b, b.capitalize(), b.upper()))
# YAML's printable set; anything outside it is rejected before libyaml sees it.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

MAX_DEPTH = 100
MAX_ALIASED = 100_000  # nodes built again through aliases: stops "billion laughs" documents


def core_tag(text: str) -> str:
    """The YAML 1.2 core-schema tag of a plain scalar."""
    if text in _NULLS:
        return NULL
    if text in _BOOLS:
        return BOOL
    if _INT.fullmatch(text):
        return INT
    if _FLOAT.fullmatch(text):
        return FLOAT
    if text == "<<":
        return MERGE
    return STR


class _Loader(_BaseLoader):
    """The safe loader with YAML 1.2 core-schema resolution of untagged scalars."""

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return core_tag(value) if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found while reading YAML, before any schema is involved."""

    position: Position
    code: str
    message: str
    hint: str | None = None


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


@dataclass
class YamlStream:
    """Every document read from one text, the text's lines, and any problem that stopped reading."""

    lines: list[str]
    documents: list[YamlDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


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


def _float(text: str) -> float:
    lowered = text.lower()
    return float(lowered.replace(".inf", "inf").replace(".nan", "nan")) if "." in lowered else float(text)


def _offset_position(text: str, offset: int) -> Position:
    before = split_lines(text[:offset])
    return Position(len(before), len(before[-1]) + 1)


def read_stream(text: str) -> YamlStream:
    """Compose every document in ``text``; never raises (problems are returned)."""
    stream = YamlStream(lines=split_lines(text))
    bad = _NON_PRINTABLE.search(text)
    if bad:
        char = ord(bad.group())
        stream.problems.append(
            Problem(
                _offset_position(text, bad.start()),
                "yaml-syntax",
                f"character U+{char:04X} is not allowed in YAML",
                "remove it or write it as an escape in a double-quoted string",
            )
        )
        return stream
    loader = _Loader(text)
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


def _compose(loader: _Loader, stream: YamlStream) -> None:
    index = 0
    while loader.check_node():
        node = loader.get_node()
        if node is not None:
            stream.documents.append(_Builder(index).document(node))
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
        return _offset_position(text, offset)
    return Position(1, 1)


def _one_line(message: str) -> str:
    return " ".join(message.split())


class _Abort(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


class _Builder:
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
        if tag in (STR, MERGE) or tag in _KEPT_AS_STRING:
            if not node.style and text in YAML11_BOOLEANS:  # plain: None (Python) or '' (libyaml)
                self.yaml11.append(path)
            return text
        if tag in (NULL, BOOL, INT, FLOAT) and core_tag(text) != tag:
            self.problems.append(
                Problem(node_position(node), "yaml-syntax", f"{text!r} is not a valid {tag.removeprefix(_TAG)}")
            )
            return text
        if tag == NULL:
            return None
        if tag == BOOL:
            return _BOOLS[text]
        if tag == INT:
            return self.integer(node, text)
        if tag == FLOAT:
            return _float(text)
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
            _offset_position(before, len(before)),
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
