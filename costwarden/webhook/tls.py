"""TLS for the webhook: a CA and a serving certificate, and a server context that follows rotation.

``generate_certs`` writes ``ca.crt``, ``tls.crt`` and ``tls.key`` (ECDSA P-256) for a Service; the
CA goes into the webhook configurations' ``caBundle``. :class:`ReloadingTLS` is the
``ssl_context_factory`` the server hands to uvicorn: it builds a TLS 1.2+ context and, every
``interval_s``, re-reads the certificate and key files (cert-manager rewrites them in the mounted
Secret) and loads a changed pair into the *live* context, so new handshakes present the new
certificate without a restart. A pair that does not match (the key written before the
certificate, say) is checked on a scratch context first and skipped until it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger("costwarden.webhook.tls")

CLOCK_SKEW = dt.timedelta(minutes=5)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where :func:`generate_certs` wrote the CA, the serving certificate and its key."""

    ca_cert: Path
    cert: Path
    key: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a Service (it uses ``<svc>.<ns>.svc``)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "costwarden"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


KeyPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def generate_ca(common_name: str = "costwarden-webhook-ca", days: int = 365) -> KeyPair:
    """A self-signed CA that may only sign leaf certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: Sequence[str],
                       days: int = 365) -> KeyPair:
    """A server certificate for ``hosts`` (DNS names or IP addresses) signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (a running server never reads half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def generate_certs(service: str, namespace: str, out_dir: str | os.PathLike[str], days: int = 365, *,
                   extra_hosts: Sequence[str] = LOCAL_HOSTS) -> CertFiles:
    """Write ``ca.crt``, ``tls.crt`` and ``tls.key`` for ``service`` in ``namespace`` to ``out_dir``.

    The serving certificate names the Service in all its forms plus ``extra_hosts`` (localhost and
    loopback by default, for local runs). The CA key is not kept: to rotate, generate a new set
    and put both CAs in the ``caBundle`` until every replica serves the new certificate.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = generate_ca(f"costwarden-webhook-ca.{namespace}", days)
    cert, key = issue_serving_cert(ca_cert, ca_key, [*service_hosts(service, namespace), *extra_hosts], days)
    files = CertFiles(out / "ca.crt", out / "tls.crt", out / "tls.key")
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(files.key, key_pem, 0o600)
    return files


def server_context() -> ssl.SSLContext:
    """A server context that speaks TLS 1.2 and 1.3 only, HTTP/1.1, no renegotiation."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@contextlib.contextmanager
def _as_files(cert: bytes, key: bytes) -> Iterator[tuple[str, str]]:
    """The two PEMs as paths ``load_cert_chain`` can read: memory files on Linux, a private
    temporary folder elsewhere. Loading from one snapshot keeps the check and the load consistent."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create("costwarden-tls"), os.memfd_create("costwarden-tls")]
        try:
            for fd, data in zip(fds, (cert, key), strict=True):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="costwarden-tls-") as folder:
        paths = (Path(folder, "tls.crt"), Path(folder, "tls.key"))
        for path, data in zip(paths, (cert, key), strict=True):
            _write(path, data, 0o600)
        yield str(paths[0]), str(paths[1])


class ReloadingTLS:
    """A TLS 1.2+ server context whose certificate follows the files on disk.

    Use it as uvicorn's ``ssl_context_factory``; it is picklable until called, so uvicorn can
    hand it to each worker process::

        uvicorn.run(app, ssl_certfile=cert, ssl_keyfile=key, ssl_context_factory=ReloadingTLS(cert, key))

    Called inside the server's event loop, it re-checks the files every ``interval_s`` on that
    loop (so the live context is never changed while the loop is in a handshake). Elsewhere, call
    :meth:`check` yourself.
    """

    def __init__(self, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str], *,
                 interval_s: float = 2.0) -> None:
        self.cert_file = str(cert_file)
        self.key_file = str(key_file)
        self.interval_s = interval_s
        self.context: ssl.SSLContext | None = None
        self._serving: ssl.SSLContext | None = None  # holds only the newest pair; see _select
        self.reloads = 0
        self._loaded: tuple[bytes, bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cert_file": self.cert_file, "key_file": self.key_file, "interval_s": self.interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cert_file"], state["key_file"], interval_s=state["interval_s"])  # type: ignore[misc]

    def __call__(self, config: Any = None,
                 default_factory: Callable[[], ssl.SSLContext] | None = None) -> ssl.SSLContext:
        self.context = server_context()
        if not self.check():
            raise ssl.SSLError(f"cannot load TLS certificate {self.cert_file} with key {self.key_file}")
        self.context.sni_callback = self._select
        self._schedule()
        return self.context

    def _select(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        # A context keeps one certificate per key type, so loading an RSA pair into the live
        # context after an ECDSA one would leave the old ECDSA certificate served. Each handshake
        # (the callback runs with or without SNI) switches to a context holding only the newest pair.
        serving = self._serving
        if serving is not None and ssl_object.context is not serving:
            ssl_object.context = serving

    def check(self) -> bool:
        """Load the files into the live context if they changed and form a valid pair.
        Returns True when a new pair was loaded."""
        if self.context is None:
            raise ValueError("call the factory first")
        try:
            pair = (Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes())
        except OSError as exc:
            logger.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return False
        if pair == self._loaded:
            return False
        with _as_files(*pair) as (cert, key):
            serving = server_context()
            try:
                serving.load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as exc:
                logger.warning("TLS certificate and key do not form a valid pair yet (%s); keeping the current one",
                               exc)
                return False
            self.context.load_cert_chain(cert, key)
        self._serving = serving
        if self._loaded is not None:
            logger.info("TLS certificate reloaded from %s", self.cert_file)
        self._loaded = pair
        self.reloads += 1
        return True

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        try:
            self.check()
        except Exception:
            logger.exception("TLS reload check failed")
        self._schedule()


__all__ = ["CertFiles", "ReloadingTLS", "generate_ca", "generate_certs", "issue_serving_cert", "server_context",
           "service_hosts"]
