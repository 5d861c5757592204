"""The YAML 1.2 core schema, which policies are read by: how an untagged scalar is resolved, and
the loader that resolves that way.

PyYAML resolves scalars by YAML 1.1 (``on`` → True, ``0777`` → octal, ``1:30`` → 90). Here only
``true``/``false`` (and their ``True``/``TRUE`` spellings) are booleans, ``null``/``~``/empty is
None, ints and floats are the 1.2 forms, everything else — ``yes``, ``on``, dates — is a string
(pydantic parses dates itself). Quoted scalars are always strings; ``<<`` is a merge key.

It is separate from :mod:`costwarden.engine.yamlsource` (reading a text) and
:mod:`costwarden.engine.yamlbuild` (building values) because it is the one place that says what a
plain scalar means: both the loader's tagging and the builder's conversion follow it.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (TAG + t for t in ("str", "int", "float", "bool", "null"))
MERGE, SEQ, MAP = TAG + "merge", TAG + "seq", TAG + "map"
KEPT_AS_STRING = {TAG + "timestamp", TAG + "value"}

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# What YAML 1.1 tools (kubectl, PyYAML's safe_load) read as booleans but 1.2 keeps as strings.
YAML11_BOOLEANS = frozenset(w for b in ("yes", "no", "on", "off", "y", "n") for w in (b, b.capitalize(), b.upper()))


def core_tag(text: str) -> str:
    """The YAML 1.2 core-schema tag of a plain scalar."""
    if text in _NULLS:
        return NULL
    if text in BOOLS:
        return BOOL
    if _INT.fullmatch(text):
        return INT
    if _FLOAT.fullmatch(text):
        return FLOAT
    if text == "<<":
        return MERGE
    return STR


def core_float(text: str) -> float:
    """A 1.2 float scalar (``.inf``, ``-.Inf``, ``.NaN`` included) as a Python float."""
    lowered = text.lower()
    return float(lowered.replace(".inf", "inf").replace(".nan", "nan")) if "." in lowered else float(text)


class CoreLoader(_BaseLoader):
    """The safe loader with YAML 1.2 core-schema resolution of untagged scalars."""

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return core_tag(value) if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP


__all__ = [
    "BOOL",
    "BOOLS",
    "FLOAT",
    "INT",
    "KEPT_AS_STRING",
    "MAP",
    "MERGE",
    "NULL",
    "SEQ",
    "STR",
    "TAG",
    "YAML11_BOOLEANS",
    "CoreLoader",
    "core_float",
    "core_tag",
]
