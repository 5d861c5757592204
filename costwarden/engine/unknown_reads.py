"""What a CEL expression would read of a resource that a Terraform plan cannot show yet.

A plan knows some tag values only after the apply, and may not show keys provider
``default_tags`` add (``Resource.unknown_tags``). A CEL expression that reads such a tag would
judge a placeholder, so the engine does not evaluate it: a ``match``/``exclude`` ``when`` is not
satisfied (``matching.py``) and an ``expr`` rule is an advisory failure ("cannot be judged at plan
time"). An expression that reads ``subject.unknown_tags`` handles them itself and is evaluated.
"""

from __future__ import annotations

from costwarden.engine.cel import CelProgram
from costwarden.engine.subjects import Resource, Subject


def unknown_tag_read(program: CelProgram, subject: Subject) -> str | None:
    """What ``program`` would read of ``subject``'s tags that a plan cannot show yet ("tag 'env'",
    "the tags"), or None when everything it reads is known."""
    if not isinstance(subject, Resource) or not subject.unknown_tags or program.reads_unknown_tags:
        return None
    unknown, keys = subject.unknown_tags, program.tag_keys
    if keys is None:
        return "the tags"
    for key in sorted(keys):
        if key in unknown.values or (key not in subject.tags and unknown.may_hold(key)):
            return f"tag '{key}'"
    return None


__all__ = ["unknown_tag_read"]
