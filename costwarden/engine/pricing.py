"""The pricing interface the engine prices LLM calls through.

The engine never imports a price source; ``costwarden.adapters.pricing`` implements
:class:`LlmPricer` on ``genai-prices`` (offline data) and the model catalog layers price
overrides for self-hosted models on top. An unknown model raises
:class:`~costwarden.errors.PricingError` — it is never priced at $0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from costwarden.engine.subjects import TokenUsage

PRICE_CONTEXT_KEYS = ("service_tier", "speed")
"""Request and response fields that select a price variant: OpenAI's ``service_tier`` (``priority``
costs more, ``flex`` less) and Anthropic's ``speed`` (``fast`` mode costs more)."""


@runtime_checkable
class LlmPricer(Protocol):
    """Prices a call's token usage in USD.

    Example::

        class FlatPricer:
            def cost(self, provider, model, usage, *, batch=False):
                return usage.total_input_tokens * 3e-6 + usage.output_tokens * 15e-6
    """

    def cost(self, provider: str, model: str, usage: TokenUsage, *, batch: bool = False) -> float:
        """USD for ``usage`` on ``model``; raises PricingError when the model has no known price."""
        ...


def price_context(*sources: Mapping[str, Any] | None) -> dict[str, str]:
    """The price context (genai-prices' ``price_context``) of a request body, refined by a response:
    the :data:`PRICE_CONTEXT_KEYS` found at the top level or in ``usage`` (Anthropic reports its speed
    there); a later source wins, as a response's tier is the one that served the call."""
    context: dict[str, str] = {}
    for source in sources:
        if source is None or not (source.__class__ is dict or isinstance(source, Mapping)):
            continue
        usage = source.get("usage")
        for where in (source, usage) if usage.__class__ is dict or isinstance(usage, Mapping) else (source,):
            for key in PRICE_CONTEXT_KEYS:
                value = where.get(key)
                if value and value.__class__ is str:
                    context[key] = value
    return context


def cost_in_context(
    pricer: LlmPricer, provider: str, model: str, usage: TokenUsage, *, batch: bool = False,
    context: Mapping[str, str] | None = None,
) -> float:
    """``pricer.cost``, priced in ``context`` (a service tier, a speed) by pricers that take one
    (``prices_context = True``, as ``GenaiPricer``); others price the standard rate."""
    if context and getattr(pricer, "prices_context", False):
        return pricer.cost(provider, model, usage, batch=batch, context=context)  # type: ignore[call-arg]
    return pricer.cost(provider, model, usage, batch=batch)


__all__ = ["PRICE_CONTEXT_KEYS", "LlmPricer", "cost_in_context", "price_context"]
