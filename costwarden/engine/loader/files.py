"""Text, bytes, files and folders → a :class:`LoadResult`: every document that loaded and every
problem found, each file's documents kept only if the file has no error, and names defined twice
across files rejected."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import Node

from costwarden.engine import yamlposition, yamlsource
from costwarden.engine.diagnostics import Diagnostic, Position
from costwarden.engine.loader.validator import _check
from costwarden.engine.loader.walk import Skipped, walk
from costwarden.errors import PolicyError


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
        return yamlposition.locate(self.node, tuple(loc))

    def locate_value(self, loc: Sequence[str | int], offset: int | None = None) -> Position:
        """Where the value at ``loc`` is; ``offset`` moves into a one-line scalar (e.g. a CEL error)."""
        return yamlposition.locate(self.node, tuple(loc), value=True, offset=offset, lines=self.lines)

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
        pos = yamlposition.locate(
            self.node, tuple(loc), value=value or offset is not None, offset=offset, lines=self.lines
        )
        return yamlsource.diagnostic_at(self.file, self.lines, pos, code, message, hint)


@dataclass
class LoadResult:
    """Every document that loaded and every problem found, across all files, and the library
    test data that folders held and were not read as policies."""

    documents: list[SourceDocument] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def load_text(text: str, file: str = "<string>") -> LoadResult:
    """Load every document in ``text``; ``file`` names it in diagnostics. Never raises."""
    return _combine([_load_file(text, file)])


def load_bytes(data: bytes, file: str = "<bytes>") -> LoadResult:
    """Load every document in ``data`` (UTF-8, or UTF-16/32 with a BOM). Never raises."""
    return _combine([_load_file(data, file)])


def load_paths(*paths: str | os.PathLike[str]) -> LoadResult:
    """Load files and directories (recursively: ``*.yaml``/``*.yml``, sorted). Never raises.

    In directories, hidden files and folders are not read, nor the policy library's test data
    (every ``tests.yaml``, and a ``samples/`` folder beside one; see :mod:`.walk`), which
    ``LoadResult.skipped`` lists. A path named explicitly is always read.
    """
    per_file: list[_FileResult] = []
    skipped: list[Skipped] = []
    for file, problem in _expand(paths, skipped):
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
    result = _combine(per_file)
    result.skipped = skipped
    return result


def load_documents(*paths: str | os.PathLike[str]) -> list[SourceDocument]:
    """Like :func:`load_paths`, but raise ``PolicyError`` carrying every diagnostic if there is any."""
    result = load_paths(*paths)
    if result.diagnostics:
        raise PolicyError(result.diagnostics)
    return result.documents


_FileResult = tuple[list[SourceDocument], list[Diagnostic]]


def _expand(paths: Sequence[str | os.PathLike[str]], skipped: list[Skipped]) -> Iterator[tuple[str, Diagnostic | None]]:
    seen: set[str] = set()
    for given in paths:
        path = os.fspath(given)
        if os.path.isdir(path):
            files, passed_over = walk(path)
            skipped.extend(passed_over)
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
    diags = sorted(dict.fromkeys(diags), key=lambda d: (d.line, d.column))  # merge keys repeat a node's problems
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
