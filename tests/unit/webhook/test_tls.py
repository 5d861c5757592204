"""Certificates for the webhook and the TLS context that follows rotation."""

from __future__ import annotations

import ipaddress
import pickle
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from costwarden.webhook.tls import ReloadingTLS, generate_certs, server_context


def test_generate_certs_names_the_service_and_local_hosts(tmp_path: Path) -> None:
    files = generate_certs("costwarden-webhook", "cw", tmp_path / "certs", days=30)
    assert {p.name for p in (tmp_path / "certs").iterdir()} == {"ca.crt", "tls.crt", "tls.key"}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca_pem)
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "costwarden-webhook", "costwarden-webhook.cw", "costwarden-webhook.cw.svc",
        "costwarden-webhook.cw.svc.cluster.local", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert 29 <= (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 31


def test_server_context_is_tls12_or_newer() -> None:
    assert server_context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_reloading_context_loads_pairs_and_skips_mismatched_ones(tmp_path: Path) -> None:
    one = generate_certs("svc", "ns", tmp_path / "one")
    two = generate_certs("svc", "ns", tmp_path / "two")
    tls = ReloadingTLS(one.cert, one.key, interval_s=0.1)
    pickle.loads(pickle.dumps(tls))  # uvicorn hands the factory to worker processes
    context = tls()
    assert tls.reloads == 1 and tls.check() is False  # unchanged files: nothing to do
    one.cert.write_bytes(two.cert.read_bytes())  # certificate rotated before its key
    assert tls.check() is False and tls.reloads == 1
    one.key.write_bytes(two.key.read_bytes())
    assert tls.check() is True and tls.reloads == 2
    assert tls.context is context  # the live context was reloaded, not replaced


def test_missing_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLError):
        ReloadingTLS(tmp_path / "nope.crt", tmp_path / "nope.key")()
