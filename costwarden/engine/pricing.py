"""The pricing interface the engine prices LLM calls through.

The engine never imports a price source; ``costwarden.adapters.pricing`` implements
:class:`LlmPricer` on ``genai-prices`` (offline data) and the model catalog layers price
overrides for self-hosted models on top. An unknown model raises
:class:`~costwarden.errors.PricingError` — it is never priced at $0.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from costwarden.engine.subjects import TokenUsage


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


__all__ = ["LlmPricer"]
