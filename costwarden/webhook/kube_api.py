"""A minimal in-cluster Kubernetes API reader: GET one object with the pod's service account.

The webhook reads the parent of a ``scale`` request (a Deployment, say) to judge it at the new
replica count (:mod:`costwarden.enforcers.scale`), and the ConfigMap a vLLM server's ``--config``
file is mounted from (:mod:`costwarden.enforcers.cluster_reads`). One GET per such request does not justify the
``kubernetes`` client (seconds of import, a thread pool per client): this speaks the one REST call
with the standard library, the way client-go's ``rest.InClusterConfig`` sets it up —

* the server is ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, reached directly:
  ``http.client`` never reads ``HTTPS_PROXY``, so a proxy set for the pod's egress is not used for
  the in-cluster service IP, and no ``NO_PROXY`` entry is needed (client-go would need one);
* the CA is ``ca.crt`` and the bearer token ``token`` in the service-account folder
  (``/var/run/secrets/kubernetes.io/serviceaccount``). Bound tokens are rotated by the kubelet
  in place, so the token is read again for every request (a small file, cached by the kernel);
  the CA bundle (the projected ``kube-root-ca.crt``) is reloaded when the file changes, so a
  rotated API server CA is trusted without a restart.

An HPA storm sends a scale request per HPA sync: connections are kept alive and reused (a new TCP
+ TLS handshake per read costs milliseconds and API server CPU), as many idle ones at most as
reads run at once. A kept-alive connection the server closed is retried once on a fresh one (GET is
idempotent); a ``429`` from API Priority and Fairness is retried once after its ``Retry-After`` when
that fits the read's time. Redirects are not followed (the bearer token goes to the API server only).

The read has its own timeout, below the evaluation deadline, so a slow API server turns into an
``onError`` answer rather than a missed webhook timeout.

>>> api = KubeApi.in_cluster()                                   # doctest: +SKIP
>>> api(ParentRef("apps", "v1", "deployments", "ml", "srv"))     # doctest: +SKIP
>>> api.config_map("ml", "vllm-config")["data"]                  # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from costwarden.enforcers.cluster_reads import config_map_path
from costwarden.enforcers.scale_target import ParentRef
from costwarden.errors import AdapterError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TIMEOUT_S = 1.5
MAX_OBJECT_BYTES = 3 * 1024 * 1024
MAX_IDLE_CONNECTIONS = 4

_Stamp = tuple[int, int, int]


class KubeApi:
    """GETs objects from one API server with a bearer token file; a ``ParentReader``, and
    :meth:`config_map` a ``ConfigMapReader``. Safe to call from several threads at once (each
    read takes a connection of its own)."""

    def __init__(self, host: str, port: int, token_file: str | os.PathLike[str], ca_file: str | os.PathLike[str],
                 *, timeout_s: float = DEFAULT_TIMEOUT_S, max_idle: int = MAX_IDLE_CONNECTIONS) -> None:
        self.host = host
        self.port = port
        self.token_file = Path(token_file)
        self.ca_file = Path(ca_file)
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        """Idle connections kept: as many as reads run at once (the webhook's evaluation threads)."""
        self.connections_opened = 0
        """How many TCP + TLS connections were opened (kept for tests and the benchmark)."""
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPSConnection] = []
        self._stamp = _file_stamp(self.ca_file)
        self._context = ssl.create_default_context(cafile=os.fspath(self.ca_file))

    @classmethod
    def in_cluster(cls, account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
                   environ: Mapping[str, str] | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                   max_idle: int = MAX_IDLE_CONNECTIONS) -> KubeApi | None:
        """The pod's API server, or None outside a cluster (no service host, token or CA)."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        folder = Path(account_dir)
        if not host or not port.isdigit() or not (folder / "token").is_file() or not (folder / "ca.crt").is_file():
            return None
        return cls(host, int(port), folder / "token", folder / "ca.crt", timeout_s=timeout_s, max_idle=max_idle)

    def __call__(self, ref: ParentRef) -> dict[str, Any]:
        return self.get(ref.path)

    def config_map(self, namespace: str, name: str) -> dict[str, Any]:
        """The ConfigMap ``namespace/name`` (read fresh each time: an edit applies at once)."""
        return self.get(config_map_path(namespace, name))

    def get(self, path: str) -> dict[str, Any]:
        """The JSON object at ``path``; raises :class:`AdapterError` saying what went wrong."""
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AdapterError(f"cannot read the service account token: {exc.strerror or exc}") from None
        deadline = time.monotonic() + self.timeout_s
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        retried_stale = retried_busy = False
        while True:
            connection, reused = self._checkout(deadline)
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read(MAX_OBJECT_BYTES + 1)
            except (OSError, http.client.HTTPException, UnicodeError) as exc:  # refused, TLS, timeout, cut off
                connection.close()
                if reused and not retried_stale and not isinstance(exc, TimeoutError):
                    retried_stale = True  # the server closed the idle connection: once more on a new one
                    continue
                raise AdapterError(f"GET {path} failed: {type(exc).__name__}: {exc}") from None
            self._checkin(connection, response)
            if response.status == 429 and not retried_busy:
                wait = _retry_after(response.getheader("Retry-After"))
                if wait is not None and time.monotonic() + wait < deadline - 0.05:
                    retried_busy = True
                    time.sleep(wait)
                    continue
            break
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

    def close(self) -> None:
        """Close the idle connections (a later read opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _checkout(self, deadline: float) -> tuple[http.client.HTTPSConnection, bool]:
        """An idle connection (True) or a new one (False), its timeout what is left of the read's."""
        remaining = max(deadline - time.monotonic(), 0.001)
        context = self._current_context()
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(remaining)
            return connection, True
        with self._lock:
            self.connections_opened += 1
        return http.client.HTTPSConnection(self.host, self.port, timeout=remaining, context=context), False

    def _checkin(self, connection: http.client.HTTPSConnection, response: http.client.HTTPResponse) -> None:
        """Keep a connection whose answer was read in full and that the server keeps open."""
        if response.will_close or not response.isclosed():
            connection.close()
            return
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _current_context(self) -> ssl.SSLContext:
        """The TLS context, rebuilt when ``ca.crt`` changed (the kubelet swaps projected files
        atomically); a file that cannot be loaded keeps the previous context. Idle connections
        made under the old CA are dropped."""
        stamp = _file_stamp(self.ca_file)
        if stamp == self._stamp:
            return self._context
        try:
            context = ssl.create_default_context(cafile=os.fspath(self.ca_file))
        except (OSError, ssl.SSLError, ValueError):
            return self._context
        with self._lock:
            self._stamp, self._context = stamp, context
        self.close()
        return context


def _file_stamp(path: Path) -> _Stamp:
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the API server sends whole seconds), None when absent or a date."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _status_message(body: bytes) -> str:
    """The ``message`` of a ``Status`` the API server answers errors with, else ''."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:200] if message else ""


__all__ = ["DEFAULT_TIMEOUT_S", "MAX_IDLE_CONNECTIONS", "SERVICE_ACCOUNT_DIR", "KubeApi"]
