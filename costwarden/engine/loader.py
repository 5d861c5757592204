"""Policy files → validated documents, or every problem in them as a positioned Diagnostic.

::

    result = load_paths("policies/")            # never raises; result.diagnostics lists every problem
    documents = load_documents("policies/")     # raises PolicyError(diagnostics) if there is any

YAML is read by :mod:`costwarden.engine.yamlsource` (YAML 1.2 core schema, node marks kept), each
document is checked for what the schema cannot say well (apiVersion, kind, rule kinds, duplicate
names, YAML 1.1 booleans) and then validated by its pydantic model; pydantic's errors are mapped
to stable codes and to the line and column of the key or value they are about. A file with any
error contributes no documents.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node

from costwarden.engine import yamlsource
from costwarden.engine.diagnostics import Diagnostic, Position, did_you_mean
from costwarden.engine.rules import RULE_KINDS
from costwarden.engine.schema import API_VERSION, DOCUMENT_KINDS, DOCUMENT_MODELS, RuleBase, document_adapter
from costwarden.engine.yamlsource import Path
from costwarden.errors import PolicyError

YAML_SUFFIXES = (".yaml", ".yml")
SKIPPED_FILES = frozenset({"tests.yaml"})  # library test cases, not policies
SKIPPED_DIRS = frozenset({"samples"})  # library sample inputs, not policies


@dataclass(frozen=True)
class SourceDocument:
    """One validated document and where it came from; turns paths inside it into positions."""

    file: str
    index: int
    kind: str
    model: Any
    line: int
    node: Node = field(repr=False, compare=False)
    lines: Sequence[str] = field(repr=False, compare=False)

    def locate(self, loc: Sequence[str | int]) -> Position:
        """Where the key (for a mapping entry) or the item at ``loc`` is, or its nearest ancestor."""
        return yamlsource.locate(self.node, tuple(loc))

    def locate_value(self, loc: Sequence[str | int], offset: int | None = None) -> Position:
        """Where the value at ``loc`` is; ``offset`` moves into a one-line scalar (e.g. a CEL error)."""
        return yamlsource.locate(self.node, tuple(loc), value=True, offset=offset)

    def diagnostic(
        self,
        loc: Sequence[str | int],
        code: str,
        message: str,
        hint: str | None = None,
        *,
        value: bool = False,
        offset: int | None = None,
    ) -> Diagnostic:
        """A Diagnostic at ``loc`` (its key, or its value with ``value=True``), source line filled."""
        pos = yamlsource.locate(self.node, tuple(loc), value=value or offset is not None, offset=offset)
        return yamlsource.diagnostic_at(self.file, self.lines, pos, code, message, hint)


@dataclass
class LoadResult:
    """Every document that loaded and every problem found, across all files."""

    documents: list[SourceDocument] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def load_text(text: str, file: str = "<string>") -> LoadResult:
    """Load every document in ``text``; ``file`` names it in diagnostics. Never raises."""
    return _combine([_load_file(text, file)])


def load_bytes(data: bytes, file: str = "<bytes>") -> LoadResult:
    """Load every document in ``data`` (UTF-8, or UTF-16/32 with a BOM). Never raises."""
    return _combine([_load_file(data, file)])


def load_paths(*paths: str | os.PathLike[str]) -> LoadResult:
    """Load files and directories (recursively: ``*.yaml``/``*.yml``, sorted). Never raises.

    In directories, files named ``tests.yaml``, anything under a ``samples/`` folder and hidden
    files and folders are skipped: they are the policy library's test data, not policies.
    """
    per_file: list[_FileResult] = []
    for file, problem in _expand(paths):
        if problem is not None:
            per_file.append(([], [problem]))
            continue
        try:
            with open(file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            per_file.append(([], [_file_diagnostic(file, "unreadable-file", f"cannot read: {exc.strerror}")]))
            continue
        per_file.append(_load_file(data, file))
    return _combine(per_file)


def load_documents(*paths: str | os.PathLike[str]) -> list[SourceDocument]:
    """Like :func:`load_paths`, but raise ``PolicyError`` carrying every diagnostic if there is any."""
    result = load_paths(*paths)
    if result.diagnostics:
        raise PolicyError(result.diagnostics)
    return result.documents


_FileResult = tuple[list[SourceDocument], list[Diagnostic]]


def _expand(paths: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[str, Diagnostic | None]]:
    seen: set[str] = set()
    for given in paths:
        path = os.fspath(given)
        if os.path.isdir(path):
            files = _walk(path)
        elif os.path.exists(path):
            files = [path]
        else:
            yield path, _file_diagnostic(path, "no-such-file", "no such file or directory")
            continue
        for file in files:
            real = os.path.realpath(file)
            if real not in seen:
                seen.add(real)
                yield file, None


def _walk(root: str) -> list[str]:
    found: list[tuple[tuple[str, ...], str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        found.extend(
            ((*parts, name), os.path.join(folder, name))
            for name in files
            if name.endswith(YAML_SUFFIXES) and name not in SKIPPED_FILES and not name.startswith(".")
        )
    return [path for _, path in sorted(found)]


def _file_diagnostic(file: str, code: str, message: str) -> Diagnostic:
    return Diagnostic(file=file, line=1, column=1, code=code, message=message)


def _load_file(content: str | bytes, file: str) -> _FileResult:
    """One file's documents, or none and every problem in it."""
    try:
        if isinstance(content, bytes):
            text, problem = yamlsource.decode(content)
            if text is None:
                lines = yamlsource.split_lines(content.decode("utf-8", errors="replace"))
                return [], [_from_problem(file, lines, problem)] if problem else []
            content = text
        docs, diags = _load_stream(content.removeprefix("\ufeff"), file)
    except Exception as exc:  # noqa: BLE001 - a loader bug must still fail closed, with a position
        docs, diags = [], [_file_diagnostic(file, "internal-error", f"could not load file: {exc!r}")]
    diags.sort(key=lambda d: (d.line, d.column))
    return ([] if diags else docs), diags


