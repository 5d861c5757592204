"""Judge a ``scale`` subresource write on its parent workload at the new replica count.

The parent is read from the API server (a :data:`~costwarden.enforcers.scale_target.ParentReader`),
its ``spec.replicas`` set to the Scale's, and the result judged as an UPDATE from the old replica
count with the same rules as any other write — so scaling down, or not changing, a workload that
already violates a cost cap passes (see :mod:`costwarden.enforcers.existing_violations`), and
scaling it up is denied. Requests no loaded policy can judge differently by replicas are allowed
without a read. A parent that cannot be read is an evaluation error: each policy's ``onError``
decides (a denial for enforced policies), and the answer says why — never a silent allow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from costwarden.enforcers.admission import AdmissionRequest, AdmissionResult, failure_result, judge
from costwarden.enforcers.cluster_reads import NO_API, ConfigMapReader
from costwarden.enforcers.scale_target import (
    SCALABLE,
    ParentReader,
    ParentRef,
    affected_kinds,
    scale_replicas,
    with_replicas,
)
from costwarden.engine.evaluate import PolicySet
from costwarden.errors import describe


def judge_scale(policies: PolicySet, request: AdmissionRequest, *, read_parent: ParentReader | None,
                allow_existing_violations: bool = True, read_config_map: ConfigMapReader | None = None
                ) -> AdmissionResult:
    """Judge one ``<resource>/scale`` request (``/validate``: ``/mutate`` cannot patch the parent);
    a vLLM ``--config`` file of the parent is read with ``read_config_map``."""
    group, version, resource = request.resource
    kind = SCALABLE[(group, resource)]
    parent_request = dataclasses.replace(request, kind=kind, sub_resource="", object=None, old_object=None)
    if not any(kind in affected_kinds(policy) for policy in policies):
        return AdmissionResult(request, False, skipped=f"no policy judges {kind} replicas")
    replicas = scale_replicas(request.object)
    if replicas is None:
        return _failed(policies, request, parent_request, "the Scale object has no valid spec.replicas")
    ref = ParentRef(group, version, resource, request.namespace, request.name)
    if read_parent is None:
        return _failed(policies, request, parent_request, f"cannot read {ref.describe()}: {NO_API}")
    try:
        parent = read_parent(ref)
    except Exception as exc:
        return _failed(policies, request, parent_request, f"cannot read {ref.describe()}: {describe(exc)}")
    if not isinstance(parent, Mapping) or parent.get("kind") != kind:
        return _failed(policies, request, parent_request, f"the API server answered {ref.path} with no {kind}")
    old_replicas = scale_replicas(request.old_object)
    old = parent if old_replicas is None else with_replicas(parent, old_replicas)
    update = dataclasses.replace(parent_request, operation="UPDATE", object=with_replicas(parent, replicas),
                                 old_object=old)
    result = judge(policies, update, mutate=False, allow_existing_violations=allow_existing_violations,
                   read_config_map=read_config_map)
    return dataclasses.replace(result, request=request)


def _failed(policies: PolicySet, request: AdmissionRequest, parent_request: AdmissionRequest,
            reason: str) -> AdmissionResult:
    """``failure_result`` for the parent's kind; an allowed one (onError: allow) still warns."""
    result = failure_result(policies, parent_request, mutate=False, reason=f"scale not judged: {reason}")
    notes: tuple[str, ...] = () if not result.allowed else (f"scale not judged: {reason} (onError: allow)",)
    return dataclasses.replace(result, request=request, notes=notes)


__all__ = ["NO_API", "judge_scale"]
