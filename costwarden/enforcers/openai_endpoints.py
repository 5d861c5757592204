"""Which OpenAI requests the call-guard's transport judges (``POST …/chat/completions``,
``POST …/responses``, Responses compaction's ``POST …/responses/compact``, ``POST …/embeddings``,
the legacy ``POST …/completions``, GPT Image's
``POST …/images/generations`` and ``POST …/images/edits`` and the Audio API's
``POST …/audio/transcriptions``, ``…/audio/translations`` and ``…/audio/speech``: :data:`GUARDED`) and through which
provider edge (:func:`edges`, :func:`route`), and which billed ones it passes through unjudged
(:data:`UNGUARDED_SPEND`): each of those is logged once per endpoint, so spend the guard cannot see
is never silent.

A compaction's body has a Responses body's keys (``model``, ``input``, ``instructions``,
``previous_response_id``), so only the path tells the two apart (:func:`path_api`): it has an edge
of its own (:attr:`Edges.compaction`, :mod:`costwarden.adapters.openai_compaction`), and
``…/responses/compact`` is never read as a response id by the background-response bookkeeping
(a ``POST`` to it is no cancel, and a guarded request is not watched as a read).

An image edit's body is ``multipart/form-data`` (the prompt beside the image files), and so is a
transcription's or translation's (the audio file beside the model): the transport reads that form
(:func:`sends_form`, :func:`form_body`), judges it and sends it as it came. ``…/images/variations``
stays unguarded: it is DALL·E 2's only, priced per image, which genai-prices does not price. Batch
API jobs (``POST …/batches``) are judged line by line when created and settled from their output
file by :mod:`costwarden.enforcers.openai_batches`, which the transport calls before any of this."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx2

from costwarden.adapters import openai as adapter
from costwarden.adapters import openai_audio, openai_compaction, openai_completions, openai_embeddings, openai_images
from costwarden.adapters.multipart import Form, is_form
from costwarden.enforcers.guarded_call import ProviderEdge
from costwarden.engine.pricing import LlmPricer

log = logging.getLogger("costwarden.callguard")

GUARDED = ("/chat/completions", "/responses", "/responses/compact", "/embeddings", "/completions",
           "/images/generations", "/images/edits", "/audio/transcriptions", "/audio/translations", "/audio/speech")
"""Endpoints (path endings, ``POST``) the guard judges, reserves, prices, settles and reports."""

UNGUARDED_SPEND = ("/images/variations", "/videos", "/fine_tuning/jobs")
"""Endpoints (path endings, ``POST``) that OpenAI bills but the guard does not judge. Moderations are free."""

_BUILDERS = {
    "chat": adapter.subject_from_request,
    "embeddings": openai_embeddings.subject_from_request,
    "completions": openai_completions.subject_from_request,
    "images": openai_images.subject_from_request,
    "audio": openai_audio.subject_from_request,
    "compaction": openai_compaction.subject_from_request,
}
_AUDIO_PATHS = ("transcriptions", "translations", "speech")
_FORM_PATHS = ("/images/edits", "/audio/transcriptions", "/audio/translations")


class Edges(NamedTuple):
    """The provider edges of one provider, by the API a path names (:func:`path_api`)."""

    chat: ProviderEdge  # Chat Completions and Responses (the body tells them apart)
    embeddings: ProviderEdge
    completions: ProviderEdge  # the legacy Completions API
    images: ProviderEdge  # GPT Image generation and edits (``images.generate``, ``images.edit``)
    audio: ProviderEdge  # transcriptions, translations and speech (``audio.*.create``)
    compaction: ProviderEdge  # Responses compaction (``responses.compact``)


def edge(provider: str = adapter.PROVIDER, *, api: str = "chat", pricer: LlmPricer | None = None) -> ProviderEdge:
    """The provider edge for ``provider`` (an OpenAI-compatible API priced as that provider) of one
    API: ``"chat"`` (Chat Completions and Responses), ``"embeddings"``, ``"completions"``, ``"images"``,
    ``"audio"`` or ``"compaction"`` (Responses compaction). Only the subject builder differs: usage,
    reservation, settlement and the cost event are the one shared path. The audio builder prices its
    worst case with ``pricer`` (the guard's; genai-prices' without one): seconds and characters do not
    fit the token-shaped request."""
    if api == "audio":
        builder = partial(openai_audio.subject_from_request, provider=provider, pricer=pricer or _default_pricer())
        return ProviderEdge(provider, builder, openai_audio.usage_from_response)
    return ProviderEdge(provider, partial(_BUILDERS[api], provider=provider), adapter.usage_from_response)


def _default_pricer() -> LlmPricer:
    from costwarden.adapters.pricing import GenaiPricer

    global _GENAI
    if _GENAI is None:
        _GENAI = GenaiPricer()
    return _GENAI


_GENAI: LlmPricer | None = None


OPENAI = edge()
OPENAI_EMBEDDINGS = edge(api="embeddings")
OPENAI_COMPLETIONS = edge(api="completions")
OPENAI_IMAGES = edge(api="images")
OPENAI_AUDIO = edge(api="audio")
OPENAI_COMPACTION = edge(api="compaction")


def edges(provider: str = adapter.PROVIDER, *, pricer: LlmPricer | None = None) -> Edges:
    """The edges of ``provider``, one per API; the audio edge prices its worst case with ``pricer``."""
    audio = OPENAI_AUDIO if pricer is None and provider == adapter.PROVIDER else edge(provider, api="audio",
                                                                                        pricer=pricer)
    if provider == adapter.PROVIDER:
        return Edges(OPENAI, OPENAI_EMBEDDINGS, OPENAI_COMPLETIONS, OPENAI_IMAGES, audio, OPENAI_COMPACTION)
    return Edges(**{api: audio if api == "audio" else edge(provider, api=api) for api in Edges._fields})


def route(of: Edges, path: str) -> ProviderEdge:
    """The edge of ``of`` that builds the subject of a guarded request to ``path``."""
    chosen: ProviderEdge = getattr(of, path_api(path))  # path_api names a field of Edges
    return chosen


def is_guarded(method: str, url: str) -> bool:
    return guarded_path(method, urlsplit(url).path)


def guarded_path(method: str, path: str) -> bool:
    path = path.rstrip("/")
    return method.upper() == "POST" and path.endswith(GUARDED)


def path_api(path: str) -> str:
    """``"embeddings"``, ``"completions"`` (the legacy API), ``"images"``, ``"audio"``, ``"compaction"``
    or ``"chat"`` for a guarded path.

    Only the path tells these apart: an Embeddings body looks like a Responses one (``model`` and
    ``input``), and so does a Completions body to :func:`~costwarden.adapters.openai.api_of` (it
    has a ``prompt``); a compaction body (``…/responses/compact``) has a Responses body's keys.
    ``…/chat/completions`` and ``…/completions`` both end in ``completions``: the segment before it
    decides, except on Azure, where ``…/deployments/chat/completions`` is the legacy API of a
    deployment named ``chat`` (its Chat Completions is ``…/deployments/chat/chat/completions``)."""
    api = _APIS.get(path)
    if api is None:
        api = _path_api(path)
        if len(_APIS) < 1_024:  # a client calls a handful of paths; deployment names could make many
            _APIS[path] = api
    return api


_APIS: dict[str, str] = {}


def _path_api(path: str) -> str:
    parts = path.rstrip("/").split("/")
    if parts[-1] == "embeddings":
        return "embeddings"
    if parts[-1] in ("generations", "edits") and len(parts) >= 2 and parts[-2] == "images":
        return "images"
    if parts[-1] in _AUDIO_PATHS and len(parts) >= 2 and parts[-2] == "audio":
        return "audio"
    if parts[-1] == "compact" and len(parts) >= 2 and parts[-2] == "responses":
        return "compaction"
    if parts[-1] != "completions":
        return "chat"
    chat = len(parts) >= 2 and parts[-2] == "chat" and not (len(parts) >= 3 and parts[-3] == "deployments")
    return "chat" if chat else "completions"


def is_embeddings(path: str) -> bool:
    """Whether a guarded request is an Embeddings call (:func:`path_api`)."""
    return path_api(path) == "embeddings"


def sends_form(request: httpx2.Request, path: str | None = None) -> bool:
    """Whether a guarded request is an image edit, a transcription or a translation sent as
    ``multipart/form-data``: its form is read (:func:`form_body`) and it is sent byte for byte as it came."""
    path = (request.url.path if path is None else path).rstrip("/")
    return path.endswith(_FORM_PATHS) and is_form(request.headers.get("content-type"))


def form_body(path: str, form: Form) -> dict[str, Any]:
    """The body judged for a form sent to ``path``: an image edit's
    (:func:`~costwarden.adapters.openai_images.edit_body`) or an audio file's
    (:func:`~costwarden.adapters.openai_audio.form_body`)."""
    if path_api(path) == "audio":
        return openai_audio.form_body(form)
    return openai_images.edit_body(form)


def usage_on_request(path: str, body: Mapping[str, Any]) -> bool:
    """Whether a stream to ``path`` reports its usage only when asked (``stream_options.include_usage``):
    Chat Completions and legacy Completions; a Responses stream always reports it (a compaction is
    never streamed)."""
    api = path_api(path)
    return api == "completions" or (api == "chat" and adapter.api_of(body) == "chat.completions")


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
                    "any budget or reported as a cost event (only chat/completions, responses, responses/compact, "
                    "embeddings, completions, images/generations, images/edits and audio are); this is said "
                    "once per endpoint",
                    request.url.path)


__all__ = [
    "GUARDED",
    "OPENAI",
    "OPENAI_AUDIO",
    "OPENAI_COMPACTION",
    "OPENAI_COMPLETIONS",
    "OPENAI_EMBEDDINGS",
    "OPENAI_IMAGES",
    "UNGUARDED_SPEND",
    "Edges",
    "edge",
    "edges",
    "form_body",
    "guarded_path",
    "is_embeddings",
    "is_guarded",
    "path_api",
    "route",
    "sends_form",
    "unguarded_spend",
    "usage_on_request",
    "warn_unguarded_spend",
]
