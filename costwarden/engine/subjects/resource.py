"""The ``resource`` subject: a cloud or cluster resource (see :class:`Resource`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from costwarden.engine.subjects.base import _fields_on_instances, _Subject
from costwarden.engine.subjects.parts import (
    _EMPTY,
    _NO_SOURCE,
    _NO_UNKNOWN_TAGS,
    _NO_WORKLOAD,
    Capacity,
    SourceLocation,
    UnknownTags,
    Workload,
    _frozen_map,
)


@_fields_on_instances
@dataclass(frozen=True, init=False)
class Resource(_Subject):
    """A cloud or cluster resource: a Kubernetes workload, an EC2 instance, a GKE node pool...

    ``kind`` is the provider's own kind name (``Job``, ``aws_instance``, ``ec2-instance``);
    ``namespace`` is the Kubernetes namespace, the AWS account or the GCP project.
    ``tags`` are its labels or cloud tags (what selectors match); ``annotations`` are a Kubernetes
    object's own ``metadata.annotations`` (non-identifying metadata such as approvals: values a
    label cannot hold, like an e-mail address), empty for other providers. ``unknown_tags`` says
    which tags are not known yet (a Terraform plan's values computed during the apply; see
    :class:`UnknownTags`): a key there is in ``tags``, but its value there is only a placeholder.
    ``tags_pointer`` and ``pod_spec_pointers`` are JSON pointers into ``raw`` that fixes patch.
    """

    type: ClassVar[str] = "resource"
    provider: str
    kind: str
    name: str = ""
    namespace: str | None = None
    region: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    capacity: Capacity = "unknown"
    workload: Workload = _NO_WORKLOAD
    hourly_usd: float | None = None
    source: SourceLocation = _NO_SOURCE
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    tags_pointer: str | None = None
    pod_spec_pointers: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    unknown_tags: UnknownTags = _NO_UNKNOWN_TAGS

    def __init__(
        self,
        provider: str,
        kind: str,
        name: str = "",
        namespace: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] = _EMPTY,
        capacity: Capacity = "unknown",
        workload: Workload = _NO_WORKLOAD,
        hourly_usd: float | None = None,
        source: SourceLocation = _NO_SOURCE,
        raw: Mapping[str, Any] | None = None,
        tags_pointer: str | None = None,
        pod_spec_pointers: tuple[str, ...] = (),
        annotations: Mapping[str, str] = _EMPTY,
        unknown_tags: UnknownTags = _NO_UNKNOWN_TAGS,
    ) -> None:
        # The frozen dataclass's generated __init__ sets each field through object.__setattr__;
        # filling the instance dict directly is several times faster, and subjects are built per
        # object judged. Same signature, same fields.
        d = self.__dict__
        d["provider"] = provider
        d["_plan_entry"] = None  # the evaluator's plan key and SubjectRef, once judged
        d["kind"] = kind
        d["name"] = name
        d["namespace"] = namespace
        d["region"] = region
        d["tags"] = _frozen_map(tags)
        d["capacity"] = capacity
        d["workload"] = workload
        d["hourly_usd"] = hourly_usd
        d["source"] = source
        d["raw"] = raw
        d["tags_pointer"] = tags_pointer
        d["pod_spec_pointers"] = pod_spec_pointers
        d["annotations"] = _frozen_map(annotations)
        d["unknown_tags"] = unknown_tags

    @cached_property
    def as_cel(self) -> dict[str, Any]:
        """The subject as plain data, built once; this is what CEL sees as ``subject``."""
        return self._build()

    def _build(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "region": self.region,
            "tags": dict(self.tags),
            "capacity": self.capacity,
            "workload": self.workload.to_dict(),
            "hourly_usd": self.hourly_usd,
            "source": self.source.to_dict(),
            "tags_pointer": self.tags_pointer,
            "pod_spec_pointers": list(self.pod_spec_pointers),
            "annotations": dict(self.annotations),
            "unknown_tags": self.unknown_tags.to_dict(),
        }