def _load_stream(text: str, file: str) -> _FileResult:
    stream = yamlsource.read_stream(text)
    lines = stream.lines
    diags = [_from_problem(file, lines, p) for p in stream.problems]
    documents: list[SourceDocument] = []
    for ydoc in stream.documents:
        found = [_from_problem(file, lines, p) for p in ydoc.problems]
        if ydoc.data is not None:  # None: an empty document (not an error) or one that could not be read
            model, kind = _check(ydoc, file, lines, found)
            if model is not None and not found:
                documents.append(SourceDocument(file, ydoc.index, kind, model, ydoc.line, ydoc.node, lines))
        diags.extend(found)
    return documents, diags


def _check(ydoc: yamlsource.YamlDocument, file: str, lines: Sequence[str], found: list[Diagnostic]) -> tuple[Any, str]:
    def line_of(loc: Path) -> int:
        return yamlsource.locate(ydoc.node, loc, value=True).line

    validator = _Validator(ydoc.data, ydoc.yaml11_booleans, line_of)
    model = validator.run()
    for issue in validator.issues:
        pos = yamlsource.locate(ydoc.node, issue.loc, value=issue.at_value)
        found.append(yamlsource.diagnostic_at(file, lines, pos, issue.code, issue.message, issue.hint))
    return model, validator.kind or ""


def _from_problem(file: str, lines: Sequence[str], problem: yamlsource.Problem) -> Diagnostic:
    pos = problem.position
    return yamlsource.diagnostic_at(file, lines, pos, problem.code, problem.message, problem.hint)


