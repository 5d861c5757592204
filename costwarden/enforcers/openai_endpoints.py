"""Which OpenAI requests the call-guard's transport judges (``POST …/chat/completions``,
``POST …/responses`` and ``POST …/embeddings``: :data:`GUARDED`) and through which provider edge
(:func:`edges`), and which billed ones it passes through unjudged (:data:`UNGUARDED_SPEND`): each of
those is logged once per endpoint, so spend the guard cannot see is never silent."""

from __future__ import annotations

import logging
from functools import partial
from urllib.parse import urlsplit

import httpx2

from costwarden.adapters import openai as adapter
from costwarden.adapters import openai_embeddings
from costwarden.enforcers.guarded_call import ProviderEdge

log = logging.getLogger("costwarden.callguard")

GUARDED = ("/chat/completions", "/responses", "/embeddings")
"""Endpoints (path endings, ``POST``) the guard judges, reserves, prices, settles and reports."""

UNGUARDED_SPEND = (
    "/completions", "/images/generations", "/images/edits", "/images/variations", "/audio/speech",
    "/audio/transcriptions", "/audio/translations", "/batches", "/responses/compact", "/videos", "/fine_tuning/jobs",
)
"""Endpoints (path endings, ``POST``) that OpenAI bills but the guard does not judge. Moderations are free."""


def edge(provider: str = adapter.PROVIDER, *, embeddings: bool = False) -> ProviderEdge:
    """The provider edge for ``provider`` (an OpenAI-compatible API priced as that provider): of
    Chat Completions and Responses, or with ``embeddings`` of Embeddings. Only the subject builder
    differs: usage, reservation, settlement and the cost event are the one shared path."""
    builder = openai_embeddings.subject_from_request if embeddings else adapter.subject_from_request
    return ProviderEdge(provider, partial(builder, provider=provider), adapter.usage_from_response)


OPENAI = edge()
OPENAI_EMBEDDINGS = edge(embeddings=True)


def edges(provider: str = adapter.PROVIDER) -> tuple[ProviderEdge, ProviderEdge]:
    """The (Chat Completions and Responses, Embeddings) edges of ``provider``."""
    if provider == adapter.PROVIDER:
        return OPENAI, OPENAI_EMBEDDINGS
    return edge(provider), edge(provider, embeddings=True)


def is_guarded(method: str, url: str) -> bool:
    return guarded_path(method, urlsplit(url).path)


def guarded_path(method: str, path: str) -> bool:
    path = path.rstrip("/")
    return method.upper() == "POST" and path.endswith(GUARDED)


def is_embeddings(path: str) -> bool:
    """Whether a guarded request is an Embeddings call: its body looks like a Responses one
    (``model`` and ``input``), so only its path tells them apart."""
    return path.rstrip("/").endswith("/embeddings")


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
                    "any budget or reported as a cost event (only chat/completions, responses and embeddings "
                    "are); this is said once per endpoint", request.url.path)


__all__ = [
    "GUARDED",
    "OPENAI",
    "OPENAI_EMBEDDINGS",
    "UNGUARDED_SPEND",
    "edge",
    "edges",
    "guarded_path",
    "is_embeddings",
    "is_guarded",
    "unguarded_spend",
    "warn_unguarded_spend",
]
