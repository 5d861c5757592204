"""A policy's ``tests.yaml``: its schema, and reading it so that every problem in it is reported
like a problem in a policy file — file:line:col, the source line and a hint — never a traceback
(a bad regex is found here, when the file is read, not when a case runs). The runner that uses
it is :mod:`costwarden.testing`; the layout is described there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from yaml.nodes import Node

from costwarden.engine import yamlposition, yamlsource
from costwarden.engine.decision import Surface
from costwarden.engine.diagnostics import Diagnostic, Position, did_you_mean
from costwarden.engine.loader.walk import TEST_FILE
from costwarden.errors import PolicyError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedResult(_Strict):
    rule: str
    result: Literal["pass", "fail", "warn", "error", "skip", "none"]
    message: str | None = Field(default=None, description="regex searched in the message")
    fix: bool | str | None = Field(default=None, description="true/false, or a regex on the fix description")
    savings: bool | None = None

    @field_validator("message", "fix")
    @classmethod
    def _compiles(cls, value: Any) -> Any:
        """A bad regex is the test file's error, found when it is read, not a crash mid-run."""
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise PydanticCustomError("invalid_regex", "{reason}", {"reason": str(exc)}) from None
        return value


class PolicyTestCase(_Strict):
    name: str
    input: str
    surface: Surface | None = None
    now: datetime | None = None
    results: list[ExpectedResult] = Field(min_length=1)


class LedgerSeed(_Strict):
    spend: dict[str, float] = Field(default_factory=dict)


class PolicyTestFile(_Strict):
    policy: str
    surface: Surface = "ci"
    now: datetime | None = None
    ledger: LedgerSeed | None = None
    cases: list[PolicyTestCase] = Field(min_length=1)


@dataclass(frozen=True)
class CaseSource:
    """A test file's text and node tree, to put its problems at file:line:col."""

    file: str
    lines: Sequence[str]
    node: Node | None = None

    def diagnostic(
        self,
        loc: tuple[str | int, ...],
        code: str,
        message: str,
        hint: str | None = None,
        *,
        value: bool = True,
        at: Position | None = None,
    ) -> Diagnostic:
        if at is None:
            at = yamlposition.locate(self.node, loc, value=value) if self.node is not None else Position(1, 1)
        return yamlsource.diagnostic_at(self.file, self.lines, at, code, message, hint)


def read_case_file(file: Path) -> tuple[PolicyTestFile, CaseSource]:
    """The test file, or PolicyError with every problem in it, positioned."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise PolicyError(
            [CaseSource(str(file), []).diagnostic((), "unreadable-file", f"cannot read: {exc.strerror or exc}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = yamlsource.split_lines(raw[: exc.start].decode("utf-8-sig", errors="replace"))
        source = CaseSource(str(file), before)
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        at = Position(len(before), len(before[-1]) + 1)
        raise PolicyError(
            [source.diagnostic((), "invalid-encoding", message, "a tests.yaml is UTF-8 text", at=at)]
        ) from None
    stream = yamlsource.read_stream(text)
    source = CaseSource(str(file), stream.lines)
    problems = [source.diagnostic((), p.code, p.message, p.hint, at=p.position) for p in stream.problems]
    problems += [
        source.diagnostic((), p.code, p.message, p.hint, at=p.position) for d in stream.documents for p in d.problems
    ]
    documents = [d for d in stream.documents if d.data is not None]
    if problems or len(documents) != 1:
        if not problems:
            where = documents[1].line if documents else 1
            problems.append(
                source.diagnostic(
                    (),
                    "invalid-test-file",
                    f"a {TEST_FILE} holds one document with 'policy' and 'cases'",
                    at=Position(where, 1),
                )
            )
        raise PolicyError(problems)
    source = CaseSource(str(file), stream.lines, documents[0].node)
    try:
        return PolicyTestFile.model_validate(documents[0].data), source
    except ValidationError as exc:
        raise PolicyError([_test_file_error(source, documents[0].data, e) for e in exc.errors()]) from None


_PARTS: dict[tuple[str, ...], tuple[str, type[BaseModel]]] = {
    (): ("the test file", PolicyTestFile),
    ("cases",): ("a case", PolicyTestCase),
    ("cases", "results"): ("an expected result", ExpectedResult),
    ("ledger",): ("ledger", LedgerSeed),
}


def _part(loc: Sequence[str | int]) -> tuple[str, dict[str, Any]]:
    """What the mapping at ``loc`` is called in messages, and its fields."""
    what, model = _PARTS.get(tuple(p for p in loc if isinstance(p, str)), ("it", None))
    return what, dict(model.model_fields) if model is not None else {}


def _in_data(data: Any, loc: Sequence[Any]) -> tuple[str | int, ...]:
    """The longest prefix of pydantic's ``loc`` found in the data (drops union tags: 'str', 'bool')."""
    found: list[str | int] = []
    for part in loc:
        fits = isinstance(data, dict) and part in data
        fits = fits or (isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if not fits:
            break
        found.append(part)
        data = data[part]
    return tuple(found)


def _test_file_error(source: CaseSource, data: Any, err: Any) -> Diagnostic:
    loc, kind, value = _in_data(data, err["loc"]), err["type"], err.get("input")
    label = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "document")
    if kind == "extra_forbidden":
        what, fields = _part(loc[:-1])
        hint = did_you_mean(label, fields, what="fields")
        return source.diagnostic(loc, "unknown-field", f"{label!r} is not a field of {what}", hint, value=False)
    if kind == "missing":
        what, fields = _part(loc)
        hint = f"required fields: {', '.join(n for n, f in fields.items() if f.is_required())}"
        return source.diagnostic(loc, "missing-field", f"missing required field {label!r} in {what}", hint, value=False)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        hint = did_you_mean(str(value), choices, what="valid values")
        return source.diagnostic(loc, "invalid-value", f"{value!r} is not a valid value for {label!r}", hint)
    if kind == "invalid_regex":
        message = f"{label!r} is not a valid regular expression: {err['msg']}"
        return source.diagnostic(loc, "invalid-regex", message, "escape what is special in a regex: \\( \\[ \\$ \\.")
    return source.diagnostic(loc, "invalid-value", f"{label!r}: {err['msg']}")


__all__ = [
    "CaseSource",
    "ExpectedResult",
    "LedgerSeed",
    "PolicyTestCase",
    "PolicyTestFile",
    "read_case_file",
]
