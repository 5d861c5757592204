"""Install manifests: valid Kubernetes objects, rules generated from the policies, safe defaults."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from webhook_support import POLICIES, write_policies

from costwarden.api import load_policies
from costwarden.engine.evaluate import PolicySet
from costwarden.webhook.manifests import render_manifests, webhook_scope
from costwarden.webhook.tls import generate_certs

MODELS = {
    "Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "ConfigMap": "V1ConfigMap",
    "Secret": "V1Secret", "Deployment": "V1Deployment", "PodDisruptionBudget": "V1PodDisruptionBudget",
    "Service": "V1Service", "ValidatingWebhookConfiguration": "V1ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration": "V1MutatingWebhookConfiguration",
    "ClusterRole": "V1ClusterRole", "ClusterRoleBinding": "V1ClusterRoleBinding",
}
CHART = Path(__file__).resolve().parents[3] / "examples" / "kubernetes" / "helm" / "costwarden-webhook"


@pytest.fixture(scope="module")
def objects(builtin_policies: PolicySet, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    certs = generate_certs("costwarden-webhook", "costwarden", tmp_path_factory.mktemp("certs"))
    return render_manifests("costwarden", "example.com/costwarden:1", ca_bundle_pem=certs.ca_pem,
                            tls_cert_pem=certs.cert.read_bytes(), tls_key_pem=certs.key.read_bytes(),
                            policies=builtin_policies)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def test_every_object_is_a_valid_kubernetes_api_object(objects: list[dict[str, Any]]) -> None:
    from kubernetes.client import ApiClient

    api = ApiClient()
    assert sorted({o["kind"] for o in objects}) == sorted(MODELS)
    assert [o["kind"] for o in objects].count("ClusterRole") == 2  # scale parents, vLLM --config ConfigMaps
    for obj in objects:
        text = yaml.safe_dump(obj)  # what kubectl apply reads
        model = api.deserialize(json.dumps(yaml.safe_load(text)), MODELS[obj["kind"]], "application/json")
        # the client drops fields it does not know: a round trip that loses nothing has no typo
        assert api.sanitize_for_serialization(model) == obj, obj["kind"]


def test_deployment_is_highly_available_and_hardened(objects: list[dict[str, Any]]) -> None:
    deployment = by_kind(objects, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    [container] = spec["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "scheme": "HTTPS", "port": "https"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert by_kind(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert by_kind(objects, "Service")["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


def test_webhook_configurations(objects: list[dict[str, Any]], builtin_policies: PolicySet) -> None:
    ca = base64.b64decode(by_kind(objects, "Secret")["data"]["tls.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    for kind, path, failure in (("ValidatingWebhookConfiguration", "/validate", "Fail"),
                                ("MutatingWebhookConfiguration", "/mutate", "Ignore")):
        [hook] = by_kind(objects, kind)["webhooks"]
        assert hook["clientConfig"]["service"] == {"name": "costwarden-webhook", "namespace": "costwarden",
                                                   "path": path, "port": 443}
        assert base64.b64decode(hook["clientConfig"]["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")
        assert hook["sideEffects"] == "None" and hook["matchPolicy"] == "Equivalent"
        assert hook["admissionReviewVersions"] == ["v1"] and 1 <= hook["timeoutSeconds"] <= 10
        assert hook["failurePolicy"] == failure
        assert hook["namespaceSelector"] == {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["costwarden", "kube-system"]}]}
        rules = {(r["apiGroups"][0], r["apiVersions"][0], res) for r in hook["rules"] for res in r["resources"]}
        assert {("", "v1", "pods"), ("apps", "v1", "deployments"), ("batch", "v1", "jobs"),
                ("ray.io", "v1", "rayjobs"), ("serving.kserve.io", "v1beta1", "inferenceservices"),
                ("jobset.x-k8s.io", "v1alpha2", "jobsets"), ("kubeflow.org", "v1", "pytorchjobs"),
                ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")} <= rules
        assert not any(res.endswith("/status") for _, _, res in rules)  # never the status subresource
        main = [r for r in hook["rules"] if not any("/" in res for res in r["resources"])]
        scale = [r for r in hook["rules"] if r not in main]
        assert all(r["operations"] == ["CREATE", "UPDATE"] for r in main)
        if path == "/mutate":  # a Scale cannot be patched into its parent: only validated
            assert scale == []
        else:  # the library caps GPU cost by replicas: kubectl scale and the HPA are judged too
            assert all(r["operations"] == ["UPDATE"] and all(res.endswith("/scale") for res in r["resources"])
                       for r in scale)
            assert ("apps", "v1", "deployments/scale") in rules and ("apps", "v1", "statefulsets/scale") in rules


def test_rules_follow_the_policies(compile_policies: Any) -> None:
    labels_only = compile_policies(POLICIES.split("---")[0].replace(
        "kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, RayJob, RayCluster, RayService,\n"
        "            PyTorchJob, JobSet, LeaderWorkerSet, InferenceService]", "kinds: [Job, kubernetes/RayJob]"))
    scope = webhook_scope(labels_only)
    assert scope.kinds == ("Job", "RayJob") and scope.fail_closed
    assert scope.rules() == [
        {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"], "operations": ["CREATE", "UPDATE"],
         "scope": "Namespaced"},
        {"apiGroups": ["ray.io"], "apiVersions": ["v1"], "resources": ["rayjobs"],
         "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]
    warn_only = compile_policies(POLICIES.split("---")[3])
    assert webhook_scope(warn_only).fail_closed is False
    off = compile_policies(POLICIES.split("---")[0].replace("{default: deny}", "{default: deny, admission: off}"))
    assert webhook_scope(off).kinds == ()


def test_configmap_round_trips_to_the_same_policies(objects: list[dict[str, Any]], builtin_policies: PolicySet,
                                                    tmp_path: Path) -> None:
    for name, text in by_kind(objects, "ConfigMap")["data"].items():
        (tmp_path / name).write_text(text)
    assert sorted(load_policies(tmp_path, pricer=None).names) == sorted(builtin_policies.names)


def test_configmap_keeps_every_file_when_names_repeat_in_deep_folders(tmp_path: Path) -> None:
    # Keys were built from the last three path parts: org-a/teams/ml/p.yaml and
    # org-b/teams/ml/p.yaml both became "teams--ml--p.yaml" and one policy file was lost.
    root = tmp_path / "policies"
    first, second = POLICIES.split("---")[0], POLICIES.split("---")[0].replace("cost-labels", "cost-labels-b")
    for org, text in (("org-a", first), ("org-b", second)):
        folder = root / org / "teams" / "ml"
        folder.mkdir(parents=True)
        (folder / "p.yaml").write_text(text)
    (root / "p.yaml").write_text(POLICIES.split("---")[3])
    policies = load_policies(root, pricer=None)
    data = render_manifests("cw", policies=policies)[2]["data"]
    assert len(data) == 3
    out = tmp_path / "mounted"
    out.mkdir()
    for name, text in data.items():
        (out / name).write_text(text)
    assert sorted(load_policies(out, pricer=None).names) == sorted(policies.names)


def test_without_a_ca_bundle_cert_manager_injects_it(builtin_policies: PolicySet) -> None:
    objects = render_manifests("cw", policies=builtin_policies)
    hook = by_kind(objects, "ValidatingWebhookConfiguration")
    assert hook["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "cw/costwarden-webhook"}
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]
    assert not any(o["kind"] == "Secret" for o in objects)


def test_without_certs_cert_manager_issues_the_secret_the_deployment_mounts(builtin_policies: PolicySet) -> None:
    # The CA annotation names a Certificate and the Deployment mounts its Secret: both must be
    # in the output, or the pods never start and a Fail webhook blocks every matching write.
    objects = render_manifests("cw", policies=builtin_policies)
    annotation = by_kind(objects, "ValidatingWebhookConfiguration")["metadata"]["annotations"]
    namespace, _, name = annotation["cert-manager.io/inject-ca-from"].partition("/")
    certificates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    issuers = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Issuer"}
    serving = certificates[name]
    assert serving["apiVersion"] == "cert-manager.io/v1" and serving["metadata"]["namespace"] == namespace == "cw"
    volumes = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert serving["spec"]["secretName"] == next(v["secret"]["secretName"] for v in volumes if v["name"] == "tls")
    assert "costwarden-webhook.cw.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["renewBefore"] and serving["spec"]["issuerRef"]["name"] in issuers
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    if "ca" in ca_issuer["spec"]:  # a CA issuer: its CA certificate is issued too
        assert ca_issuer["spec"]["ca"]["secretName"] in {c["spec"]["secretName"] for c in certificates.values()}
    kinds = [o["kind"] for o in objects]
    assert max(i for i, k in enumerate(kinds) if k in ("Issuer", "Certificate")) < kinds.index("Deployment")
    with_certs = render_manifests("cw", policies=builtin_policies, ca_bundle_pem=b"CA", tls_cert_pem=b"C",
                                  tls_key_pem=b"K")
    assert not any(o["kind"] in ("Issuer", "Certificate") for o in with_certs)


def test_helm_chart_values_carry_the_generated_rules(builtin_policies: PolicySet) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    scope = webhook_scope(builtin_policies)
    assert values["webhook"]["rules"] == scope.rules()
    assert values["webhook"]["scale"]["rules"] == scope.validating_rules()[len(scope.rules()):]
    assert values["webhook"]["configMaps"]["read"] == scope.config_map_read_rules() != []
    assert values["webhook"]["failurePolicy"] == ("Fail" if scope.fail_closed else "Ignore")


@pytest.mark.parametrize("cert_manager", [True, False])
def test_helm_chart_renders_the_same_objects(objects: list[dict[str, Any]], cert_manager: bool) -> None:
    helm = pytest.importorskip("helm_python")  # Helm's own renderer (helm-python-sdk), when installed
    from kubernetes.client import ApiClient

    secret = by_kind(objects, "Secret")["data"]
    values: dict[str, Any] = {"policies": by_kind(objects, "ConfigMap")["data"], "tls": {"certManager": cert_manager}}
    if not cert_manager:
        values["tls"] |= {"caBundle": "CA", "cert": base64.b64decode(secret["tls.crt"]).decode(),
                          "key": base64.b64decode(secret["tls.key"]).decode()}
    rendered = helm.Chart.load(str(CHART)).render(values, name="cw", namespace="costwarden", is_install=True)
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    api = ApiClient()
    for doc in docs:
        if doc["kind"] in MODELS:
            model = api.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
            assert api.sanitize_for_serialization(model) == doc, doc["kind"]
    chart_hook = by_kind(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    ours = by_kind(objects, "ValidatingWebhookConfiguration")["webhooks"][0]
    for key in ("rules", "failurePolicy", "sideEffects", "matchPolicy", "admissionReviewVersions", "timeoutSeconds",
                "namespaceSelector"):
        assert chart_hook[key] == ours[key], key
    assert by_kind(docs, "ConfigMap")["data"] == by_kind(objects, "ConfigMap")["data"]
    chart_pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    our_pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken"):
        assert chart_pod[key] == our_pod[key], key
    assert chart_pod["containers"][0]["securityContext"] == our_pod["containers"][0]["securityContext"]
    roles = {o["metadata"]["name"].removeprefix("cw-"): o["rules"] for o in docs if o["kind"] == "ClusterRole"}
    assert roles == {o["metadata"]["name"]: o["rules"] for o in objects if o["kind"] == "ClusterRole"}
    kinds = sorted(d["kind"] for d in docs)
    assert ("Certificate" in kinds) is cert_manager and ("Secret" in kinds) is not cert_manager


def test_helm_chart_has_the_same_pieces() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "costwarden-webhook"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicaCount"] == 3 and values["webhook"]["timeoutSeconds"] == 5
    templates = " ".join(p.read_text() for p in (CHART / "templates").iterdir())
    for kind in MODELS:
        if kind != "Namespace":
            assert f"kind: {kind}" in templates, kind
    for needle in ("kubernetes.io/metadata.name", "sideEffects: None", "matchPolicy: Equivalent",
                   "readOnlyRootFilesystem: true", "/readyz", "/healthz"):
        assert needle in templates, needle


VLLM_POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: vllm-prefix-caching, severity: medium}
spec:
  subject: serving_config
  enforcement: {default: deny, admission: warn}
  rules:
    - name: caching
      servingConfig: {requirePrefixCaching: true}
"""


