"""``kubectl scale`` / the HPA: a ``<resource>/scale`` write is judged on its parent, read from an
API server — here a real HTTPS server on loopback that speaks the Kubernetes GET endpoints, with
the webhook under uvicorn reading it through its service account folder."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from webhook_support import (
    POLICIES,
    RESOURCES,
    FakeApiServer,
    ServerThread,
    client_context,
    scale_review,
    service_account,
    write_policies,
)

from costwarden.enforcers.admission import review
from costwarden.enforcers.scale import NO_API
from costwarden.engine.evaluate import PolicySet
from costwarden.errors import AdapterError
from costwarden.webhook.app import WebhookSettings, create_app
from costwarden.webhook.kube_api import KubeApi
from costwarden.webhook.manifests import render_manifests
from costwarden.webhook.tls import CertFiles, generate_certs

LABELS = {"team": "ml", "cost.example.com/center": "research"}


def workload(kind: str, name: str, replicas: int) -> dict[str, Any]:
    """4 H100s per replica (about $27.52/h each; the test policies cap a workload at $60/h)."""
    return {
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "ml", "labels": dict(LABELS)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, **LABELS}}, "spec": {
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                     "containers": [{"name": "s", "image": "server",
                                     "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}},
    }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs("costwarden-webhook", "costwarden", tmp_path_factory.mktemp("certs"))


@pytest.fixture
def api_server(certs: CertFiles) -> Iterator[FakeApiServer]:
    with FakeApiServer(certs) as server:
        server.put(workload("Deployment", "srv", 1))        # $27.52/h, within the cap
        server.put(workload("Deployment", "legacy", 4))     # $110.08/h, admitted before the policy
        server.put(workload("StatefulSet", "db", 1))
        server.put(workload("ReplicaSet", "rs", 1))
        yield server


@pytest.fixture
def account(tmp_path: Path, certs: CertFiles, api_server: FakeApiServer,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service account folder as the kubelet mounts it, and the in-cluster environment."""
    folder = service_account(tmp_path / "serviceaccount", certs.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api_server.port))
    return folder


@pytest.fixture
def client(tmp_path: Path, certs: CertFiles, account: Path) -> Iterator[httpx.Client]:
    settings = WebhookSettings(str(write_policies(tmp_path / "policies")), service_account_dir=str(account))
    app = create_app(settings)
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        assert app.state.webhook.reloader.wait_ready(60)
        yield c


