"""A vLLM server started with ``--config`` from a ConfigMap volume: ``/validate`` reads that
ConfigMap from the API server — here a real HTTPS server on loopback speaking the Kubernetes GET
endpoints, with the webhook under uvicorn reading it through its service account folder — and
judges the file as ``costwarden check`` does with both manifests. A read that fails keeps the
"cannot be judged" result and says why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from policy_support import compile_text
from webhook_support import (
    POLICIES,
    FakeApiServer,
    ServerThread,
    admission_review,
    client_context,
    scale_review,
    service_account,
    write_policies,
)

from costwarden.enforcers.admission import review
from costwarden.enforcers.cluster_reads import NO_API, config_map_path
from costwarden.engine.evaluate import PolicySet
from costwarden.errors import AdapterError
from costwarden.webhook.app import WebhookSettings, create_app
from costwarden.webhook.kube_api import KubeApi
from costwarden.webhook.tls import CertFiles, generate_certs

VLLM_POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: vllm-memory, severity: medium}
spec:
  subject: serving_config
  enforcement: {default: deny}
  rules:
    - name: memory
      servingConfig: {minGpuMemoryUtilization: 0.85}
"""
CM_PATH = "/api/v1/namespaces/ml/configmaps/vllm-cfg"
CANNOT_JUDGE = "the --config file /etc/vllm/config.yaml was not read"
LOW_MEMORY = "gpu_memory_utilization 0.5 leaves 50% of GPU memory unused"


def vllm_deployment(config_map: str = "vllm-cfg", *, items: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """``vllm serve --config /etc/vllm/config.yaml``, the file from a ConfigMap volume."""
    volume: dict[str, Any] = {"name": config_map}
    if items is not None:
        volume["items"] = items
    container = {"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                 "command": ["vllm", "serve", "Qwen/Qwen3-8B", "--config", "/etc/vllm/config.yaml"],
                 "resources": {"limits": {"nvidia.com/gpu": 1}},
                 "volumeMounts": [{"name": "cfg", "mountPath": "/etc/vllm", "readOnly": True}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm", "namespace": "ml"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llm"}},
                     "template": {"metadata": {"labels": {"app": "llm"}},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "cfg", "configMap": volume}]}}}}


def config_map(text: str, name: str = "vllm-cfg", key: str = "config.yaml") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ml"},
            "data": {key: text}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs("costwarden-webhook", "costwarden", tmp_path_factory.mktemp("certs"))


@pytest.fixture
def api_server(certs: CertFiles) -> Iterator[FakeApiServer]:
    with FakeApiServer(certs) as server:
        server.put(config_map("gpu-memory-utilization: 0.5\n"))
        yield server


@pytest.fixture
def account(tmp_path: Path, certs: CertFiles, api_server: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api_server.port))
    return service_account(tmp_path / "serviceaccount", certs.ca_pem)


def serve(tmp_path: Path, certs: CertFiles, account: Path, policies: str) -> Iterator[httpx.Client]:
    settings = WebhookSettings(str(write_policies(tmp_path / "policies", policies)), service_account_dir=str(account))
    app = create_app(settings)
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        assert app.state.webhook.reloader.wait_ready(60)
        yield c


@pytest.fixture
def client(tmp_path: Path, certs: CertFiles, account: Path) -> Iterator[httpx.Client]:
    yield from serve(tmp_path, certs, account, VLLM_POLICY)