def test_configmap_reads_get_rbac_only_when_a_serving_policy_is_judged_at_admission(tmp_path: Path) -> None:
    def rbac(name: str, text: str) -> tuple[list[Any], bool]:
        objects = render_manifests("cw", policies_dir=write_policies(tmp_path / name, text), ca_bundle_pem=b"CA")
        roles = [o["rules"] for o in objects if o["kind"] == "ClusterRole"
                 and o["metadata"]["name"] == "costwarden-webhook-configmap-reader"]
        bindings = [o for o in objects if o["kind"] == "ClusterRoleBinding"
                    and o["roleRef"]["name"] == "costwarden-webhook-configmap-reader"]
        assert len(bindings) == len(roles)
        return roles, by_kind(objects, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"]

    # no reader at all: the token is not mounted
    assert rbac("labels", POLICIES.split("---")[0]) == ([], False)
    # the token is mounted for the ConfigMaps alone (no policy judges replicas)
    assert rbac("vllm", VLLM_POLICY) == ([[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]], True)
    assert rbac("off", VLLM_POLICY.replace("admission: warn", "admission: off")) == ([], False)


def test_helm_chart_mounts_the_token_only_for_a_reader() -> None:
    helm = pytest.importorskip("helm_python")

    def render(webhook: dict[str, Any]) -> list[dict[str, Any]]:
        values = {"tls": {"certManager": False, "caBundle": "CA", "cert": "C", "key": "K"}, "webhook": webhook,
                  "existingPolicyConfigMap": "mine"}
        rendered = helm.Chart.load(str(CHART)).render(values, name="cw", namespace="cw", is_install=True)
        return [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]

    no_reads = render({"scale": {"rules": []}, "configMaps": {"read": []}})
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in no_reads)
    assert by_kind(no_reads, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    config_maps_only = render({"scale": {"rules": []}})
    assert [d["metadata"]["name"] for d in config_maps_only if d["kind"] == "ClusterRole"] == [
        "cw-costwarden-webhook-configmap-reader"]
    assert by_kind(config_maps_only, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