def post(client: httpx.Client, body: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
    reply = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def test_scaling_past_the_cost_cap_is_denied(client: httpx.Client, api_server: FakeApiServer) -> None:
    resp = post(client, scale_review("Deployment", "srv", 40, 1))
    assert resp["allowed"] is False
    assert "[gpu-cost-cap/cap] estimated $1,100.80/h exceeds the $60.00/h cap" in resp["status"]["message"]
    assert api_server.paths == ["/apis/apps/v1/namespaces/ml/deployments/srv"]
    assert post(client, scale_review("Deployment", "srv", 2, 1))["allowed"] is True  # $55.04/h


@pytest.mark.parametrize(("kind", "name"), [("StatefulSet", "db"), ("ReplicaSet", "rs")])
def test_every_scalable_kind_is_read_from_its_own_endpoint(client: httpx.Client, api_server: FakeApiServer,
                                                           kind: str, name: str) -> None:
    assert post(client, scale_review(kind, name, 40, 1))["allowed"] is False
    assert post(client, scale_review(kind, name, 2, 1))["allowed"] is True
    group, resource = RESOURCES[kind]
    assert api_server.paths[-1] == f"/apis/{group}/v1/namespaces/ml/{resource}/{name}"


def test_a_workload_already_over_the_cap_may_scale_down_but_not_up(client: httpx.Client) -> None:
    down = post(client, scale_review("Deployment", "legacy", 3, 4))
    assert down["allowed"] is True
    assert any("gpu-cost-cap/cap: pre-existing violation" in w for w in down["warnings"])
    assert post(client, scale_review("Deployment", "legacy", 4, 4))["allowed"] is True
    up = post(client, scale_review("Deployment", "legacy", 8, 4))
    assert up["allowed"] is False and "makes it worse" in up["status"]["message"]


def test_a_parent_that_cannot_be_read_is_denied_by_on_error(client: httpx.Client, api_server: FakeApiServer) -> None:
    resp = post(client, scale_review("Deployment", "ghost", 2, 1))
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert "cannot read deployments ml/ghost" in message
    assert "HTTP 404" in message and "not found" in message and "(onError: deny)" in message
    api_server.tokens = {"token-2"}  # the token was revoked: 401
    resp = post(client, scale_review("Deployment", "srv", 2, 1))
    assert resp["allowed"] is False and "HTTP 401 Unauthorized" in resp["status"]["message"]


def test_mutate_leaves_scale_to_validate(client: httpx.Client, api_server: FakeApiServer) -> None:
    resp = post(client, scale_review("Deployment", "srv", 40, 1), "/mutate")
    assert resp["allowed"] is True and "patch" not in resp and api_server.paths == []


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    from policy_support import compile_text

    return compile_text(POLICIES)


def test_without_api_access_the_scale_is_denied_not_allowed(policies: PolicySet) -> None:
    resp = review(policies, scale_review("Deployment", "srv", 2, 1), mutate=False, read_parent=None)["response"]
    assert resp["allowed"] is False and NO_API in resp["status"]["message"]


def test_on_error_allow_lets_it_through_with_a_warning(compile_policies: Any) -> None:
    lenient = compile_policies(POLICIES.split("---")[2].replace("enforcement: {default: deny}",
                                                                "enforcement: {default: deny}\n  onError: allow"))

    def unreachable(_: Any) -> dict[str, Any]:
        raise AdapterError("GET /apis/apps/v1/namespaces/ml/deployments/srv failed: ConnectionRefusedError")

    resp = review(lenient, scale_review("Deployment", "srv", 2, 1), mutate=False, read_parent=unreachable)["response"]
    assert resp["allowed"] is True
    assert resp["warnings"][0].startswith("costwarden: scale not judged: cannot read deployments ml/srv: GET")


def test_a_read_past_the_deadline_is_denied(policies: PolicySet) -> None:
    def slow(_: Any) -> dict[str, Any]:
        time.sleep(1.0)
        return workload("Deployment", "srv", 1)

    resp = review(policies, scale_review("Deployment", "srv", 2, 1), mutate=False, deadline_s=0.2,
                  read_parent=slow)["response"]
    assert resp["allowed"] is False and "[gpu-cost-cap/evaluation]" in resp["status"]["message"]
    assert "0.2s admission deadline" in resp["status"]["message"]


def test_policies_that_ignore_replicas_need_no_read(compile_policies: Any) -> None:
    labels_only = compile_policies(POLICIES.split("---")[0])

    def no_read(_: Any) -> dict[str, Any]:
        raise AssertionError("no policy depends on replicas: the parent must not be read")

    resp = review(labels_only, scale_review("Deployment", "srv", 40, 1), mutate=False, read_parent=no_read)
    assert resp["response"] == {"uid": resp["response"]["uid"], "allowed": True}


def test_kube_api_reads_the_token_again_for_each_request(account: Path, api_server: FakeApiServer) -> None:
    api = KubeApi.in_cluster(account)
    assert api is not None
    assert api.get("/apis/apps/v1/namespaces/ml/deployments/srv")["spec"]["replicas"] == 1
    api_server.tokens = {"token-2"}
    (account / "token").write_text("token-2")  # the kubelet rotated the bound token
    assert api.get("/apis/apps/v1/namespaces/ml/deployments/srv")["kind"] == "Deployment"
    with pytest.raises(AdapterError, match="HTTP 404"):
        api.get("/apis/apps/v1/namespaces/ml/deployments/ghost")


def test_kube_api_trusts_only_the_service_account_ca(account: Path, tmp_path: Path) -> None:
    other = generate_certs("x", "y", tmp_path / "other")
    (account / "ca.crt").write_bytes(other.ca_pem)
    api = KubeApi.in_cluster(account)
    assert api is not None
    with pytest.raises(AdapterError, match="SSL"):
        api.get("/apis/apps/v1/namespaces/ml/deployments/srv")


def test_outside_a_cluster_there_is_no_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert KubeApi.in_cluster(tmp_path) is None


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def test_manifests_register_scale_and_rbac_only_for_replica_policies(tmp_path: Path) -> None:
    objects = render_manifests("cw", policies_dir=write_policies(tmp_path / "all"),
                               ca_bundle_pem=b"CA")
    [validating] = by_kind(objects, "ValidatingWebhookConfiguration")["webhooks"]
    [mutating] = by_kind(objects, "MutatingWebhookConfiguration")["webhooks"]
    scale_rules = [r for r in validating["rules"] if any(res.endswith("/scale") for res in r["resources"])]
    assert {(r["apiGroups"][0], res) for r in scale_rules for res in r["resources"]} == {
        ("apps", "deployments/scale"), ("apps", "replicasets/scale"), ("apps", "statefulsets/scale"),
        ("", "replicationcontrollers/scale"), ("leaderworkerset.x-k8s.io", "leaderworkersets/scale")}
    assert all(r["operations"] == ["UPDATE"] for r in scale_rules)
    assert not any("/" in res for r in mutating["rules"] for res in r["resources"])
    role = by_kind(objects, "ClusterRole")
    assert {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets"],
            "verbs": ["get"]} in role["rules"]
    assert all(rule["verbs"] == ["get"] for rule in role["rules"])
    binding = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "costwarden-webhook", "namespace": "cw"}]
    assert by_kind(objects, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    from kubernetes.client import ApiClient

    api = ApiClient()
    for obj, model in ((role, "V1ClusterRole"), (binding, "V1ClusterRoleBinding")):
        assert api.sanitize_for_serialization(api.deserialize(json.dumps(obj), model, "application/json")) == obj

    labels_only = render_manifests("cw", policies_dir=write_policies(tmp_path / "labels", POLICIES.split("---")[0]),
                                   ca_bundle_pem=b"CA")
    [validating] = by_kind(labels_only, "ValidatingWebhookConfiguration")["webhooks"]
    assert not any("/" in res for r in validating["rules"] for res in r["resources"])
    assert not any(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in labels_only)
    assert by_kind(labels_only, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_scaled_parent_is_not_modified(policies: PolicySet) -> None:
    parent = workload("Deployment", "srv", 1)
    kept = copy.deepcopy(parent)
    review(policies, scale_review("Deployment", "srv", 40, 1), mutate=False, read_parent=lambda _: parent)
    assert parent == kept
