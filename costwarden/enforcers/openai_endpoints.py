"""Which OpenAI requests the call-guard's transport judges (``POST …/chat/completions`` and
``POST …/responses``), and which billed ones it passes through unjudged (:data:`UNGUARDED_SPEND`):
each of those is logged once per endpoint, so spend the guard cannot see is never silent."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx2

log = logging.getLogger("costwarden.callguard")


UNGUARDED_SPEND = (
    "/embeddings", "/completions", "/images/generations", "/images/edits", "/images/variations", "/audio/speech",
    "/audio/transcriptions", "/audio/translations", "/batches", "/responses/compact", "/videos", "/fine_tuning/jobs",
)
"""Endpoints (path endings, ``POST``) that OpenAI bills but the guard does not judge. Moderations are free."""


def is_guarded(method: str, url: str) -> bool:
    return guarded_path(method, urlsplit(url).path)


def guarded_path(method: str, path: str) -> bool:
    path = path.rstrip("/")
    return method.upper() == "POST" and (path.endswith("/chat/completions") or path.endswith("/responses"))


def unguarded_spend(method: str, path: str) -> str | None:
    """The :data:`UNGUARDED_SPEND` ending of a request the guard passes through although it is billed."""
    path = path.rstrip("/")
    if method.upper() != "POST" or guarded_path(method, path):
        return None
    return next((end for end in UNGUARDED_SPEND if path.endswith(end)), None)


def warn_unguarded_spend(warned: set[str], request: httpx2.Request) -> None:
    """Warn, once per endpoint in ``warned``, that a billed request passed unjudged and unrecorded."""
    end = unguarded_spend(request.method, request.url.path)
    if end is not None and end not in warned:
        warned.add(end)
        log.warning("call-guard: POST %s is billed but not guarded: it is not judged, reserved, counted against "
                    "any budget or reported as a cost event (only chat/completions and responses are); this is "
                    "said once per endpoint", request.url.path)


__all__ = ["UNGUARDED_SPEND", "guarded_path", "is_guarded", "unguarded_spend", "warn_unguarded_spend"]