def post(client: httpx.Client, body: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
    reply = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


# --- through the webhook under uvicorn ----------------------------------------------------------


def test_the_config_file_is_read_from_the_configmap_and_judged(client: httpx.Client,
                                                               api_server: FakeApiServer) -> None:
    resp = post(client, admission_review(vllm_deployment()))
    assert resp["allowed"] is False
    assert LOW_MEMORY in resp["status"]["message"] and CANNOT_JUDGE not in resp["status"]["message"]
    assert api_server.paths == [CM_PATH]


def test_a_configmap_edited_between_two_deployments_is_read_again(client: httpx.Client,
                                                                  api_server: FakeApiServer) -> None:
    assert post(client, admission_review(vllm_deployment()))["allowed"] is False
    api_server.put(config_map("gpu-memory-utilization: 0.9\n"))
    assert post(client, admission_review(vllm_deployment()))["allowed"] is True
    api_server.put(config_map("gpu-memory-utilization: 0.5\n"))
    assert post(client, admission_review(vllm_deployment()))["allowed"] is False
    assert api_server.paths == [CM_PATH] * 3


def test_only_the_mounted_key_counts(client: httpx.Client, api_server: FakeApiServer) -> None:
    # items: key "prod.yaml" is projected at config.yaml; the ConfigMap's config.yaml is not mounted
    both = {"config.yaml": "gpu-memory-utilization: 0.5\n", "prod.yaml": "gpu-memory-utilization: 0.9\n"}
    api_server.put({**config_map(""), "data": both})
    deployment = vllm_deployment(items=[{"key": "prod.yaml", "path": "config.yaml"}])
    assert post(client, admission_review(deployment))["allowed"] is True


@pytest.mark.parametrize(("failure", "expected"), [
    (None, 'HTTP 404 configmaps "ghost" not found'),
    ((403, 'configmaps "ghost" is forbidden: User "system:serviceaccount:cw:costwarden-webhook" cannot get '
           'resource "configmaps"'), "HTTP 403 configmaps \"ghost\" is forbidden"),
])
def test_a_configmap_that_cannot_be_read_is_not_judged_and_says_why(
        client: httpx.Client, api_server: FakeApiServer, failure: tuple[int, str] | None, expected: str) -> None:
    if failure:
        api_server.failures["/api/v1/namespaces/ml/configmaps/ghost"] = failure
    resp = post(client, admission_review(vllm_deployment("ghost")))
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert CANNOT_JUDGE in message
    assert "cannot read ConfigMap ml/ghost (a vLLM --config): GET /api/v1/namespaces/ml/configmaps/ghost: " \
           + expected in message
    assert resp["warnings"][0].startswith("costwarden: cannot read ConfigMap ml/ghost (a vLLM --config): GET")


def test_a_warning_policy_warns_with_the_reason(tmp_path: Path, certs: CertFiles, account: Path,
                                                api_server: FakeApiServer) -> None:
    warn = VLLM_POLICY.replace("{default: deny}", "{default: deny, admission: warn}")
    for client in serve(tmp_path, certs, account, warn):
        resp = post(client, admission_review(vllm_deployment("ghost")))
        assert resp["allowed"] is True
        assert any(w.startswith("costwarden vllm-memory/memory: cannot judge") for w in resp["warnings"])
        assert any(w.startswith("costwarden: cannot read ConfigMap ml/ghost") and "HTTP 404" in w
                   for w in resp["warnings"])


def test_mutate_reads_nothing(client: httpx.Client, api_server: FakeApiServer) -> None:
    resp = post(client, admission_review(vllm_deployment()), "/mutate")
    assert resp["allowed"] is True and api_server.paths == []


def test_without_a_serving_config_policy_nothing_is_read(tmp_path: Path, certs: CertFiles, account: Path,
                                                         api_server: FakeApiServer) -> None:
    for client in serve(tmp_path, certs, account, POLICIES):
        post(client, admission_review(vllm_deployment()))
        assert api_server.paths == []


# --- the enforcer with the real API reader --------------------------------------------------------


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return compile_text(VLLM_POLICY)


def test_a_read_that_times_out_is_not_judged_and_says_so(policies: PolicySet, account: Path,
                                                         api_server: FakeApiServer) -> None:
    api = KubeApi.in_cluster(account, timeout_s=0.2)
    assert api is not None
    api_server.delay_s = 0.5
    started = time.monotonic()
    resp = review(policies, admission_review(vllm_deployment()), mutate=False, read_config_map=api.config_map)
    assert time.monotonic() - started < 1.5
    message = resp["response"]["status"]["message"]
    assert CANNOT_JUDGE in message and "cannot read ConfigMap ml/vllm-cfg" in message and "TimeoutError" in message


def test_without_api_access_the_reason_is_given(policies: PolicySet) -> None:
    resp = review(policies, admission_review(vllm_deployment()), mutate=False, read_config_map=None)["response"]
    assert resp["allowed"] is False and CANNOT_JUDGE in resp["status"]["message"]
    assert NO_API in resp["status"]["message"]


def test_a_name_that_is_not_a_configmap_name_is_never_read(policies: PolicySet) -> None:
    reads: list[tuple[str, str]] = []

    def read(namespace: str, name: str) -> dict[str, Any]:
        reads.append((namespace, name))
        return config_map("gpu-memory-utilization: 0.9\n", name)

    for name in ("..%2Fsecrets%2Fx", "a/../../secrets/token", "UPPER"):
        resp = review(policies, admission_review(vllm_deployment(name)), mutate=False, read_config_map=read)
        assert f"{name!r} is not a ConfigMap name" in resp["response"]["status"]["message"]
    assert reads == []
    with pytest.raises(AdapterError):
        config_map_path("ml/../kube-system", "x")


def test_no_read_for_workloads_without_a_configmap_config(policies: PolicySet) -> None:
    def no_read(namespace: str, name: str) -> dict[str, Any]:
        raise AssertionError("nothing to read")

    inline = vllm_deployment()
    container = inline["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["vllm", "serve", "Qwen/Qwen3-8B", "--gpu-memory-utilization", "0.9"]
    assert review(policies, admission_review(inline), mutate=False, read_config_map=no_read)["response"]["allowed"]
    container["command"] = ["vllm", "serve", "Qwen/Qwen3-8B", "--config", "/opt/baked-in.yaml"]  # in the image
    resp = review(policies, admission_review(inline), mutate=False, read_config_map=no_read)["response"]
    assert "/opt/baked-in.yaml was not read" in resp["status"]["message"] and "warnings" not in resp


def test_the_parent_of_a_scale_request_reads_its_configmap_too() -> None:
    cap = POLICIES.split("---")[2]  # gpu-cost-cap: judges replicas, so the scale is judged on the parent
    both = compile_text(VLLM_POLICY, cap)
    parent = vllm_deployment()
    parent["metadata"]["labels"] = {"costwarden.dev/cost-approved-by": "finops"}
    reads: list[str] = []

    def read(namespace: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return config_map("gpu-memory-utilization: 0.9\n", name)

    body = scale_review("Deployment", "llm", 2, 1)
    resp = review(both, body, mutate=False, read_parent=lambda _: parent, read_config_map=read)["response"]
    assert resp["allowed"] is True, resp
    assert reads == ["vllm-cfg"] and "warnings" not in resp
