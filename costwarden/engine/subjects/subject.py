"""``Subject``, any one of the three records; ``SUBJECT_CLASSES``, subject type name → record
class; and ``replace``, which copies a subject with fields changed."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeAlias

from costwarden.engine.subjects.llm_call import LlmCall
from costwarden.engine.subjects.resource import Resource
from costwarden.engine.subjects.serving_config import ServingConfig

Subject: TypeAlias = Resource | LlmCall | ServingConfig

SUBJECT_CLASSES: dict[str, type[Resource] | type[LlmCall] | type[ServingConfig]] = {
    "resource": Resource,
    "llm_call": LlmCall,
    "serving_config": ServingConfig,
}


def replace(subject: Subject, **changes: Any) -> Subject:
    """A copy of ``subject`` with fields changed (``dataclasses.replace`` that keeps the type)."""
    return dataclasses.replace(subject, **changes)
