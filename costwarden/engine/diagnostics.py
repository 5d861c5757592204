"""Positioned diagnostics for policy files, rendered like a compiler's::

policies/llm/user-daily-budget/user-daily-budget.yaml:14:7: error[unknown-field]: 'limtUsd' is not a field of 'budget'
   14 |       limtUsd: 25
      |       ^^^^^^^
   = hint: did you mean 'limitUsd'? fields: per, limitUsd, window, alertAt, onExceed
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column, with the span length the caret underlines."""

    line: int
    column: int
    length: int = 1


Level = Literal["error", "warning", "note"]
"""How serious a diagnostic is: an ``error`` stops a policy set from loading; a ``warning`` (an
expired exemption) and a ``note`` (an exemption that ends soon) are shown and never fail a run."""

LEVELS: tuple[Level, ...] = ("error", "warning", "note")
_COLOURS: dict[Level, str] = {"error": "1;31", "warning": "1;33", "note": "1;36"}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a policy file, or one thing its author should hear of (see :data:`Level`)."""

    file: str
    line: int
    column: int
    code: str
    message: str
    hint: str | None = None
    source_line: str | None = None
    length: int = 1
    level: Level = "error"

    def headline(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.level}[{self.code}]: {self.message}"

    def render(self, *, color: bool = False) -> str:
        """The headline, the source line with a caret under the span, and the hint."""
        lines = [self.headline()]
        if self.source_line is not None:
            gutter = str(self.line)
            pad = " " * len(gutter)
            text = self.source_line.rstrip("\n")
            lines.append(f"   {gutter} | {text}")
            lead = "".join(c if c == "\t" else " " for c in text[: max(self.column - 1, 0)])
            caret = lead + "^" * max(self.length, 1)
            lines.append(f"   {pad} | {caret}")
        if self.hint:
            lines.append(f"   = hint: {self.hint}")
        out = "\n".join(lines)
        if color:
            out = out.replace(f"{self.level}[", f"\x1b[{_COLOURS[self.level]}m{self.level}\x1b[0m[", 1)
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


def tally(diagnostics: Iterable[Diagnostic]) -> str:
    """How many of each level, most serious first: '2 errors, 1 warning, 1 note'."""
    found = [d.level for d in diagnostics]
    counts = [(found.count(level), level) for level in LEVELS]
    return ", ".join(f"{n} {level}{'s' if n != 1 else ''}" for n, level in counts if n) or "no problems"


def did_you_mean(word: str, choices: Iterable[str], *, what: str = "") -> str | None:
    """'did you mean 'keys'? fields: a, b, c' — or just the list when nothing is close."""
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    listing = f"{what + ': ' if what else 'valid: '}{', '.join(options)}" if options else ""
    if close:
        return f"did you mean '{close[0]}'?" + (f" {listing}" if listing else "")
    return listing or None


__all__ = ["LEVELS", "Diagnostic", "Level", "Position", "did_you_mean", "tally"]
