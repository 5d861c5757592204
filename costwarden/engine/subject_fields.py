"""The fields CEL sees on each subject type, so a misspelt one is caught when a policy loads.

Subjects have a small fixed shape (DESIGN.md, "Subjects"): ``subject.workloads.gpus`` can never
be anything but an error. Without this check it loads and then fails on every subject it meets,
and an enforced policy fails closed — it denies everything. Fields that hold maps of the
subject's own keys (``tags``, ``annotations``, ``args``) are not checked below their top level.

    >>> misspelt_field("subject.workloads.gpus > 0", "resource")
    ('workloads', 8, 'workload')
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from typing import Any

from costwarden.engine.cel import STRING_LITERAL
from costwarden.engine.subjects import subject_from_dict

# fields whose nested keys are fixed (records), as CEL sees them
_RECORDS = ("workload", "request", "usage", "source", "unknown_tags")
_SAMPLES: Mapping[str, dict[str, Any]] = {
    "resource": {"type": "resource", "provider": "p", "kind": "k"},
    "llm_call": {"type": "llm_call", "provider": "p", "model": "m", "phase": "post", "usage": {"input_tokens": 1}},
    "serving_config": {"type": "serving_config", "model": "m"},
}
_READ = re.compile(r"\bsubject\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\()(?:\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\())?")


@functools.cache
def fields_of(subject_type: str) -> Mapping[str, frozenset[str] | None]:
    """Each top-level field of ``subject_type`` → its nested fields (None: not a record)."""
    seen = subject_from_dict(_SAMPLES[subject_type]).as_cel
    return {k: frozenset(v) if k in _RECORDS and isinstance(v, dict) else None for k, v in seen.items()}


def misspelt_field(source: str, subject_type: str) -> tuple[str, int, str | None] | None:
    """The first field ``source`` reads that ``subject_type`` does not have: its name, its offset
    in ``source`` and the closest real name (or None). Reads by ``subject["x"]`` are not checked."""
    fields = fields_of(subject_type)
    masked = STRING_LITERAL.sub(lambda m: " " * len(m.group()), source)  # no reads inside string literals
    for found in _READ.finditer(masked):
        top, nested = found.group(1), found.group(2)
        if top not in fields:
            return top, found.start(1), _closest(top, fields)
        inner = fields[top]
        if nested is not None and inner is not None and nested not in inner:
            return f"{top}.{nested}", found.start(2), _closest(nested, inner)
    return None


def _closest(name: str, names: Any) -> str | None:
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else None


__all__ = ["fields_of", "misspelt_field"]
