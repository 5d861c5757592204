"""CEL conditions and rules, compiled once at load time and evaluated many times.

The library is ``common-expression-language`` (Rust, PyPI ``cel``), chosen by measurement over
``cel-python`` (see ``benchmarks/cel_choice.py`` and ``benchmarks/RESULTS.md``). Expressions see
one variable, ``subject`` — the subject's ``to_dict()`` shape. Evaluation is bounded by
construction: the expression length and nesting are capped at load time, CEL has no unbounded
loops (comprehensions iterate only over the subject's finite lists and maps), and unknown
variables or functions are rejected at load time rather than failing on the first subject.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 2000
MAX_NESTING = 32
VARIABLES = frozenset({"subject"})
# Named functions the binding implements (checked against common-expression-language 0.10);
# anything else is rejected at load time instead of failing on every subject.
FUNCTIONS = frozenset({
    "size", "has", "matches", "contains", "startsWith", "endsWith", "exists", "exists_one", "all",
    "map", "filter", "int", "uint", "double", "string", "bytes", "type", "dyn", "duration",
    "timestamp", "getFullYear", "getMonth", "getDayOfMonth", "getHours", "getMinutes", "getDayOfWeek",
})  # fmt: skip
EMPTY_HINT = "write an expression over 'subject', e.g. \"subject.workload.gpus > 0\""
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class CelCompileError(Exception):
    """A CEL expression that cannot be compiled; ``offset`` is the 0-based character offset
    (the expression's length: at its end), ``hint`` what would fix it where that is known."""

    def __init__(self, message: str, offset: int = 0, hint: str | None = None) -> None:
        self.message = message
        self.offset = offset
        self.hint = hint
        super().__init__(message)


class CelEvalError(Exception):
    """A CEL expression failed on a subject (missing field, type mismatch, division by zero)."""


@dataclass(frozen=True, slots=True)
class CelProgram:
    """A compiled CEL expression."""

    source: str
    program: Any
    fields: tuple[str, ...] | None = None
    """The subject's top-level fields the expression reads (None: it may read any)."""
    tag_keys: frozenset[str] | None = frozenset()
    """The tag keys it reads by name (None: it reads the tags as a whole, e.g. ``'k' in subject.tags``)."""
    reads_unknown_tags: bool = False
    """Whether it reads ``subject.unknown_tags`` (it then handles values a plan cannot show itself)."""
    paths: tuple[tuple[str, ...], ...] | None = ()
    """The subject paths it reads, each as far as it is spelled out (``subject.workload.replicas``
    → ``("workload", "replicas")``; ``subject.tags.exists(...)`` → ``("tags",)``); None: it may read
    any (same condition as ``fields``)."""

    def read_values(self, subject_dict: dict[str, Any]) -> dict[str, Any]:
        """What the expression reads of ``subject_dict``, keyed by the path as CEL spells it
        (``subject.workload.replicas``; ``subject`` for the whole subject when ``paths`` is None);
        an absent field reads as None. Equal for two subjects, the expression judges them alike:
        this is what a failing expression measured."""
        if self.paths is None:
            return {"subject": dict(subject_dict)}
        out: dict[str, Any] = {}
        for path in self.paths:
            value: Any = subject_dict
            for name in path:
                value = value.get(name) if isinstance(value, dict) else None
            out["subject" + "".join(_spelled(name) for name in path)] = value
        return out

    def evaluate(self, subject_dict: dict[str, Any]) -> Any:
        if self.fields is not None:
            # Converting the subject into CEL values is most of the cost: pass only what is read.
            subject_dict = {k: subject_dict[k] for k in self.fields if k in subject_dict}
        try:
            return self.program.execute({"subject": subject_dict})
        except Exception as exc:  # the binding raises built-in types for every CEL runtime error
            raise CelEvalError(_first_line(str(exc)) or exc.__class__.__name__) from exc

    def evaluate_bool(self, subject_dict: dict[str, Any]) -> bool:
        value = self.evaluate(subject_dict)
        if not isinstance(value, bool):
            raise CelEvalError(f"expression returned {type(value).__name__}, expected a boolean")
        return value


@functools.cache
def _binding() -> Any:
    """The compiled ``cel`` extension, loaded without the package's ``__init__``.

    ``import cel`` also imports its interactive CLI (prompt_toolkit, ~150 ms); policies that use
    no CEL should not pay for that, and those that do should not pay for the CLI.
    """
    spec = importlib.util.find_spec("cel")
    if spec is not None and spec.origin:
        folder = os.path.dirname(spec.origin)
        for name in sorted(os.listdir(folder)):
            if name.startswith("cel.") and name.endswith((".so", ".pyd")):
                path = os.path.join(folder, name)
                loader = importlib.machinery.ExtensionFileLoader("cel.cel", path)
                ext_spec = importlib.util.spec_from_file_location("cel.cel", path, loader=loader)
                if ext_spec is not None:
                    module = importlib.util.module_from_spec(ext_spec)
                    loader.exec_module(module)
                    return module
    import cel  # fall back to the package as published

    return cel


def compile_cel(source: str) -> CelProgram:
    """Compile ``source`` or raise :class:`CelCompileError` with the offending offset."""
    if not source.strip():  # CEL's own message ("mismatched input '<EOF>' expecting {...}") says nothing useful
        raise CelCompileError("the expression is empty", len(source), EMPTY_HINT)
    if len(source) > MAX_LENGTH:
        raise CelCompileError(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    depth = _nesting(source)
    if depth > MAX_NESTING:
        raise CelCompileError(f"expression nests {depth} levels deep; the limit is {MAX_NESTING}")
    try:
        program = _binding().compile(source)
    except Exception as exc:  # ValueError for syntax errors; anything else is equally a bad policy
        raise _syntax_error(source, str(exc)) from exc
    bound = set(_BOUND.findall(source))  # comprehension variables are not free variables
    unknown_vars = sorted(set(program.variables()) - VARIABLES - bound)
    if unknown_vars:
        name = unknown_vars[0]
        offset = _find(source, rf"(?<![\w.]){re.escape(name)}\b")
        raise CelCompileError(f"unknown variable '{name}': expressions see only 'subject'", offset)
    # Operators appear as '_+_', '!_', '-_', '@in': only named functions are checked.
    unknown_fns = sorted(f for f in program.functions() if f[:1].isalpha() and f not in FUNCTIONS)
    if unknown_fns:
        name = unknown_fns[0]
        raise CelCompileError(f"unknown function '{name}'", _find(source, rf"\b{re.escape(name)}\s*\("))
    return CelProgram(source, program, _fields(source), _tag_keys(source), "unknown_tags" in source, _paths(source))


_TAG_READ = re.compile(
    r"""\bsubject\s*\.\s*tags\b"""  # then, optionally, .key (not a method call) or ["key"]
    r"""(?:\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\()|\s*\[\s*["']([^"'\\]*)["']\s*\])?"""
)


def _tag_keys(source: str) -> frozenset[str] | None:
    """The tag keys ``source`` reads by name; None when it also reads the tags another way."""
    keys = set()
    for name, quoted in _TAG_READ.findall(source):
        key = name or quoted
        if not key:
            return None
        keys.add(key)
    return frozenset(keys)


# subject.<field> (not a method called on the subject: subject.size() reads all of it)
_FIELD = re.compile(
    r"\bsubject\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()|\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\])"
)
_SUBJECT = re.compile(r"\bsubject\b")


def _fields(source: str) -> tuple[str, ...] | None:
    """Top-level subject fields an expression reads, when every use of ``subject`` selects one."""
    found = {a or b for a, b in _FIELD.findall(source)}
    return tuple(sorted(found)) if len(_SUBJECT.findall(source)) == len(_FIELD.findall(source)) else None


_STEP = r"""\s*(?:\.\s*[A-Za-z_]\w*\b(?!\s*\()|\[\s*(?:"[^"\\\n]*"|'[^'\\\n]*')\s*\])"""
_PATH = re.compile(rf"\bsubject((?:{_STEP})+)")
_STEP_NAME = re.compile(r"""[A-Za-z_]\w*|"([^"]*)"|'([^']*)'""")


def _paths(source: str) -> tuple[tuple[str, ...], ...] | None:
    """The subject paths ``source`` reads: each use of ``subject`` with the field selections and
    literal keys that follow it (not a method call such as ``.exists(``, nor a computed index);
    what the expression reads through that use lies within that path's value. None when a use
    of ``subject`` selects no field (``size(subject)``)."""
    uses = [match.group(1) for match in _PATH.finditer(source)]
    if len(uses) != len(_SUBJECT.findall(source)):
        return None
    found = {tuple(m.group(1) if m.group(1) is not None else m.group(2) if m.group(2) is not None else m.group()
                   for m in _STEP_NAME.finditer(use)) for use in uses}
    return tuple(sorted(found))


def _spelled(name: str) -> str:
    """One step of a path as CEL would write it: ``.name``, or ``["app.kubernetes.io/name"]``."""
    return f".{name}" if re.fullmatch(r"[A-Za-z_]\w*", name) else f"[{json.dumps(name)}]"


def _syntax_error(source: str, text: str) -> CelCompileError:
    match = _POSITION.search(text)
    if not match:
        return CelCompileError(_first_line(text) or "invalid CEL expression")
    line, column, message = int(match.group(1)), int(match.group(2)), match.group(3)
    lines = source.split("\n")
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1  # columns are 1-based
    return CelCompileError(message.strip(), min(offset, len(source)))


_STRING = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
STRING_LITERAL = _STRING
"""A CEL string literal (single or double quoted)."""


def _find(source: str, pattern: str) -> int:
    """The offset of an identifier's use (not a longer name containing it, nor inside a string
    literal), else 0."""
    masked = _STRING.sub(lambda m: " " * len(m.group()), source)
    found = re.search(pattern, masked)
    return found.start() if found else 0


def _nesting(source: str) -> int:
    depth = best = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return best


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


__all__ = ["EMPTY_HINT", "CelCompileError", "CelEvalError", "CelProgram", "compile_cel"]
