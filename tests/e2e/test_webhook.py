"""The admission webhook end to end: uvicorn on loopback, real TLS, a client that verifies the CA.

AdmissionReviews are built from the corpora's real manifests and the recorded cloud-custodian
admission events; verdicts are compared with the engine's own (one engine, one verdict) and
returned patches are applied with the ``jsonpatch`` library.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from webhook_support import (
    CORPORA,
    EVENTS,
    POLICIES,
    ROOT,
    ConfigMapDir,
    ServerThread,
    admission_review,
    client_context,
    corpus_objects,
    with_namespace,
    write_policies,
)

from costwarden.adapters.sources import subjects_from_text
from costwarden.api import load_policies
from costwarden.engine.decision import Decision
from costwarden.engine.evaluate import PolicySet
from costwarden.webhook.app import WebhookSettings, create_app
from costwarden.webhook.reload import PolicyReloader
from costwarden.webhook.tls import CertFiles, generate_certs

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "ml"},
    "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "t", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}},
}
ONLY_WARN = POLICIES.split("---")[3]
BROKEN = POLICIES.replace("requireTags:", "requireTagz:", 1)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs("costwarden-webhook", "costwarden", tmp_path_factory.mktemp("certs"), days=2)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("policies"))


@pytest.fixture(scope="module")
def engine(policy_dir: Path) -> PolicySet:
    return load_policies(policy_dir)


@pytest.fixture(scope="module")
def server(certs: CertFiles, policy_dir: Path) -> Iterator[ServerThread]:
    app = create_app(WebhookSettings(str(policy_dir)))
    with ServerThread(app, certs.cert, certs.key) as running:
        assert app.state.webhook.reloader.wait_ready(60)
        yield running


@pytest.fixture
def client(server: ServerThread, certs: CertFiles) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        yield c


def post(client: httpx.Client, path: str, review: dict[str, Any]) -> dict[str, Any]:
    reply = client.post(path, content=json.dumps(review), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == review["request"]["uid"]
    response: dict[str, Any] = body["response"]
    return response


def apply(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    patched: dict[str, Any] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    return patched


def engine_decisions(engine: PolicySet, obj: dict[str, Any]) -> list[Decision]:
    """What `costwarden check --surface admission` decides for the object in a manifest file."""
    text = yaml.safe_dump(with_namespace(obj), sort_keys=False)
    return [engine.evaluate(s, "admission") for s in subjects_from_text(text, file="manifest.yaml")]


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    return metrics(client).get((name, tuple(sorted(labels.items()))), 0.0)


# --- serving ----------------------------------------------------------------------------------------


def test_health_readiness_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["policies"] == 4
    post(client, "/validate", admission_review(JOB))
    text = client.get("/metrics").text
    for name in ("costwarden_webhook_request_duration_seconds_bucket", "costwarden_webhook_results_total",
                 "costwarden_webhook_policy_reload_success", "costwarden_webhook_policy_reload_errors_total",
                 "costwarden_webhook_in_flight_requests"):
        assert name in text, name
    assert metric(client, "costwarden_webhook_results_total", policy="cost-labels", rule="labels",
                  result="fail") >= 1
    assert metric(client, "costwarden_webhook_policy_reload_success") == 1


def test_tls_is_verified_and_at_least_1_2(server: ServerThread, certs: CertFiles, tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, server.port)) as raw, \
                client_context(certs.ca_cert).wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    other = generate_certs("svc", "ns", tmp_path)
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=client_context(other.ca_cert)) as stranger:
        stranger.get(f"{server.url}/healthz")
    tls12 = client_context(certs.ca_cert)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port)) as raw, \
            tls12.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.2"
    assert server.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    old = client_context(certs.ca_cert)
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)), socket.create_connection(("127.0.0.1", server.port)) as raw:
        old.wrap_socket(raw, server_hostname="localhost")


# --- verdicts on real objects -------------------------------------------------------------------------


def test_corpora_same_verdict_as_the_engine_and_patches_pass(client: httpx.Client, engine: PolicySet) -> None:
    if not CORPORA.is_dir():
        pytest.skip("shared corpora not present")
    judged = fixed = denied = 0
    for where, obj in corpus_objects():
        decisions = engine_decisions(engine, obj)
        response = post(client, "/validate", admission_review(obj))
        assert response["allowed"] is all(d.allowed for d in decisions), where
        blocking = [r for d in decisions for r in d.blocking]
        for r in blocking:
            assert f"[{r.policy}/{r.rule}]" in response["status"]["message"], where
        assert ("status" in response) is bool(blocking)
        assert len(response.get("warnings", [])) == len({(r.policy, r.rule, r.message) for d in decisions
                                                         for r in d.warnings}), where
        judged += bool(decisions and decisions[0].results)
        denied += bool(blocking)

        mutation = post(client, "/mutate", admission_review(obj))
        assert mutation["allowed"] is True and "status" not in mutation
        patched = apply(copy.deepcopy(obj), mutation)
        again = post(client, "/mutate", admission_review(patched))
        assert "patch" not in again, f"{where}: re-invoking /mutate changed the object again"
        if blocking and all(r.fix and r.fix.target == "object" for r in blocking):
            assert post(client, "/validate", admission_review(patched))["allowed"] is True, where
            fixed += 1
    assert judged > 150 and denied > 80 and fixed > 80, (judged, denied, fixed)


@pytest.fixture(scope="module")
def builtin_client(certs: CertFiles) -> Iterator[httpx.Client]:
    from costwarden.api import builtin_library_path

    app = create_app(WebhookSettings(str(builtin_library_path())))
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        assert app.state.webhook.reloader.wait_ready(60)
        yield c


def test_corpora_builtin_library_same_verdict_as_check(builtin_client: httpx.Client,
                                                      builtin_policies: PolicySet) -> None:
    """The built-in library (vLLM serving rules included) judges like `costwarden check --surface admission`."""
    if not CORPORA.is_dir():
        pytest.skip("shared corpora not present")
    serving = 0
    for where, obj in corpus_objects():
        decisions = engine_decisions(builtin_policies, obj)
        serving += sum(d.subject.type == "serving_config" for d in decisions)
        response = post(builtin_client, "/validate", admission_review(obj))
        assert response["allowed"] is all(d.allowed for d in decisions), where
        for r in (r for d in decisions for r in d.blocking):
            assert f"[{r.policy}/{r.rule}]" in response["status"]["message"], where
        # messages may name the manifest file, and identical warnings are sent once
        expected = {f"costwarden {r.policy}/{r.rule}" for d in decisions for r in d.warnings}
        assert {w.split(": ")[0] for w in response.get("warnings", [])} == expected, where
    assert serving > 0, "no serving_config subjects: is the vLLM detector wired into costwarden check?"


def test_recorded_admission_events(client: httpx.Client, engine: PolicySet) -> None:
    if not EVENTS.is_dir():
        pytest.skip("shared corpora not present")
    for path in sorted(EVENTS.glob("*.json")):
        event = json.loads(path.read_text())
        obj = event["request"]["object"]
        response = post(client, "/validate", event)
        assert response["allowed"] is all(d.allowed for d in engine_decisions(engine, obj))
        assert response["allowed"] is False and "[cost-labels/labels]" in response["status"]["message"]
        patched = apply(copy.deepcopy(obj), post(client, "/mutate", event))
        assert patched["metadata"]["labels"]["cost.example.com/center"] == "shared"
        assert post(client, "/validate", {**event, "request": {**event["request"], "object": patched}})["allowed"]


def test_updates_deletes_subresources_and_dry_run(client: httpx.Client) -> None:
    labelled = copy.deepcopy(JOB)
    labelled["spec"]["template"]["metadata"] = {"labels": {"team": "ml", "cost.example.com/center": "r"}}
    labelled["spec"]["template"]["spec"]["nodeSelector"] = {"karpenter.sh/capacity-type": "spot"}
    assert post(client, "/validate", admission_review(labelled, operation="UPDATE", old=JOB))["allowed"]
    assert not post(client, "/validate", admission_review(JOB, operation="UPDATE", old=labelled))["allowed"]
    assert post(client, "/validate", admission_review(None, operation="DELETE", old=JOB))["allowed"]
    assert post(client, "/validate", admission_review(JOB, operation="UPDATE", old=JOB, sub_resource="status"))[
        "allowed"]
    dry = post(client, "/validate", admission_review(JOB, dry_run=True))
    assert dry["allowed"] is False  # the same verdict, and nothing recorded anywhere


# --- bad requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code"), [
    (b"", "invalid-json"), (b"{not json", "invalid-json"), (b"[1, 2]", "invalid-admission-review"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}',
     "invalid-admission-review"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
     "invalid-admission-review"),
    (b"\xff\xfe\x00", "invalid-json"), (b"[" * 100_000, "invalid-json"),
])
def test_malformed_bodies_get_400_with_a_json_error(client: httpx.Client, body: bytes, code: str) -> None:
    for path in ("/validate", "/mutate"):
        reply = client.post(path, content=body)
        assert reply.status_code == 400
        assert reply.json()["error"]["code"] == code


def test_oversized_bodies_are_refused_before_parsing(client: httpx.Client) -> None:
    big = b'{"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    reply = client.post("/validate", content=big)
    assert reply.status_code == 413 and "3145728 byte limit" in reply.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no content-length: counted while streaming
        for _ in range(4):
            yield b"x" * (1024 * 1024)

    assert client.post("/validate", content=chunks()).status_code == 413
    assert client.get("/healthz").status_code == 200


def test_a_client_gone_mid_body_is_counted_not_a_traceback(server: ServerThread, certs: CertFiles,
                                                           client: httpx.Client,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    before = metric(client, "costwarden_webhook_requests_total", endpoint="validate", outcome="bad_request")
    with caplog.at_level(logging.WARNING):
        with socket.create_connection(("127.0.0.1", server.port)) as raw, \
                client_context(certs.ca_cert).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"POST /validate?timeout=5s HTTP/1.1\r\nHost: webhook\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"")
            time.sleep(0.2)
        _eventually(lambda: metric(client, "costwarden_webhook_requests_total", endpoint="validate",
                                   outcome="bad_request") > before, 10)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert client.get("/healthz").status_code == 200


# --- load ---------------------------------------------------------------------------------------------


def test_many_parallel_requests(server: ServerThread, certs: CertFiles, engine: PolicySet) -> None:
    reviews = [admission_review(JOB if i % 2 else {**JOB, "kind": "Widget", "apiVersion": "example.com/v1"})
               for i in range(400)]
    with httpx.Client(base_url=server.url, verify=client_context(certs.ca_cert), timeout=30,
                      limits=httpx.Limits(max_connections=64)) as shared, ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(lambda r: post(shared, "/validate", r), reviews))
    assert [r["allowed"] for r in responses] == [i % 2 == 0 for i in range(400)]


def _hammer(url: str, ca: Path, stop: threading.Event, seen: list[tuple[int, bool | None]]) -> None:
    with httpx.Client(base_url=url, verify=client_context(ca), timeout=30) as c:
        while not stop.is_set():
            reply = c.post("/validate", content=json.dumps(admission_review(JOB)))
            seen.append((reply.status_code, reply.json().get("response", {}).get("allowed")))


def _eventually(check: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_hot_reload_under_load_keeps_the_last_good_set(certs: CertFiles, tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "policies")
    folder.publish({"policies.yaml": POLICIES})
    app = create_app(WebhookSettings(str(folder.root), reload_interval_s=0.1))
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert)) as c:
        _eventually(lambda: c.get("/readyz").status_code == 200)

        def verdict() -> bool:
            return bool(post(c, "/validate", admission_review(JOB))["allowed"])

        stop, seen = threading.Event(), []  # type: ignore[var-annotated]
        workers = [threading.Thread(target=_hammer, args=(running.url, certs.ca_cert, stop, seen)) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            assert verdict() is False
            folder.publish({"policies.yaml": ONLY_WARN})
            _eventually(verdict)
            folder.publish({"policies.yaml": BROKEN})
            _eventually(lambda: metric(c, "costwarden_webhook_policy_reload_errors_total") >= 1)
            assert metric(c, "costwarden_webhook_policy_reload_success") == 0
            assert verdict() is True and c.get("/readyz").status_code == 200  # still the last good set
            assert "requireTagz" in c.get("/readyz").json()["last_error"]
            folder.publish({"policies.yaml": POLICIES})
            _eventually(lambda: not verdict())
            assert metric(c, "costwarden_webhook_policy_reload_success") == 1
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert len(seen) > 20 and all(status == 200 and allowed is not None for status, allowed in seen)
    assert {allowed for _, allowed in seen} == {True, False}


def test_not_ready_until_the_policies_compile(certs: CertFiles, tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "policies")
    folder.publish({"policies.yaml": BROKEN})
    app = create_app(WebhookSettings(str(folder.root), reload_interval_s=0.1))
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert)) as c:
        _eventually(lambda: c.get("/readyz").json()["error"] is not None)
        assert c.get("/readyz").status_code == 503
        assert c.post("/validate", content=json.dumps(admission_review(JOB))).status_code == 503
        assert c.get("/healthz").status_code == 200
        folder.publish({"policies.yaml": POLICIES})
        _eventually(lambda: c.get("/readyz").status_code == 200)
        assert post(c, "/validate", admission_review(JOB))["allowed"] is False


def test_an_emptied_policy_folder_never_replaces_the_last_good_set(certs: CertFiles, tmp_path: Path) -> None:
    # A ConfigMap whose data was emptied (or whose only file became empty) compiles to zero
    # policies; installing that would allow everything while /readyz says ready.
    folder = ConfigMapDir(tmp_path / "policies")
    folder.publish({"policies.yaml": POLICIES})
    app = create_app(WebhookSettings(str(folder.root), reload_interval_s=0.1))
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert)) as c:
        _eventually(lambda: c.get("/readyz").status_code == 200)
        assert post(c, "/validate", admission_review(JOB))["allowed"] is False
        for files in ({"policies.yaml": ""}, {}, {"policies.yaml": "# all policies removed\n"}):
            errors = metric(c, "costwarden_webhook_policy_reload_errors_total")
            folder.publish(files)

            def failed_again(before: float = errors) -> bool:
                return metric(c, "costwarden_webhook_policy_reload_errors_total") > before

            _eventually(failed_again)
            assert post(c, "/validate", admission_review(JOB))["allowed"] is False  # still enforced
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["policies"] == 4
            assert "no policies" in ready.json()["last_error"]
            assert metric(c, "costwarden_webhook_policies") == 4
            assert metric(c, "costwarden_webhook_policy_reload_success") == 0


def test_an_empty_policy_folder_is_never_ready(certs: CertFiles, tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "policies")
    folder.publish({"policies.yaml": ""})
    app = create_app(WebhookSettings(str(folder.root), reload_interval_s=0.1))
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert)) as c:
        _eventually(lambda: c.get("/readyz").json().get("error") is not None
                    or c.get("/readyz").status_code == 200)
        assert c.get("/readyz").status_code == 503
        assert "no policies" in c.get("/readyz").json()["error"]
        assert c.post("/validate", content=json.dumps(admission_review(JOB))).status_code == 503
        folder.publish({"policies.yaml": POLICIES})
        _eventually(lambda: c.get("/readyz").status_code == 200)
        assert post(c, "/validate", admission_review(JOB))["allowed"] is False


def test_evaluation_deadline_answers_instead_of_hanging(certs: CertFiles, policy_dir: Path) -> None:
    def slow_loader(directory: str) -> PolicySet:
        import dataclasses

        def sleepy(subject: Any, ctx: Any) -> Any:
            time.sleep(1.0)

        loaded = load_policies(directory, pricer=None)
        slowed = tuple(dataclasses.replace(p, rules=tuple(dataclasses.replace(r, check=sleepy) for r in p.rules))
                       for p in loaded.policies)
        return PolicySet(slowed, loaded.exemptions, loaded.catalog, loaded.pricer)

    reloader = PolicyReloader(policy_dir, loader=slow_loader)
    app = create_app(WebhookSettings(str(policy_dir), deadline_s=0.2, eval_threads=2), reloader=reloader)
    with ServerThread(app, certs.cert, certs.key) as running, \
            httpx.Client(base_url=running.url, verify=client_context(certs.ca_cert), timeout=30) as c:
        assert reloader.wait_ready(30)
        started = time.monotonic()
        response = post(c, "/validate", admission_review(JOB))
        assert time.monotonic() - started < 0.9
        assert response["allowed"] is False and "0.2s admission deadline" in response["status"]["message"]
        assert metric(c, "costwarden_webhook_requests_total", endpoint="validate", outcome="deadline") == 1
        time.sleep(1.1)  # let the abandoned evaluation finish before the pool shuts down


# --- TLS rotation -----------------------------------------------------------------------------------------


def _peer(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_rotated_certificates_are_served_without_a_restart(policy_dir: Path, tmp_path: Path) -> None:
    one = generate_certs("costwarden-webhook", "costwarden", tmp_path / "one")
    two = generate_certs("costwarden-webhook", "costwarden", tmp_path / "two")
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "one", live)
    both = client_context(one.ca_cert, two.ca_cert)  # caBundle with the old and the new CA
    app = create_app(WebhookSettings(str(policy_dir)))
    with ServerThread(app, live / "tls.crt", live / "tls.key", tls_interval_s=0.1) as running:
        assert _peer(running.port, both) == _der(one.cert)
        with httpx.Client(base_url=running.url, verify=both) as c:
            assert c.get("/healthz").status_code == 200
            for name in ("tls.key", "tls.crt"):  # cert-manager updates the Secret's files
                os.replace(shutil.copy(two.cert.parent / name, live / f".{name}.new"), live / name)
            _eventually(lambda: _peer(running.port, both) == _der(two.cert), 10)
            assert c.get("/healthz").status_code == 200
        assert running.tls.reloads == 2
        with pytest.raises(ssl.SSLCertVerificationError):
            _peer(running.port, client_context(one.ca_cert))


def _rsa_serving_pair(ca: CertFiles, ca_key_pem: bytes, out: Path) -> Path:
    """tls.crt/tls.key with an RSA key (cert-manager's default) signed by ``ca``, in ``out``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "rsa-serving")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    out.mkdir()
    (out / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out / "tls.crt"


def test_rotation_to_another_key_type_serves_only_the_new_certificate(policy_dir: Path, tmp_path: Path) -> None:
    # An SSL context holds one certificate per key type: loading an RSA pair over an ECDSA one
    # kept serving the old ECDSA certificate (until it expired, or its CA left the caBundle).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from costwarden.webhook.tls import generate_ca

    one = generate_certs("costwarden-webhook", "costwarden", tmp_path / "one")
    ca_cert, ca_key = generate_ca("rsa-rotation-ca")
    (tmp_path / "ca2").mkdir()
    ca2 = CertFiles(tmp_path / "ca2" / "ca.crt", tmp_path / "unused", tmp_path / "unused")
    ca2.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    rsa_cert = _rsa_serving_pair(ca2, ca_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()), tmp_path / "rsa")
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "one", live)
    app = create_app(WebhookSettings(str(policy_dir)))
    with ServerThread(app, live / "tls.crt", live / "tls.key", tls_interval_s=0.1) as running:
        both = client_context(one.ca_cert, ca2.ca_cert)
        assert _peer(running.port, both) == _der(one.cert)
        for name in ("tls.key", "tls.crt"):
            os.replace(shutil.copy(rsa_cert.parent / name, live / f".{name}.new"), live / name)
        _eventually(lambda: running.tls.reloads == 2, 10)
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            client = client_context(ca2.ca_cert)  # the old CA has left the caBundle
            client.maximum_version = version
            assert _peer(running.port, client) == _der(rsa_cert)
        with httpx.Client(base_url=running.url, verify=client_context(ca2.ca_cert)) as c:
            assert c.get("/healthz").status_code == 200  # an IP address: no SNI, the new pair all the same


# --- the command, with two workers -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_command_with_two_workers(certs: CertFiles, policy_dir: Path) -> None:
    port = _free_port()
    code = "from costwarden.webhook.cli import webhook_app; webhook_app()"
    args = [sys.executable, "-c", code, "serve", "--policies", str(policy_dir), "--tls-cert", str(certs.cert),
            "--tls-key", str(certs.key), "--port", str(port), "--workers", "2", "--host", "127.0.0.1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTWARDEN_WEBHOOK_", "PROMETHEUS_"))}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=client_context(certs.ca_cert)) as c:
            def ready() -> bool:
                try:
                    return c.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            _eventually(ready, 90)
            for _ in range(20):
                assert post(c, "/validate", admission_review(JOB))["allowed"] is False
            # every worker's counts, whichever worker answers the scrape
            _eventually(lambda: metric(c, "costwarden_webhook_requests_total", endpoint="validate",
                                       outcome="denied") == 20, 10)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
