"""Shared by the webhook tests and benchmark: test policies, AdmissionReview builders, corpora objects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
CORPUS_FOLDERS = ("k8s-gpu-workloads", "k8s-required-labels")
EVENTS = CORPORA / "k8s-required-labels" / "cloud-custodian-kube" / "events"

# Every enforced failure of these policies has a fix except the GPU cost cap's.
POLICIES = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: cost-labels, severity: high}
spec:
  subject: resource
  match:
    providers: [kubernetes]
    kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, RayJob, RayCluster, RayService,
            PyTorchJob, JobSet, LeaderWorkerSet, InferenceService]
  exclude: {namespaces: [kube-system]}
  enforcement: {default: deny}
  rules:
    - name: labels
      requireTags:
        keys: [team, cost.example.com/center]
        values: {team: "^[a-z][a-z0-9-]*$"}
        defaults: {team: unassigned, cost.example.com/center: shared}
---
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: batch-on-spot, severity: medium}
spec:
  subject: resource
  match: {providers: [kubernetes]}
  enforcement: {default: deny}
  rules:
    - name: spot
      spotOnly: {workloadClasses: [batch], fix: {platform: auto, fallback: karpenter}}
---
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: gpu-cost-cap, severity: high}
spec:
  subject: resource
  match: {providers: [kubernetes]}
  enforcement: {default: deny}
  rules:
    - name: cap
      maxHourlyCost: {limitUsd: 60, approvalTag: costwarden.dev/cost-approved-by}
---
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: few-gpus-per-pod, severity: low}
spec:
  subject: resource
  match: {providers: [kubernetes], when: "subject.workload.gpus > 0"}
  enforcement: {default: warn}
  rules:
    - name: gpus
      expr: {cel: "subject.workload.gpus <= 2.0", message: "more than 2 GPUs per replica; check the job needs them"}
"""


