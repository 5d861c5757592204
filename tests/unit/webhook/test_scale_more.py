"""The API server reader behind scale requests, under an HPA storm and a real cluster's failure
modes: kept-alive connections shared by threads, a rotated CA, API Priority and Fairness' 429s,
redirects, oversized answers, proxies; and malformed scale requests answered 400 by the server."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from webhook_support import POLICIES, ServerThread, client_context, write_policies

from costwarden.enforcers.admission import review
from costwarden.enforcers.scale_target import ParentRef
from costwarden.errors import AdapterError
from costwarden.webhook.app import WebhookSettings, create_app
from costwarden.webhook.kube_api import MAX_IDLE_CONNECTIONS, MAX_OBJECT_BYTES, KubeApi
from costwarden.webhook.tls import CertFiles, generate_certs

TOKEN = "token-1"
PATH = "/apis/apps/v1/namespaces/ml/deployments/srv"
Answer = tuple[int, dict[str, str], bytes]


def deployment(replicas: int = 1) -> dict[str, Any]:
    """4 H100s per replica (about $27.52/h each; the test policies cap a workload at $60/h)."""
    labels = {"team": "ml", "cost.example.com/center": "research"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "srv", "namespace": "ml", "labels": labels, "resourceVersion": "7"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "srv"}},
                     "template": {"metadata": {"labels": {"app": "srv", **labels}}, "spec": {
                         "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                         "containers": [{"name": "s", "image": "server",
                                         "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}}}


def ok(obj: Any) -> Answer:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


class KeepAliveApiServer:
    """An HTTP/1.1 API server over TLS that keeps connections open, as kube-apiserver does, and
    counts the connections (handshakes) it accepted. Its certificate can be swapped (a rotation)."""

    def __init__(self, certs: CertFiles) -> None:
        self.routes: dict[str, Callable[[], Answer]] = {PATH: lambda: ok(deployment())}
        self.connections = 0
        self.requests = 0
        self.context = self._context(certs)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                fake.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.requests += 1
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, headers, body = 401, {}, b'{"kind":"Status","message":"Unauthorized"}'
                elif self.path in fake.routes:
                    status, headers, body = fake.routes[self.path]()
                else:
                    status, headers, body = 404, {}, b'{"kind":"Status","message":"not found"}'
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = self.socket.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls
                return fake.context.wrap_socket(sock, server_side=True), address

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that rejects the certificate

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def _context(certs: CertFiles) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        return context

    def rotate(self, certs: CertFiles) -> None:
        self.context = self._context(certs)

    def __enter__(self) -> KeepAliveApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs("costwarden-webhook", "costwarden", tmp_path_factory.mktemp("certs"))


@pytest.fixture
def api_server(certs: CertFiles) -> Iterator[KeepAliveApiServer]:
    with KeepAliveApiServer(certs) as server:
        yield server


@pytest.fixture
def account(tmp_path: Path, certs: CertFiles, api_server: KeepAliveApiServer,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "ca.crt").write_bytes(certs.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api_server.port))
    return folder


@pytest.fixture
def api(account: Path) -> Iterator[KubeApi]:
    reader = KubeApi.in_cluster(account)
    assert reader is not None
    yield reader
    reader.close()


def test_an_hpa_storm_reuses_one_connection(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    for _ in range(50):
        assert api.get(PATH)["kind"] == "Deployment"
    assert api_server.requests == 50
    assert api_server.connections == 1 and api.connections_opened == 1


def test_concurrent_reads_share_a_few_connections(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    """As many threads as the webhook evaluates on: each read takes a connection of its own."""
    with ThreadPoolExecutor(MAX_IDLE_CONNECTIONS) as pool:
        kinds = list(pool.map(lambda _: api.get(PATH)["kind"], range(200)))
    assert kinds == ["Deployment"] * 200
    assert api_server.connections <= MAX_IDLE_CONNECTIONS


def test_a_connection_the_server_closed_is_replaced(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    api.get(PATH)
    api_server.routes[PATH] = lambda: (200, {"Connection": "close"}, json.dumps(deployment()).encode())
    api.get(PATH)  # answered, then closed by the server: not kept
    api_server.routes[PATH] = lambda: ok(deployment(3))
    assert api.get(PATH)["spec"]["replicas"] == 3
    assert api_server.connections == 2


def test_an_idle_connection_dropped_by_the_server_is_retried_on_a_new_one(
        api: KubeApi, api_server: KeepAliveApiServer) -> None:
    api.get(PATH)
    for connection in api._idle:  # the API server (or a load balancer) timed the idle connection out
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
    assert api.get(PATH)["kind"] == "Deployment"


def test_a_rotated_api_server_ca_is_trusted_without_a_restart(
        api: KubeApi, api_server: KeepAliveApiServer, account: Path, tmp_path: Path) -> None:
    assert api.get(PATH)["kind"] == "Deployment"
    rotated = generate_certs("costwarden-webhook", "costwarden", tmp_path / "rotated")
    api_server.rotate(rotated)
    new_ca = account / "ca.crt.new"  # the kubelet swaps projected files atomically
    new_ca.write_bytes(rotated.ca_pem)
    os.replace(new_ca, account / "ca.crt")
    assert api.get(PATH)["kind"] == "Deployment"
    (account / "ca.crt").write_text("not a certificate")  # a half-written file keeps the trusted CA
    assert api.get(PATH)["kind"] == "Deployment"


def test_a_429_is_retried_once_after_retry_after(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    answers = iter([(429, {"Retry-After": "0"}, b'{"kind":"Status","message":"too many requests"}'),
                    ok(deployment(2))])
    api_server.routes[PATH] = lambda: next(answers)
    assert api.get(PATH)["spec"]["replicas"] == 2


def test_a_429_whose_retry_after_passes_the_timeout_fails_at_once(
        api: KubeApi, api_server: KeepAliveApiServer) -> None:
    api_server.routes[PATH] = lambda: (429, {"Retry-After": "30"}, b'{"kind":"Status","message":"too many"}')
    started = time.monotonic()
    with pytest.raises(AdapterError, match="HTTP 429 too many"):
        api.get(PATH)
    assert time.monotonic() - started < 1.0 and api_server.requests == 1


def test_redirects_are_not_followed(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    api_server.routes[PATH] = lambda: (302, {"Location": "https://elsewhere.example/"}, b"")
    with pytest.raises(AdapterError, match="HTTP 302"):
        api.get(PATH)


def test_an_oversized_answer_does_not_poison_the_next_read(api: KubeApi, api_server: KeepAliveApiServer) -> None:
    big = {**deployment(), "padding": "x" * (MAX_OBJECT_BYTES + 10)}
    api_server.routes[PATH] = lambda: ok(big)
    with pytest.raises(AdapterError, match="larger than"):
        api.get(PATH)
    api_server.routes[PATH] = lambda: ok(deployment(5))
    assert api.get(PATH)["spec"]["replicas"] == 5


def test_https_proxy_is_not_used_for_the_api_server(api: KubeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert api.get(PATH)["kind"] == "Deployment"


def test_parent_paths_are_percent_encoded() -> None:
    assert ParentRef("apps", "v1", "deployments", "ml", "a/b?watch=1").path == \
        "/apis/apps/v1/namespaces/ml/deployments/a%2Fb%3Fwatch%3D1"
    assert ParentRef("", "v1", "replicationcontrollers", "ml", "rc").path == \
        "/api/v1/namespaces/ml/replicationcontrollers/rc"


def scale_review(name: str = "srv", namespace: str | None = "ml", *, operation: str = "UPDATE",
                 replicas: int = 40) -> dict[str, Any]:
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name, "namespace": namespace},
             "spec": {"replicas": replicas}}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()), "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"}, "subResource": "scale",
        "name": name, "operation": operation, "object": scale if operation != "DELETE" else None,
        "oldObject": {**scale, "spec": {"replicas": 1}}}
    if namespace is not None:
        request["namespace"] = namespace
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.fixture
def client(tmp_path: Path, certs: CertFiles, account: Path) -> Iterator[httpx.Client]:
    settings = WebhookSettings(str(write_policies(tmp_path / "policies")), service_account_dir=str(account))
    app = create_app(settings)
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        assert app.state.webhook.reloader.wait_ready(60)
        yield c


@pytest.mark.parametrize("body", [
    scale_review("srv/../../../api/v1/namespaces/ml/secrets"),
    scale_review("srv?watch=true"),
    scale_review(""),
    scale_review("SRV"),
    scale_review("srv", None),
    scale_review("srv", "ml/x"),
], ids=["dot-dot-path", "query", "no-name", "upper-case", "no-namespace", "bad-namespace"])
def test_malformed_scale_requests_are_answered_400_without_a_read(
        client: httpx.Client, api_server: KeepAliveApiServer, body: dict[str, Any]) -> None:
    reply = client.post("/validate", content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "invalid-admission-review"
    assert api_server.requests == 0


def test_a_valid_scale_is_judged_through_the_server(client: httpx.Client, api_server: KeepAliveApiServer) -> None:
    for replicas, allowed in ((40, False), (2, True), (40, False)):
        reply = client.post("/validate", content=json.dumps(scale_review(replicas=replicas)),
                            headers={"content-type": "application/json"})
        assert reply.status_code == 200 and reply.json()["response"]["allowed"] is allowed
    assert api_server.requests == 3 and api_server.connections == 1


def test_a_scale_delete_is_not_judged() -> None:
    from policy_support import compile_text

    def no_read(_: ParentRef) -> dict[str, Any]:
        raise AssertionError("nothing to judge: the parent must not be read")

    resp = review(compile_text(POLICIES), scale_review(operation="DELETE"), mutate=False,
                  read_parent=no_read)["response"]
    assert resp["allowed"] is True and "status" not in resp
