"""OpenAI Responses compaction bodies (``POST …/responses/compact``) → ``llm_call`` subjects
(``api="responses.compact"``).

``client.responses.compact(model=..., input=..., instructions=..., previous_response_id=...)`` runs
the model over a conversation and answers a ``CompactedResponse`` (``object: "response.compaction"``:
the user messages, then one ``compaction`` item of encrypted content), never streamed. Its body
(``model``, ``input``, ``instructions``, ``previous_response_id``, ``prompt_cache_key``,
``prompt_cache_options``, ``prompt_cache_retention``, ``service_tier``, ``image``) has the keys of a
Responses one, so the call-guard picks this builder by the request's path. The answer reports
Responses usage (``input_tokens`` with ``input_tokens_details.cached_tokens``, ``output_tokens``
with the reasoning inside), which :func:`costwarden.adapters.openai.usage_from_response` reads::

    >>> call = subject_from_request({"model": "gpt-5", "input": "Hello there", "instructions": "Be brief."})
    >>> call.kind, call.request.max_tokens, call.request.max_tokens_field, call.request.choices
    ('responses.compact', None, '', 1)

The input is estimated as a Responses body's (:func:`costwarden.adapters.openai.estimate_responses_input`):
``instructions`` as the cacheable prefix, then each ``input`` item. A ``previous_response_id``
carries the stored conversation, which the body does not show: the estimate cannot count it, nor
the encrypted content of an earlier ``compaction`` item in ``input``, so a compaction of a long
stored thread is reserved low (:mod:`costwarden.adapters.llm_payload` says the same of Responses);
its usage settles what it was.

The endpoint has no field that caps output, so ``max_tokens`` is None and ``max_tokens_field``
empty: ``maxOutputTokens`` skips the call (a ``max_output_tokens`` it added would be refused) and
the worst case a budget reserves is the estimated input plus one completion of the clamped output
cap (``OUTPUT_TOKENS_CAP``, 32,768 tokens). ``service_tier`` prices it as a Responses call's does
(the budget reads the body's, the settlement the answer's). OpenAI caches on its own: no breakpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.adapters.llm_payload import require_body
from costwarden.adapters.openai import PROVIDER, call_subject, estimate_responses_input
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation

API = "responses.compact"
_WHAT = "OpenAI responses.compact"


def subject_from_request(
    body: Mapping[str, Any],
    *,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    tags: Mapping[str, str] | None = None,
    response: Mapping[str, Any] | None = None,
    batch: bool = False,
    source: SourceLocation | None = None,
    provider: str = PROVIDER,
) -> LlmCall:
    """An ``llm_call`` subject for a compaction body; ``phase="post"`` with ``response``.

    Takes the arguments of :func:`costwarden.adapters.openai.subject_from_request` (the call-guard
    calls both alike; ``batch=True`` gives ``api="batch"``, though the Batch API takes no compaction).
    Raises AdapterError for a body that is not an object, has no ``model``, or whose ``input`` is
    neither a string nor a list.
    """
    body = require_body(body, _WHAT)
    prefix_tokens, input_tokens = estimate_responses_input(body)
    request = LlmRequest(
        api="batch" if batch else API,
        max_tokens=None,
        max_tokens_field="",
        input_tokens=input_tokens,
        cacheable_prefix_tokens=prefix_tokens,
        prefix_pointer=None,
        cache_breakpoints=0,
        batch=batch,
        choices=1,
    )
    return call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated input tokens of a compaction body: its ``instructions`` and ``input`` (never
    the context a ``previous_response_id`` carries)."""
    return estimate_responses_input(body)[1]


__all__ = ["API", "estimate_input_tokens", "subject_from_request"]
