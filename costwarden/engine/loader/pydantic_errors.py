"""pydantic's validation errors for one document → issues with stable codes, at the key or value
they are about: union member tags stripped from locations, errors the document's own checks
already reported left out, one issue per path and code."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel

from costwarden.engine.diagnostics import did_you_mean
from costwarden.engine.loader.issue import _DATE_HINT, _describe, _Issue, _label, _yaml_text
from costwarden.engine.loader.schema_paths import _get, _members, _types_at
from costwarden.engine.rules import RULE_KINDS
from costwarden.engine.schema import DOCUMENT_MODELS
from costwarden.engine.yamlsource import Path

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


class _PydanticErrors:
    """The issues for one document's pydantic errors (``map_errors`` fills ``issues``); paths in
    ``muted_at`` and under ``muted_under`` were reported by the document's own checks."""

    def __init__(self, data: Any, kind: str | None, muted_at: set[Path], muted_under: list[Path]) -> None:
        self.data = data
        self.kind = kind
        self.muted_at = muted_at
        self.muted_under = muted_under
        self.issues: list[_Issue] = []

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
            pattern = str(ctx.get("pattern"))
            words = [w for w in re.split(r"[()^$|]", pattern) if re.fullmatch(r"[\w.-]+", w)]
            close = difflib.get_close_matches(str(value), words, n=1)  # window: dya -> day
            return _Issue(
                loc,
                "invalid-value",
                f"{value!r} is not a valid value for {label!r}",
                (f"did you mean '{close[0]}'? " if close else "") + f"it must match the pattern {pattern}",
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
