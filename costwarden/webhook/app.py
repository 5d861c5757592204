"""The webhook's HTTP surface (FastAPI): ``/validate``, ``/mutate``, ``/healthz``, ``/readyz``, ``/metrics``.

The response format lives in :mod:`costwarden.enforcers.admission`; this module reads the body
(refusing oversized ones before parsing, 413), parses it with orjson (malformed → 400 with a JSON
error, never a 500), runs the synchronous engine on a small thread pool under the evaluation
deadline, and records metrics. The policy set comes from a :class:`PolicyReloader`; until it has
compiled, ``/readyz`` and the admission endpoints answer 503 so the API server applies the
webhook's ``failurePolicy`` and Kubernetes routes nothing to the pod.

``app_from_env`` is the factory uvicorn imports in each worker; settings travel in
``COSTWARDEN_WEBHOOK_*`` environment variables (see :class:`WebhookSettings`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from costwarden.enforcers.admission import DEFAULT_DEADLINE_S, AdmissionResult, deadline_result, judge, parse
from costwarden.errors import AdapterError
from costwarden.webhook.kube_api import DEFAULT_TIMEOUT_S, SERVICE_ACCOUNT_DIR, KubeApi
from costwarden.webhook.metrics import WebhookMetrics
from costwarden.webhook.reload import PolicyReloader, ReloadResult

logger = logging.getLogger("costwarden.webhook")

DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024
ENV_PREFIX = "COSTWARDEN_WEBHOOK_"
GC_THRESHOLD = 50_000


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Server settings; each field can come from ``COSTWARDEN_WEBHOOK_<FIELD>`` (upper case)."""

    policies_dir: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S
    reload_interval_s: float = 2.0
    eval_threads: int = 4
    allow_existing_violations: bool = True
    """An UPDATE is not denied for a violation the old object had, no worse (Kyverno's default)."""
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    """Token and CA for reading the parents of ``scale`` requests and the ConfigMaps of vLLM
    ``--config`` files (with ``KUBERNETES_SERVICE_*``)."""

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _PARSERS[str(f.type)](raw)
        if "policies_dir" not in values:
            raise ValueError(f"{ENV_PREFIX}POLICIES_DIR is not set")
        return cls(**values)


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {raw!r}")
    return text in ("true", "1")


_PARSERS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": _flag}


def _json(status: int, payload: Mapping[str, Any]) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": {"code": code, "message": message}})


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to pass ``limit`` bytes (before any parsing)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Webhook:
    """The state behind one app: settings, the policy reloader, metrics and the evaluation pool."""

    def __init__(self, settings: WebhookSettings, reloader: PolicyReloader | None = None) -> None:
        self.settings = settings
        # None outside a cluster: scale requests then get each policy's onError answer, and vLLM
        # --config files mounted from ConfigMaps stay "cannot be judged", saying so.
        self.kube_api = KubeApi.in_cluster(settings.service_account_dir,
                                           timeout_s=min(DEFAULT_TIMEOUT_S, settings.deadline_s * 0.75),
                                           max_idle=settings.eval_threads)
        self.metrics = WebhookMetrics()
        self.reloader = reloader or PolicyReloader(settings.policies_dir, interval_s=settings.reload_interval_s)
        self.reloader.on_result = self._reloaded
        self.executor: ThreadPoolExecutor | None = None

    def _reloaded(self, result: ReloadResult) -> None:
        self.metrics.observe_reload(result)
        if result.ok:
            # The compiled set, pricing data and imports are long-lived: keep them out of the
            # garbage collector's full passes, which otherwise show up as admission latency spikes.
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    def start(self) -> None:
        # Each review allocates a few thousand short-lived objects; CPython's default generation-0
        # threshold (700) then runs collections, and their gen-2 passes, every few requests.
        gc.set_threshold(GC_THRESHOLD, 50, 100)
        self.executor = ThreadPoolExecutor(self.settings.eval_threads, thread_name_prefix="costwarden-eval")
        self.reloader.start()

    def stop(self) -> None:
        self.reloader.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        if self.kube_api is not None:
            self.kube_api.close()

    async def admit(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            response, outcome = await self._admit(request, endpoint == "mutate")
            if outcome is not None:
                self.metrics.requests.labels(endpoint, outcome).inc()
            return response
        finally:
            self.metrics.in_flight.dec()
            self.metrics.duration.labels(endpoint).observe(time.perf_counter() - started)

    async def _admit(self, request: Request, mutate: bool) -> tuple[Response, str | None]:
        limit = self.settings.max_body_bytes
        try:
            body = await _read_body(request, limit)
        except ClientDisconnect:  # the API server gave up (its timeout) before sending the whole body
            return _error(400, "client-disconnected", "the client closed the connection mid-body"), "bad_request"
        if body is None:
            return _error(413, "too-large", f"request body is larger than the {limit} byte limit"), "too_large"
        policies = self.reloader.current
        if policies is None or self.executor is None:
            return _error(503, "not-ready", "the policy set has not compiled yet"), "not_ready"
        try:
            review = parse(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid-json", f"body is not valid JSON: {exc}"), "bad_request"
        except AdapterError as exc:
            return _error(400, "invalid-admission-review", str(exc)), "bad_request"
        deadline = self.settings.deadline_s
        task = asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(judge, policies, review, mutate=mutate, read_parent=self.kube_api,
                                             read_config_map=self.kube_api.config_map if self.kube_api else None,
                                             allow_existing_violations=self.settings.allow_existing_violations))
        try:
            result: AdmissionResult = await asyncio.wait_for(task, deadline)
        except TimeoutError:
            logger.warning("evaluation of %s %s/%s (uid %s) exceeded the %gs deadline", review.kind,
                           review.namespace or "", review.name, review.uid, deadline)
            result = deadline_result(policies, review, mutate=mutate, deadline_s=deadline)
        except Exception:
            logger.exception("evaluation of uid %s failed", review.uid)
            return _error(500, "internal", "evaluation failed; see the webhook log"), "error"
        self.metrics.observe_admission("mutate" if mutate else "validate", result)
        return Response(orjson.dumps(result.review()), media_type="application/json"), None


def create_app(settings: WebhookSettings, *, reloader: PolicyReloader | None = None) -> FastAPI:
    """Build the app. Nothing starts until the ASGI lifespan does (then policies load in the
    background and ``/readyz`` turns ready once they compiled)."""
    webhook = Webhook(settings, reloader)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        webhook.start()
        try:
            yield
        finally:
            webhook.stop()

    app = FastAPI(title="costwarden admission webhook", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.webhook = webhook

    async def validate(request: Request) -> Response:
        return await webhook.admit(request, "validate")

    async def mutate(request: Request) -> Response:
        return await webhook.admit(request, "mutate")

    # Plain routes: the body is read and parsed here, so FastAPI's per-request dependency and
    # validation machinery would only add latency on the API server's critical path.
    app.add_route("/validate", validate, methods=["POST"])
    app.add_route("/mutate", mutate, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        policies = webhook.reloader.current
        if policies is None:
            return _json(503, {"status": "not ready", "error": webhook.reloader.last_error})
        return _json(200, {"status": "ready", "policies": len(policies), "last_error": webhook.reloader.last_error})

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = webhook.metrics.exposition()
        return Response(payload, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """The app factory uvicorn imports in each worker (``costwarden.webhook.app:app_from_env``)."""
    return create_app(WebhookSettings.from_env())


__all__ = ["DEFAULT_MAX_BODY_BYTES", "ENV_PREFIX", "Webhook", "WebhookSettings", "app_from_env", "create_app"]
