"""Install manifests for the webhook, generated from the policy set they will enforce.

``render_manifests`` returns plain dicts (``costwarden webhook manifests`` prints them as YAML):
Namespace, ServiceAccount, ConfigMap with the policy files, Deployment (3 replicas, spread over
nodes, hardened), PodDisruptionBudget, Service (443 → 8443), and the Validating and Mutating
WebhookConfigurations. Their ``rules`` list exactly the resources whose kinds the policies can
match (:data:`KIND_RESOURCES`), the webhook's own namespace and ``kube-system`` are excluded by
the immutable ``kubernetes.io/metadata.name`` label, and the validating ``failurePolicy`` is
``Fail`` when some policy denies at admission, else ``Ignore``. The mutating webhook is always
``Ignore``: a missed mutation is caught by the validating webhook, which fails closed.

When a policy's verdict can change with a workload's replica count (a cost cap, CEL on
``replicas``), the validating webhook also covers UPDATE of ``<resource>/scale`` for the scalable
kinds it matches (``kubectl scale``, the HPA), and a ClusterRole lets the webhook's
ServiceAccount ``get`` those resources, whose token is then mounted: the scale is judged on the
parent read from the API server. When a ``serving_config`` policy is judged at admission, a
second ClusterRole lets it ``get`` ConfigMaps (only ``get``, cluster-wide: the webhook judges every
namespace), to read the ``--config`` file a vLLM server mounts from one
(:mod:`costwarden.enforcers.cluster_reads`). Without such policies the webhook never calls the
API server and its token is not mounted.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costwarden.enforcers.admission import VLLM_HOST_KINDS
from costwarden.enforcers.cluster_reads import reads_config_maps
from costwarden.enforcers.scale_target import affected_kinds
from costwarden.engine.evaluate import PolicySet

NAME = "costwarden-webhook"
DEFAULT_IMAGE = "ghcr.io/costwarden/costwarden:0.1.0"
POLICY_MOUNT = "/etc/costwarden/policies"
TLS_MOUNT = "/etc/costwarden/tls"
TLS_SECRET = f"{NAME}-tls"
PORT = 8443
TIMEOUT_SECONDS = 5
CONFIGMAP_LIMIT_BYTES = 1_000_000

# kind → (apiGroup, version, resource). Rules for CRDs a cluster does not have are ignored by it.
KIND_RESOURCES: dict[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "RayJob": ("ray.io", "v1", "rayjobs"),
    "RayCluster": ("ray.io", "v1", "rayclusters"),
    "RayService": ("ray.io", "v1", "rayservices"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
    "LLMInferenceService": ("serving.kserve.io", "v1alpha1", "llminferenceservices"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "TFJob": ("kubeflow.org", "v1", "tfjobs"),
    "XGBoostJob": ("kubeflow.org", "v1", "xgboostjobs"),
    "PaddleJob": ("kubeflow.org", "v1", "paddlejobs"),
    "JAXJob": ("kubeflow.org", "v1", "jaxjobs"),
    "MPIJob": ("kubeflow.org", "v2beta1", "mpijobs"),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
}
KUBERNETES_SUBJECTS = ("resource", "serving_config")
CONFIG_MAP_READ: dict[str, Any] = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


@dataclass(frozen=True, slots=True)
class WebhookScope:
    """What the webhook configurations cover, worked out from a policy set."""

    kinds: tuple[str, ...]
    fail_closed: bool
    scale_kinds: tuple[str, ...] = ()
    """Kinds whose ``scale`` subresource a policy judges (by replicas): validated, with RBAC to read them."""
    reads_config_maps: bool = False
    """Whether a policy judges vLLM serving configs at admission: then the webhook may ``get``
    ConfigMaps, to read a ``--config`` file mounted from one."""

    @property
    def reads_api(self) -> bool:
        """Whether the webhook reads anything from the API server (and needs its token)."""
        return bool(self.scale_kinds) or self.reads_config_maps

    def rules(self) -> list[dict[str, Any]]:
        """One rule per (apiGroup, version), main resources only (never ``status``/``scale``)."""
        return _rules(self.kinds, "", ["CREATE", "UPDATE"])

    def validating_rules(self) -> list[dict[str, Any]]:
        """:meth:`rules`, plus UPDATE of ``<resource>/scale`` for :attr:`scale_kinds` (``/mutate``
        cannot patch a Scale's parent, so only the validating webhook gets these)."""
        return self.rules() + _rules(self.scale_kinds, "/scale", ["UPDATE"])

    def read_rules(self) -> list[dict[str, Any]]:
        """RBAC rules: ``get`` on the parents of the judged scale subresources."""
        grouped: dict[str, set[str]] = {}
        for kind in self.scale_kinds:
            group, _, resource = KIND_RESOURCES[kind]
            grouped.setdefault(group, set()).add(resource)
        return [{"apiGroups": [group], "resources": sorted(resources), "verbs": ["get"]}
                for group, resources in sorted(grouped.items())]

    def config_map_read_rules(self) -> list[dict[str, Any]]:
        """RBAC rules: ``get`` on ConfigMaps when vLLM ``--config`` files are read from them."""
        return [CONFIG_MAP_READ] if self.reads_config_maps else []


def _rules(kinds: tuple[str, ...], suffix: str, operations: list[str]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for kind in kinds:
        group, version, resource = KIND_RESOURCES[kind]
        grouped.setdefault((group, version), []).append(resource + suffix)
    return [
        {"apiGroups": [group], "apiVersions": [version], "resources": sorted(resources),
         "operations": list(operations), "scope": "Namespaced"}
        for (group, version), resources in sorted(grouped.items())
    ]


def webhook_scope(policies: PolicySet) -> WebhookScope:
    """The kinds some admission-enforced Kubernetes policy can match, whether any denies, and the
    scalable kinds whose replica count some policy can judge differently."""
    kinds: set[str] = set()
    scale_kinds: set[str] = set()
    fail_closed = reads = False
    for policy in policies:
        scale_kinds |= affected_kinds(policy) & KIND_RESOURCES.keys()
        reads = reads or reads_config_maps(policy)
        effect = policy.effects["admission"]
        if effect == "off" or policy.subject_type not in KUBERNETES_SUBJECTS:
            continue
        if policy.subject_type == "resource":
            found = {k for k in KIND_RESOURCES if policy.match.matches_kind("kubernetes", k)}
        else:  # serving configs are read from the pods of these kinds
            found = set(VLLM_HOST_KINDS & KIND_RESOURCES.keys()) if policy.match.matches_kind("kubernetes", "vllm") \
                else set()
        kinds |= found
        fail_closed = fail_closed or (effect == "deny" and bool(found))
    return WebhookScope(tuple(sorted(kinds)), fail_closed, tuple(sorted(scale_kinds & kinds)), reads)


def _labels(component: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "costwarden"}
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels("webhook")}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def policy_config_map(namespace: str, policies: PolicySet) -> dict[str, Any]:
    """A ConfigMap holding every file the policy set was loaded from, keyed by file name."""
    files = sorted(set(policies.files))
    names = [Path(f).name for f in files]
    common = os.path.commonpath([os.path.abspath(f) for f in files]) if len(files) > 1 else ""
    data: dict[str, str] = {}
    for file, name in zip(files, names, strict=True):
        key = name if names.count(name) == 1 else "--".join(Path(os.path.relpath(os.path.abspath(file), common)).parts)
        if key in data:
            raise ValueError(f"two policy files map to the ConfigMap key {key}; rename one of them")
        data[key] = Path(file).read_text(encoding="utf-8")
    if sum(len(v.encode()) for v in data.values()) > CONFIGMAP_LIMIT_BYTES:
        raise ValueError("the policy files pass the 1 MB ConfigMap limit; split them or mount them another way")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-policies", namespace), "data": data}


def _container(image: str) -> dict[str, Any]:
    probe = {"scheme": "HTTPS", "port": "https"}
    return {
        "name": "webhook",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["costwarden"],
        "args": ["webhook", "serve", "--policies", POLICY_MOUNT, "--tls-cert", f"{TLS_MOUNT}/tls.crt",
                 "--tls-key", f"{TLS_MOUNT}/tls.key", "--port", str(PORT)],
        "ports": [{"name": "https", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe}, "initialDelaySeconds": 10, "periodSeconds": 10,
                          "failureThreshold": 3},
        # No CPU limit: CFS throttling shows up as admission latency. Memory is bounded.
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "policies", "mountPath": POLICY_MOUNT, "readOnly": True},
                         {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(namespace: str, image: str, replicas: int = 3, *, reads_api: bool = False) -> dict[str, Any]:
    """The webhook's Deployment; ``reads_api`` mounts the service account token (to read the
    parents of scale requests and vLLM ``--config`` ConfigMaps), which is otherwise left out: the
    webhook then never calls the API."""
    selector = {"app.kubernetes.io/name": NAME}
    spread = {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": selector},
                                                 "topologyKey": "kubernetes.io/hostname"}}
    pod_spec = {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": reads_api,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [spread]}},
        "containers": [_container(image)],
        "volumes": [{"name": "policies", "configMap": {"name": f"{NAME}-policies"}},
                    {"name": "tls", "secret": {"secretName": TLS_SECRET}},
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, namespace),
        "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": {**selector, **_labels("webhook")}}, "spec": pod_spec}},
    }


