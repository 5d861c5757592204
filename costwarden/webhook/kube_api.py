"""A minimal in-cluster Kubernetes API reader: GET one object with the pod's service account.

The webhook reads the parent of a ``scale`` request (a Deployment, say) to judge it at the new
replica count (:mod:`costwarden.enforcers.scale`). One GET per scale request does not justify the
``kubernetes`` client (seconds of import, a thread pool per client): this speaks the one REST call
with the standard library, the way client-go's ``rest.InClusterConfig`` sets it up —

* the server is ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``;
* the CA is ``ca.crt`` and the bearer token ``token`` in the service-account folder
  (``/var/run/secrets/kubernetes.io/serviceaccount``). Bound tokens are rotated by the kubelet
  in place, so the token is read again for every request (a small file, cached by the kernel).

The read has its own timeout, below the evaluation deadline, so a slow API server turns into an
``onError`` answer rather than a missed webhook timeout.

>>> api = KubeApi.in_cluster()                                   # doctest: +SKIP
>>> api(ParentRef("apps", "v1", "deployments", "ml", "srv"))     # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from costwarden.enforcers.scale_target import ParentRef
from costwarden.errors import AdapterError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TIMEOUT_S = 1.5
MAX_OBJECT_BYTES = 3 * 1024 * 1024


class KubeApi:
    """GETs objects from one API server with a bearer token file; a ``ParentReader``."""

    def __init__(self, host: str, port: int, token_file: str | os.PathLike[str], ca_file: str | os.PathLike[str],
                 *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.token_file = Path(token_file)
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=os.fspath(ca_file))

    @classmethod
    def in_cluster(cls, account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
                   environ: Mapping[str, str] | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> KubeApi | None:
        """The pod's API server, or None outside a cluster (no service host, token or CA)."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        folder = Path(account_dir)
        if not host or not port.isdigit() or not (folder / "token").is_file() or not (folder / "ca.crt").is_file():
            return None
        return cls(host, int(port), folder / "token", folder / "ca.crt", timeout_s=timeout_s)

    def __call__(self, ref: ParentRef) -> dict[str, Any]:
        return self.get(ref.path)

    def get(self, path: str) -> dict[str, Any]:
        """The JSON object at ``path``; raises :class:`AdapterError` saying what went wrong."""
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AdapterError(f"cannot read the service account token: {exc.strerror or exc}") from None
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._context)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                                     "Accept": "application/json"})
            response = connection.getresponse()
            body = response.read(MAX_OBJECT_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:  # refused, TLS, timeout, cut off
            raise AdapterError(f"GET {path} failed: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise AdapterError(f"GET {path}: HTTP {response.status} {_status_message(body) or response.reason}")
        if len(body) > MAX_OBJECT_BYTES:
            raise AdapterError(f"GET {path}: the object is larger than {MAX_OBJECT_BYTES} bytes")
        try:
            obj = json.loads(body)
        except ValueError:
            raise AdapterError(f"GET {path}: the answer is not JSON") from None
        if not isinstance(obj, dict):
            raise AdapterError(f"GET {path}: the answer is not a JSON object")
        return obj


def _status_message(body: bytes) -> str:
    """The ``message`` of a ``Status`` the API server answers errors with, else ''."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:200] if message else ""


__all__ = ["DEFAULT_TIMEOUT_S", "SERVICE_ACCOUNT_DIR", "KubeApi"]