def _combine(per_file: list[_FileResult]) -> LoadResult:
    """Reject names defined twice across files (pointing at the second), then gather everything."""
    result = LoadResult()
    first: dict[tuple[str, str], SourceDocument] = {}
    for documents, diagnostics in per_file:
        duplicates: list[Diagnostic] = []
        for doc in documents:
            name = str(doc.model.metadata.name)
            earlier = first.setdefault((doc.kind, name), doc)
            if earlier is not doc:
                where = f"{earlier.file}:{earlier.locate_value(('metadata', 'name')).line}"
                duplicates.append(
                    doc.diagnostic(
                        ("metadata", "name"),
                        "duplicate-policy-name",
                        f"{doc.kind} name {name!r} is already defined",
                        f"first defined at {where}",
                        value=True,
                    )
                )
        if diagnostics or duplicates:
            result.diagnostics.extend(diagnostics + duplicates)
        else:
            result.documents.extend(documents)
    return result


# ---- checking one document -------------------------------------------------------------------

_RULE_FIELDS = tuple(RuleBase.model_fields)
_HEADER_HINT = f"a document starts with 'apiVersion: {API_VERSION}' and 'kind: <{'|'.join(DOCUMENT_KINDS)}>'"
_DATE_HINT = "write a date as 2026-12-31, or a time as 2026-12-31T18:00:00Z"
_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}


@dataclass(frozen=True, slots=True)
class _Issue:
    loc: Path
    code: str
    message: str
    hint: str | None = None
    at_value: bool = False