def _webhook(name: str, path: str, namespace: str, scope: WebhookScope, ca_bundle_pem: bytes | None,
             *, fail_policy: str) -> dict[str, Any]:
    client: dict[str, Any] = {"service": {"name": NAME, "namespace": namespace, "path": path, "port": 443}}
    if ca_bundle_pem:
        client["caBundle"] = base64.b64encode(ca_bundle_pem).decode("ascii")
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client,
        "rules": scope.validating_rules() if path == "/validate" else scope.rules(),
        "failurePolicy": fail_policy,
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                    "values": sorted({"kube-system", namespace})}]},
    }


def webhook_configurations(namespace: str, scope: WebhookScope, ca_bundle_pem: bytes | None) -> list[dict[str, Any]]:
    annotations = {} if ca_bundle_pem else {"cert-manager.io/inject-ca-from": f"{namespace}/{NAME}"}
    validating = _webhook("validate.costwarden.dev", "/validate", namespace, scope, ca_bundle_pem,
                          fail_policy="Fail" if scope.fail_closed else "Ignore")
    mutating = {**_webhook("mutate.costwarden.dev", "/mutate", namespace, scope, ca_bundle_pem,
                           fail_policy="Ignore"), "reinvocationPolicy": "IfNeeded"}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": _meta(NAME, annotations=annotations), "webhooks": [mutating]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": _meta(NAME, annotations=annotations), "webhooks": [validating]},
    ]


