"""The three subject types the engine judges: ``resource``, ``llm_call`` and ``serving_config``.

Adapters turn raw input (a Kubernetes object, a Terraform plan, an SDK request, vLLM arguments)
into one of these frozen records, so the engine never has to know where a subject came from.
They are cheap to build, hold plain values, and can be built from plain dicts (JSON)::

    >>> s = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job",
    ...                        "name": "train", "tags": {"team": "ml"}})
    >>> s.kind, s.tags["team"]
    ('Job', 'ml')

``to_dict()`` is the inverse and is also the shape CEL expressions see as ``subject``.
"""

from __future__ import annotations

# parts: field types and the values subjects hold; base: what the records share; resource, llm_call,
# serving_config: one record each; subject: the union; from_dict: building them from plain data.
# Names with a leading underscore are shared between these modules only.
from costwarden.engine.subjects.from_dict import _resource_checked as _resource_checked  # the fast path's tests
from costwarden.engine.subjects.from_dict import subject_from_dict
from costwarden.engine.subjects.llm_call import LlmCall
from costwarden.engine.subjects.parts import (
    CAPACITIES,
    SUBJECT_TYPES,
    WORKLOAD_CLASSES,
    Capacity,
    LlmRequest,
    Phase,
    SourceLocation,
    SubjectType,
    TokenUsage,
    UnknownTags,
    Workload,
    WorkloadClass,
)
from costwarden.engine.subjects.resource import Resource
from costwarden.engine.subjects.serving_config import ServingConfig
from costwarden.engine.subjects.subject import SUBJECT_CLASSES, Subject, replace

__all__ = [
    "CAPACITIES",
    "SUBJECT_CLASSES",
    "SUBJECT_TYPES",
    "WORKLOAD_CLASSES",
    "Capacity",
    "LlmCall",
    "LlmRequest",
    "Phase",
    "Resource",
    "ServingConfig",
    "SourceLocation",
    "Subject",
    "SubjectType",
    "TokenUsage",
    "UnknownTags",
    "Workload",
    "WorkloadClass",
    "replace",
    "subject_from_dict",
]