class _Validator:
    """One document: header, rule kinds and names, YAML 1.1 booleans, then its pydantic model."""

    def __init__(self, data: Any, yaml11: list[Path], line_of: Callable[[Path], int]) -> None:
        self.data = data
        self.yaml11 = yaml11
        self.line_of = line_of
        self.kind: str | None = None
        self.issues: list[_Issue] = []
        self.muted_under: list[Path] = []  # our own checks reported these; pydantic's would be noise
        self.muted_at: set[Path] = {("apiVersion",), ("kind",)}

    def run(self) -> Any:
        if not isinstance(self.data, dict):
            self.issue(
                (),
                "not-a-mapping",
                f"a document must be a mapping, got {_describe(self.data)}",
                _HEADER_HINT,
                at_value=True,
            )
            return None
        self.kind = self.header(self.data)
        if self.kind is None:
            return None
        if self.kind == "Policy":
            self.rules(self.data)
        elif self.kind == "Exemption":
            self.expires(self.data)
        self.yaml11_booleans()
        try:
            return document_adapter(self.kind).validate_python(self.data)
        except ValidationError as exc:
            self.map_errors(exc.errors(include_url=False))
        except Exception as exc:  # noqa: BLE001 - e.g. RecursionError; still a positioned diagnostic
            self.issue((), "invalid-value", f"document could not be validated: {exc!r}")
        return None

    def issue(self, loc: Path, code: str, message: str, hint: str | None = None, *, at_value: bool = False) -> None:
        self.issues.append(_Issue(loc, code, message, hint, at_value))

    def header(self, data: dict[str, Any]) -> str | None:
        if "apiVersion" not in data:
            self.issue((), "missing-field", "missing required field 'apiVersion'", f"add 'apiVersion: {API_VERSION}'")
        elif data["apiVersion"] != API_VERSION:
            self.issue(
                ("apiVersion",),
                "unknown-api-version",
                f"unknown apiVersion {data['apiVersion']!r}",
                f"use '{API_VERSION}'",
                at_value=True,
            )
        kind = data.get("kind")
        if "kind" not in data:
            self.issue((), "missing-field", "missing required field 'kind'", _HEADER_HINT)
        elif not isinstance(kind, str) or kind not in DOCUMENT_KINDS:
            self.issue(
                ("kind",),
                "unknown-kind",
                f"unknown kind {kind!r}",
                did_you_mean(str(kind), DOCUMENT_KINDS, what="kinds"),
                at_value=True,
            )
        else:
            return kind
        return None

    def rules(self, data: dict[str, Any]) -> None:
        spec = data.get("spec")
        rules = spec.get("rules") if isinstance(spec, dict) else None
        if not isinstance(rules, list):
            return
        first: dict[str, Path] = {}
        for i, rule in enumerate(rules):
            at: Path = ("spec", "rules", i)
            if not isinstance(rule, dict):
                self.muted_under.append(at)
                self.issue(
                    at,
                    "invalid-type",
                    f"a rule must be a mapping, got {_describe(rule)}",
                    f"write '- name: <name>' and one of: {', '.join(RULE_KINDS)}",
                    at_value=True,
                )
                continue
            self.rule_kind(at, rule)
            name = rule.get("name")
            if isinstance(name, str) and name in first:
                self.muted_at.add(("spec", "rules"))  # the schema's own duplicate-name check
                self.issue(
                    (*at, "name"),
                    "duplicate-rule-name",
                    f"rule name {name!r} is used twice in this policy",
                    f"first used on line {self.line_of(first[name])}; rule names are unique",
                    at_value=True,
                )
            elif isinstance(name, str):
                first[name] = (*at, "name")

    def rule_kind(self, at: Path, rule: dict[str, Any]) -> None:
        kinds = [key for key in rule if key in RULE_KINDS]
        unknown = [key for key in rule if key not in RULE_KINDS and key not in _RULE_FIELDS]
        for key in unknown:
            self.muted_under.append((*at, key))
            if kinds:
                self.issue(
                    (*at, key),
                    "unknown-field",
                    f"{key!r} is not a field of a rule",
                    did_you_mean(key, [*_RULE_FIELDS, *kinds], what="fields"),
                )
            else:
                self.issue(
                    (*at, key),
                    "unknown-rule-kind",
                    f"unknown rule kind {key!r}",
                    did_you_mean(key, RULE_KINDS, what="rule kinds"),
                )
        if len(kinds) > 1:
            self.muted_under.extend((*at, key) for key in kinds[1:])
            self.issue(
                (*at, kinds[1]),
                "multiple-rule-kinds",
                f"a rule has exactly one kind; this one has {len(kinds)}: {', '.join(kinds)}",
                "split it into one rule per kind",
            )
        if not kinds:
            self.muted_under.append(at)
            if not unknown:
                self.issue(at, "missing-rule-kind", "rule has no kind", f"add one of: {', '.join(RULE_KINDS)}")
            if "name" not in rule:
                self.issue(
                    at,
                    "missing-field",
                    "missing required field 'name' in a rule",
                    f"required fields: name and one of {', '.join(RULE_KINDS)}",
                )

    def expires(self, data: dict[str, Any]) -> None:
        spec = data.get("spec")
        value = spec.get("expires") if isinstance(spec, dict) else None
        if value is not None and not isinstance(value, str):  # pydantic would take 1 as a Unix time
            self.muted_under.append(("spec", "expires"))
            self.issue(
                ("spec", "expires"),
                "invalid-date",
                f"'expires' must be a date, got {_describe(value)}",
                _DATE_HINT,
                at_value=True,
            )

    def yaml11_booleans(self) -> None:
        root = DOCUMENT_MODELS.get(self.kind or "")
        for path in self.yaml11:
            members = [m for t in _types_at(root, path) for m in _members(t)]
            if bool in members and str not in members:
                self.muted_at.add(path)
                label, written = _label(path, self.kind or "document"), _get(self.data, path)
                self.issue(
                    path,
                    "yaml-1.1-boolean",
                    f"{label!r} takes true or false; {written!r} is a boolean only in YAML 1.1",
                    "use true or false",
                    at_value=True,
                )

    def map_errors(self, errors: list[Any]) -> None:
        located = [(self.strip(tuple(err["loc"])), err) for err in errors]
        extras: dict[Path, list[str]] = {}
        for loc, err in located:
            if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
                extras.setdefault(loc[:-1], []).append(loc[-1])
        seen: set[tuple[Path, str]] = set()
        for loc, err in located:
            if loc in self.muted_at or any(loc[: len(m)] == m for m in self.muted_under):
                continue
            if err["type"] == "missing" and difflib.get_close_matches(str(loc[-1]), extras.get(loc[:-1], [])):
                continue  # a misspelt field: the unknown-field diagnostic already says which
            issue = self.from_pydantic(loc, err)
            if (issue.loc, issue.code) not in seen:
                seen.add((issue.loc, issue.code))
                self.issues.append(issue)

    def strip(self, loc: tuple[Any, ...]) -> Path:
        """pydantic's loc → a path in the data: union member tags removed."""
        out: list[str | int] = []
        here: Any = self.data
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if i == 3 and loc[:2] == ("spec", "rules") and part in RULE_KINDS and not last:
                continue  # the rule union's discriminator tag
            if (
                isinstance(here, dict)
                and part in here
                or (isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here))
            ):
                out.append(part)
                here = here[part]
            elif isinstance(part, str) and (not last or not isinstance(here, dict)):
                continue  # a union member's tag such as 'datetime' or 'list[str]'
            else:
                out.append(part)
                here = None
        return tuple(out)

    def fields_at(self, path: Path) -> dict[str, Any]:
        models = [
            m
            for t in _types_at(DOCUMENT_MODELS.get(self.kind or ""), path)
            for m in _members(t)
            if isinstance(m, type) and issubclass(m, BaseModel)
        ]
        here = _get(self.data, path)
        keys = set(here) if isinstance(here, dict) else set()
        best = max(models, key=lambda m: len(keys & m.model_fields.keys()), default=None)
        return dict(best.model_fields) if best is not None else {}

    def from_pydantic(self, loc: Path, err: Any) -> _Issue:
        kind, etype, value = self.kind or "document", str(err["type"]), err.get("input")
        label, ctx = _label(loc, kind), err.get("ctx") or {}
        if etype == "missing":
            fields = self.fields_at(loc[:-1])
            required = [name for name, info in fields.items() if info.is_required()]
            return _Issue(
                loc[:-1],
                "missing-field",
                f"missing required field {label!r} in {_label(loc[:-1], kind)!r}",
                f"required fields: {', '.join(required)}" if required else None,
            )
        if etype == "extra_forbidden":
            return _Issue(
                loc,
                "unknown-field",
                f"{label!r} is not a field of {_label(loc[:-1], kind)!r}",
                did_you_mean(label, self.fields_at(loc[:-1]), what="fields"),
            )
        if etype.startswith(("date", "datetime", "time")):
            reason = ctx.get("error", err["msg"])
            return _Issue(loc, "invalid-date", f"{label!r} is not a valid date: {reason}", _DATE_HINT, True)
        if etype in ("literal_error", "enum"):
            choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
            return _Issue(
                loc,
                "invalid-value",
                f"{value!r} is not a valid value for {label!r}",
                did_you_mean(str(value), choices, what="valid values"),
                True,
            )
        if etype == "string_pattern_mismatch":
            return _Issue(
                loc,
                "invalid-value",
                f"{value!r} is not a valid value for {label!r}",
                f"it must match the pattern {ctx.get('pattern')}",
                True,
            )
        if etype in _TYPE_WORDS:
            scalar = isinstance(value, int | float | str)
            hint = (
                f'quote it to make it a string: "{_yaml_text(value)}"'
                if etype == "string_type" and scalar
                else f"write a list: [{_yaml_text(value)}]"
                if etype == "list_type" and scalar
                else None
            )
            return _Issue(
                loc, "invalid-type", f"{label!r} must be {_TYPE_WORDS[etype]}, got {_describe(value)}", hint, True
            )
        message = str(err["msg"]).removeprefix("Value error, ")
        return _Issue(loc, "invalid-value", f"{label!r}: {message[:1].lower()}{message[1:]}", None, True)


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


def _label(path: Path, kind: str) -> str:
    if not path:
        return kind
    if isinstance(path[-1], int):
        return f"{_label(path[:-1], kind)}[{path[-1]}]"
    return path[-1]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({_yaml_text(value)})"
    if isinstance(value, int | float):
        return f"a number ({value})" if len(str(value)) < 40 else "a number"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    return "a list" if isinstance(value, list) else "a mapping"


def _yaml_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


__all__ = [
    "LoadResult",
    "SourceDocument",
    "load_bytes",
    "load_documents",
    "load_paths",
    "load_text",
]
