"""What a ``scale`` subresource request targets, and which policies its replica count can affect.

``kubectl scale deploy/x --replicas=50`` and the HPA write ``deployments/scale``: the
AdmissionRequest carries an ``autoscaling/v1`` ``Scale`` (``spec.replicas``), not the Deployment,
and ``request.resource`` names the parent (``apps/v1 deployments``). Judging it needs the parent
read from the API server — a :data:`ParentReader`, supplied by the webhook
(:class:`costwarden.webhook.kube_api.KubeApi`), so the enforcers never open a connection.

The parent kinds with a ``scale`` subresource whose ``specReplicasPath`` is ``spec.replicas``
are listed in :data:`SCALABLE`; the install manifests register ``<resource>/scale`` for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

if TYPE_CHECKING:
    from costwarden.engine.compile import CompiledPolicy

# (apiGroup, resource) → kind, for kinds whose scale subresource sets spec.replicas.
SCALABLE: dict[tuple[str, str], str] = {
    ("apps", "deployments"): "Deployment",
    ("apps", "statefulsets"): "StatefulSet",
    ("apps", "replicasets"): "ReplicaSet",
    ("", "replicationcontrollers"): "ReplicationController",
    ("leaderworkerset.x-k8s.io", "leaderworkersets"): "LeaderWorkerSet",
}
SCALABLE_KINDS = frozenset(SCALABLE.values())
# Rule kinds whose outcome depends on the replica count (a workload's hourly cost is for all replicas).
REPLICA_RULE_KINDS = frozenset({"maxHourlyCost", "budget"})
# CEL that names these subject fields can depend on the replica count too.
REPLICA_FIELDS = ("replicas", "hourly_usd")


class ParentRef(NamedTuple):
    """The object a ``scale`` request scales, as the API server's REST path names it."""

    group: str
    version: str
    resource: str
    namespace: str | None
    name: str

    @property
    def path(self) -> str:
        """The GET path, e.g. ``/apis/apps/v1/namespaces/ml/deployments/srv``. Each part is
        percent-encoded, so a ``/`` or ``?`` cannot make the webhook GET another path with its
        token (the request's names are also checked as they are parsed: anyone who reaches the
        Service can post an AdmissionReview)."""
        group, version, resource, name = (quote(part, safe="") for part in
                                          (self.group, self.version, self.resource, self.name))
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        where = f"/namespaces/{quote(self.namespace, safe='')}" if self.namespace else ""
        return f"{prefix}{where}/{resource}/{name}"

    def describe(self) -> str:
        return f"{self.resource} {self.namespace + '/' if self.namespace else ''}{self.name}"


ParentReader = Callable[[ParentRef], Mapping[str, Any]]
"""Reads a parent object; raises (any exception, with a message that says why) when it cannot."""


def is_scale_request(request: Any) -> bool:
    """Whether an AdmissionRequest writes (UPDATE: ``kubectl scale``'s PATCH and the HPA's PUT
    both arrive as one) the ``scale`` subresource of a :data:`SCALABLE` kind with a ``Scale``
    object (only those can be judged on their parent)."""
    group, _, resource = request.resource
    return bool(request.sub_resource == "scale" and request.kind == "Scale" and request.operation == "UPDATE"
                and (group, resource) in SCALABLE)


def parent_kind(request: Any) -> str | None:
    """The kind a scale request scales (``Deployment``...), None for any other request."""
    return SCALABLE[(request.resource[0], request.resource[2])] if is_scale_request(request) else None


def _cel_texts(value: Any) -> Iterator[str]:
    """Every ``when`` and ``cel`` string in a dumped policy document."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("when", "cel") and isinstance(item, str):
                yield item
            else:
                yield from _cel_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _cel_texts(item)


def replica_sensitive(policy: CompiledPolicy) -> bool:
    """Whether a policy's verdict on a workload can change with its replica count: a cost rule,
    or CEL that reads the replicas or the hourly cost. Policies off at admission never are."""
    if policy.effects["admission"] == "off" or policy.subject_type not in ("resource", "serving_config"):
        return False
    if any(rule.kind in REPLICA_RULE_KINDS for rule in policy.rules):
        return True
    texts = _cel_texts(policy.document.model_dump(mode="json"))
    return any(name in text for text in texts for name in REPLICA_FIELDS)


def affected_kinds(policy: CompiledPolicy) -> set[str]:
    """The :data:`SCALABLE_KINDS` whose scaling ``policy`` can judge differently."""
    if not replica_sensitive(policy):
        return set()
    if policy.subject_type == "serving_config":  # read from the pods of every vLLM host kind
        return set(SCALABLE_KINDS) if policy.match.matches_kind("kubernetes", "vllm") else set()
    return {kind for kind in SCALABLE_KINDS if policy.match.matches_kind("kubernetes", kind)}


def with_replicas(obj: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """A copy of ``obj`` whose ``spec.replicas`` is ``replicas`` (the rest shared, not copied)."""
    spec = obj.get("spec")
    return {**obj, "spec": {**(spec if isinstance(spec, Mapping) else {}), "replicas": replicas}}


def scale_replicas(scale: Mapping[str, Any] | None) -> int | None:
    """``spec.replicas`` of an ``autoscaling/v1`` Scale; 0 when left out (``omitempty``), None
    when there is no Scale or the value is not a whole number."""
    if scale is None:
        return None
    spec = scale.get("spec")
    if not isinstance(spec, Mapping):
        return 0 if spec is None else None
    value = spec.get("replicas", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


__all__ = ["REPLICA_RULE_KINDS", "SCALABLE", "SCALABLE_KINDS", "ParentReader", "ParentRef", "affected_kinds",
           "is_scale_request", "parent_kind", "replica_sensitive", "scale_replicas", "with_replicas"]
