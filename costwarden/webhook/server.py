"""Run the webhook under uvicorn with TLS that follows certificate rotation.

``serve`` is what ``costwarden webhook serve`` runs. With ``workers > 1`` uvicorn starts that many
processes on one socket, each importing the app through :func:`costwarden.webhook.app.app_from_env`
(settings travel in environment variables) and building its own :class:`ReloadingTLS` context;
Prometheus metrics are then aggregated across workers through ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from costwarden.enforcers.admission import DEFAULT_DEADLINE_S
from costwarden.webhook.app import DEFAULT_MAX_BODY_BYTES, WebhookSettings
from costwarden.webhook.metrics import MULTIPROC_ENV
from costwarden.webhook.tls import ReloadingTLS

APP_FACTORY = "costwarden.webhook.app:app_from_env"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration with costwarden's loggers (reloads, TLS) on its handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["costwarden"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def uvicorn_options(tls_cert: str | os.PathLike[str], tls_key: str | os.PathLike[str], *,
                    log_level: str = "info", access_log: bool = False, tls_interval_s: float = 2.0) -> dict[str, Any]:
    """The uvicorn settings every webhook server uses (also by the tests' in-process server)."""
    return {
        "ssl_certfile": str(tls_cert),
        "ssl_keyfile": str(tls_key),
        "ssl_context_factory": ReloadingTLS(tls_cert, tls_key, interval_s=tls_interval_s),
        "ws": "none",
        "lifespan": "on",
        "log_level": log_level,
        "access_log": access_log,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": 30,  # the API server keeps connections to webhooks open
    }


def serve(policies_dir: str | os.PathLike[str], tls_cert: str | os.PathLike[str], tls_key: str | os.PathLike[str],
          port: int = 8443, workers: int = 1, host: str = "0.0.0.0", *,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, deadline_s: float = DEFAULT_DEADLINE_S,
          reload_interval_s: float = 2.0, log_level: str = "info", access_log: bool = False,
          allow_existing_violations: bool = True) -> None:
    """Serve ``/validate``, ``/mutate``, ``/healthz``, ``/readyz`` and ``/metrics`` over HTTPS until stopped."""
    import uvicorn

    for label, path in (("policy folder", policies_dir), ("TLS certificate", tls_cert), ("TLS key", tls_key)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{label} {os.fspath(path)} does not exist")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    settings = WebhookSettings(str(policies_dir), max_body_bytes, deadline_s, reload_interval_s,
                               allow_existing_violations=allow_existing_violations)
    os.environ.update(settings.to_env())
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="costwarden-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_config=log_config(log_level),
                    **uvicorn_options(tls_cert, tls_key, log_level=log_level, access_log=access_log))
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


__all__ = ["APP_FACTORY", "log_config", "serve", "uvicorn_options"]
