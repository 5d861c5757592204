"""What the vLLM parser found wrong or surprising, with the file and line it came from.

Codes (stable, used in JSON output and tests):

* ``unknown-argument`` — vLLM refuses to start (``unrecognized arguments``); carries a did-you-mean.
* ``removed-argument`` — unknown to the target version but known to another shipped one.
* ``deprecated-argument`` — accepted, but deprecated in the target version.
* ``invalid-value`` / ``invalid-choice`` / ``missing-value`` / ``ambiguous-option`` — argparse errors.
* ``ignored-false`` — ``key: false`` in a ``--config`` file that this version silently drops.
* ``config-not-loaded`` — ``--config=FILE`` (vLLM only reads ``--config FILE``) or a file we cannot read.
* ``duplicate-argument`` — the same argument set twice; the last one wins.
* ``invalid-command`` — vLLM rejects the command line before parsing (``--model`` with ``serve``...).
* ``unresolved-variable`` — ``$(VAR)`` / ``$VAR`` that could not be expanded.
* ``version`` — which argument table was used and why.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding. ``argument`` is vLLM's dest name when the finding is about one argument."""

    code: str
    message: str
    severity: Severity = "error"
    file: str | None = None
    line: int | None = None
    hint: str | None = None
    argument: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "hint": self.hint,
            "argument": self.argument,
        }

    def render(self) -> str:
        """``file:line: severity[code]: message (hint)``, as compilers print it."""
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        head = f"{where}: " if where else ""
        tail = f"\n   = hint: {self.hint}" if self.hint else ""
        return f"{head}{self.severity}[{self.code}]: {self.message}{tail}"


def did_you_mean(word: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """The closest option strings to ``word`` (difflib ratio ≥ 0.6), best first."""
    return difflib.get_close_matches(word, list(candidates), n=limit, cutoff=0.6)


__all__ = ["Diagnostic", "Severity", "did_you_mean"]