def write_policies(folder: Path, text: str = POLICIES, name: str = "policies.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def plural(kind: str) -> str:
    lower = kind.lower()
    return lower + ("es" if lower.endswith("s") else "s")


def request_namespace(obj: Mapping[str, Any]) -> str | None:
    """The namespace the API server would put in the request (kubectl's default namespace)."""
    meta = obj.get("metadata") or {}
    if meta.get("namespace"):
        return str(meta["namespace"])
    return None if obj.get("kind") == "Namespace" else "default"


def admission_review(obj: Mapping[str, Any] | None, *, operation: str = "CREATE", old: Any = None,
                     dry_run: bool = False, sub_resource: str | None = None, uid: str | None = None,
                     kind: str | None = None) -> dict[str, Any]:
    """An AdmissionReview v1 request as the API server sends it."""
    source = obj if obj is not None else (old or {})
    group, _, version = str(source.get("apiVersion", "v1")).rpartition("/")
    kind = kind or str(source.get("kind", ""))
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": plural(kind)},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": (source.get("metadata") or {}).get("name", ""),
        "operation": operation,
        "userInfo": {"username": "tester", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    namespace = request_namespace(source)
    if namespace:
        request["namespace"] = namespace
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def with_namespace(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: namespaced objects carry the request's namespace."""
    namespace = request_namespace(obj)
    meta = dict(obj.get("metadata") or {})
    if namespace and not meta.get("namespace"):
        meta["namespace"] = namespace
    return {**obj, "metadata": meta}


def corpus_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:index, object) for every Kubernetes object in the corpora's manifests."""
    from costwarden.adapters.kubernetes import read_manifests
    from costwarden.errors import AdapterError

    for folder in CORPUS_FOLDERS:
        for path in sorted((CORPORA / folder).rglob("*")):
            if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
                continue
            try:
                found = read_manifests(path.read_text(encoding="utf-8"), str(path))
            except (AdapterError, UnicodeDecodeError):
                continue
            for index, (obj, _line, _pointer) in enumerate(found):
                if isinstance(obj.get("kind"), str) and isinstance(obj.get("apiVersion"), str) \
                        and isinstance(obj.get("metadata"), dict) and obj.get("kind") != "AdmissionReview":
                    yield f"{path.relative_to(CORPORA)}#{index}", obj


class ConfigMapDir:
    """A folder laid out like a ConfigMap volume: ``name -> ..data/name``, ``..data -> ..<version>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0
        root.mkdir(parents=True, exist_ok=True)

    def publish(self, files: dict[str, str]) -> None:
        """Swap in new contents atomically, as the kubelet does."""
        import os

        self.version += 1
        target = self.root / f"..v{self.version}"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text, encoding="utf-8")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        for entry in self.root.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
                entry.unlink()


class ServerThread:
    """The webhook app under a real uvicorn server with TLS, on an ephemeral loopback port."""

    def __init__(self, app: Any, cert: Path, key: Path, *, tls_interval_s: float = 2.0) -> None:
        import socket
        import threading

        import uvicorn

        from costwarden.webhook.server import uvicorn_options

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        options = uvicorn_options(cert, key, log_level="warning", tls_interval_s=tls_interval_s)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, **options)
        self.tls = options["ssl_context_factory"]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("webhook server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


TOKEN = "token-1"
# kind → (apiGroup, resource) of the objects the fake API server holds
RESOURCES = {"Deployment": ("apps", "deployments"), "StatefulSet": ("apps", "statefulsets"),
             "ReplicaSet": ("apps", "replicasets"), "ConfigMap": ("", "configmaps")}


class FakeApiServer:
    """GET /api(s)/<group>/<version>/namespaces/<ns>/<resource>/<name> over TLS with bearer tokens,
    answering errors with ``Status`` objects, as kube-apiserver does. ``failures`` answers a path
    with an error status instead (a 403 from RBAC, say); ``delay_s`` slows every answer down."""

    def __init__(self, certs: Any) -> None:
        import json
        import ssl
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.objects: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, tuple[int, str]] = {}
        self.tokens = {TOKEN}
        self.paths: list[str] = []
        self.delay_s = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.paths.append(self.path)
                time.sleep(fake.delay_s)
                resource, name = self.path.rsplit("/", 2)[-2:]
                if self.headers.get("Authorization") not in {f"Bearer {t}" for t in fake.tokens}:
                    self._answer(401, {"kind": "Status", "status": "Failure", "message": "Unauthorized",
                                       "reason": "Unauthorized", "code": 401})
                elif self.path in fake.failures:
                    code, message = fake.failures[self.path]
                    self._answer(code, {"kind": "Status", "status": "Failure", "code": code, "message": message})
                elif self.path in fake.objects:
                    self._answer(200, fake.objects[self.path])
                else:
                    self._answer(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                                       "message": f'{resource} "{name}" not found'})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def path(kind: str, namespace: str, name: str) -> str:
        group, resource = RESOURCES[kind]
        return f"{'/apis/' + group if group else '/api'}/v1/namespaces/{namespace}/{resource}/{name}"

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[self.path(obj["kind"], meta["namespace"], meta["name"])] = obj

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def scale_review(kind: str, name: str, replicas: int, old_replicas: int) -> dict[str, Any]:
    """The AdmissionReview the API server sends for ``kubectl scale <kind>/<name> --replicas=N``."""
    group, resource = RESOURCES[kind]

    def scale(n: int) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": "ml"}, "spec": {"replicas": n}, "status": {"replicas": n}}

    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
        "resource": {"group": group, "version": "v1", "resource": resource}, "subResource": "scale",
        "requestKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
        "name": name, "namespace": "ml", "operation": "UPDATE",
        "userInfo": {"username": "tester"}, "object": scale(replicas), "oldObject": scale(old_replicas),
        "dryRun": False}}


def service_account(folder: Path, ca_pem: bytes, token: str = TOKEN) -> Path:
    """A service account folder as the kubelet mounts it (with ``KUBERNETES_SERVICE_*`` set by the caller)."""
    folder.mkdir()
    (folder / "token").write_text(token + "\n")
    (folder / "ca.crt").write_bytes(ca_pem)
    return folder


def client_context(*ca_files: Path) -> Any:
    """An SSL context that trusts only the given CA files."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, no system CAs
    context.load_verify_locations(cadata="".join(p.read_text() for p in ca_files))
    return context