def scale_reader_rbac(namespace: str, scope: WebhookScope) -> list[dict[str, Any]]:
    """A ClusterRole that may ``get`` the parents of judged scale requests, bound to the webhook's
    ServiceAccount; nothing when no policy judges replicas."""
    return _reader_rbac(namespace, f"{NAME}-scale-reader", scope.read_rules())


def config_map_reader_rbac(namespace: str, scope: WebhookScope) -> list[dict[str, Any]]:
    """A ClusterRole that may ``get`` ConfigMaps (never ``list`` or ``watch``: only those mounted as
    a vLLM ``--config`` are read), bound to the webhook's ServiceAccount; nothing when no
    ``serving_config`` policy is judged at admission."""
    return _reader_rbac(namespace, f"{NAME}-configmap-reader", scope.config_map_read_rules())


def _reader_rbac(namespace: str, name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rules:
        return []
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(name),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(name),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
    ]


def tls_secret(namespace: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": _meta(TLS_SECRET, namespace),
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}}


def cert_manager_objects(namespace: str) -> list[dict[str, Any]]:
    """cert-manager objects issuing the serving Secret (as the Helm chart does): a self-signed
    issuer, a CA certificate, a CA issuer, and the serving Certificate the configurations'
    ``inject-ca-from`` annotation names, renewed 30 days before it expires."""
    issuer_ref = {"name": f"{NAME}-ca", "kind": "Issuer"}
    return [
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": _meta(f"{NAME}-selfsigned", namespace),
         "spec": {"selfSigned": {}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": _meta(f"{NAME}-ca", namespace),
         "spec": {"isCA": True, "commonName": f"{NAME}-ca", "secretName": f"{NAME}-ca",
                  "privateKey": {"algorithm": "ECDSA", "size": 256},
                  "issuerRef": {"name": f"{NAME}-selfsigned", "kind": "Issuer"}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": _meta(f"{NAME}-ca", namespace),
         "spec": {"ca": {"secretName": f"{NAME}-ca"}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": _meta(NAME, namespace),
         "spec": {"secretName": TLS_SECRET, "duration": "2160h", "renewBefore": "720h",
                  "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                  "dnsNames": [f"{NAME}.{namespace}.svc", f"{NAME}.{namespace}.svc.cluster.local"],
                  "issuerRef": issuer_ref}},
    ]


def render_manifests(namespace: str, image: str = DEFAULT_IMAGE, policies_dir: str | os.PathLike[str] | None = None,
                     ca_bundle_pem: bytes | None = None, *, tls_cert_pem: bytes | None = None,
                     tls_key_pem: bytes | None = None, policies: PolicySet | None = None) -> list[dict[str, Any]]:
    """Every object needed to run the webhook in ``namespace``; the policies come from
    ``policies_dir`` (the built-in library when None). With ``tls_cert_pem`` and ``tls_key_pem`` a
    TLS Secret is included; without ``ca_bundle_pem`` cert-manager issues the Secret and its CA
    injector fills in the bundle."""
    if policies is None:
        from costwarden.api import load_policies

        policies = load_policies(*((policies_dir,) if policies_dir is not None else ()))
    scope = webhook_scope(policies)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": _labels()}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace),
         "automountServiceAccountToken": False},
        *scale_reader_rbac(namespace, scope),
        *config_map_reader_rbac(namespace, scope),
        policy_config_map(namespace, policies),
    ]
    if tls_cert_pem and tls_key_pem:
        objects.append(tls_secret(namespace, tls_cert_pem, tls_key_pem))
    if not ca_bundle_pem:  # the configurations ask cert-manager for the CA: it issues the Secret too
        objects += cert_manager_objects(namespace)
    objects += [
        deployment(namespace, image, reads_api=scope.reads_api),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(NAME, namespace),
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME, namespace),
         "spec": {"selector": {"app.kubernetes.io/name": NAME},
                  "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]}},
        *webhook_configurations(namespace, scope, ca_bundle_pem),
    ]
    return objects


def unmapped_kinds(policies: PolicySet) -> list[str]:
    """Kubernetes kinds that admission-enforced policies name explicitly but no webhook rule covers
    (a kind missing from :data:`KIND_RESOURCES`): objects of those kinds are judged in CI only."""
    found: set[str] = set()
    for policy in policies:
        if policy.subject_type != "resource" or policy.effects["admission"] == "off":
            continue
        for entry in policy.document.spec.match.kinds or ():
            provider, _, kind = entry.rpartition("/")
            if provider in ("", "kubernetes") and kind not in KIND_RESOURCES and not any(c in kind for c in "*?["):
                found.add(kind)
    return sorted(found)


__all__ = ["CONFIG_MAP_READ", "DEFAULT_IMAGE", "KIND_RESOURCES", "NAME", "TIMEOUT_SECONDS", "WebhookScope",
           "cert_manager_objects", "config_map_reader_rbac", "deployment", "policy_config_map", "render_manifests",
           "scale_reader_rbac", "unmapped_kinds", "webhook_configurations", "webhook_scope"]
