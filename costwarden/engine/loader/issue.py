"""A problem found in one document, and how paths and values are named in its message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costwarden.engine.yamlsource import Path

_DATE_HINT = "write a date as 2026-12-31, or a time as 2026-12-31T18:00:00Z"


@dataclass(frozen=True, slots=True)
class _Issue:
    loc: Path
    code: str
    message: str
    hint: str | None = None
    at_value: bool = False


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
