""":class:`~costwarden.engine.pricing.LlmPricer` on ``genai-prices``' bundled, offline price data.

    >>> from costwarden.engine.subjects import TokenUsage
    >>> pricer = GenaiPricer()
    >>> pricer.cost("anthropic", "claude-haiku-4-5-20251001", TokenUsage(input_tokens=1_000_000))
    1.0

``genai_prices.calc_price`` takes ~300 µs a call (it re-validates the unit registry every time),
so a model's price is resolved once per (provider, model, batch) and compiled to plain per-token
floats; pricing a call afterwards is a dict hit and a handful of multiplications (~3 µs). Compiled
prices are refreshed every minute, because genai-prices has prices that start on a date or apply
at a time of day, and so that a replaced data snapshot (its opt-in auto-update) is picked up.

genai-prices' ``input_tokens`` is the *total* input, cache reads and writes included, while
:class:`TokenUsage` keeps them apart; :func:`genai_usage` converts, and the compiled arithmetic
reproduces genai-prices' own: a cache unit without a price of its own is billed at its parent's
(1h writes → writes → input; reads → input), and a tiered price applies to every token once the
total input crosses the tier. Web searches cost genai-prices' per-search price (never batch-discounted:
the discount is on tokens), and the audio and image shares of input and output their modality's rates
(a model without such a rate bills the share at the text rate: ``gpt-image-1``'s output rate is its
image rate). Models billed by other units price them from genai-prices too: seconds of input audio
(``whisper-1``: ``input_audio_hours``) and characters of input text
(``tts-1``: ``input_mchars``); such a model takes the full path (as a tiered one does), so pricing
a chat call does no extra work, and units a model has no price for raise PricingError, never $0.
Importing this module does not import genai-prices.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from costwarden.engine.subjects import TokenUsage
from costwarden.errors import PricingError

BATCH_DISCOUNT = 0.5  # Anthropic Message Batches, OpenAI Batch and Gemini batch all bill 50 %
REFRESH_S = 60.0
_MAX_ENTRIES = 4_096
_BATCH_CONTEXT = {"processing": "batch"}
_Key = tuple[str, str, bool, tuple[tuple[str, str], ...]]
_TOKEN_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
_MODALITY_KEYS = {
    "audio": ("input_audio_mtok", "output_audio_mtok", "cache_audio_read_mtok"),
    "image": ("input_image_mtok", "output_image_mtok", "cache_image_read_mtok"),
}


@dataclass(frozen=True, slots=True)
class _Rate:
    """USD per token, with optional (threshold, USD per token) tiers on total input tokens."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def at(self, total_input: int) -> float:
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base


_ZERO = _Rate(0.0)


@dataclass(frozen=True, slots=True)
class _Modality:
    """A modality's own rates for its share of uncached input, cache reads and output; None where
    the model has none (its text rate applies)."""

    input: _Rate | None = None
    output: _Rate | None = None
    cache_read: _Rate | None = None


_TEXT_ONLY = _Modality()
_Share = tuple[int, int, int]
"""A modality's (uncached input, cache read, output) tokens."""


def _modality_shares(usage: TokenUsage) -> tuple[_Share, _Share]:
    """The audio and the image share of ``usage`` as (uncached input, cache read, output) tokens.
    Which input tokens were cache reads is not reported per modality, so each share is taken to be
    uncached first (audio and images cost more than text uncached), audio before images, and a share
    never takes more than the tokens left."""
    uncached, read, out = usage.input_tokens, usage.cache_read_tokens, usage.output_tokens
    shares = []
    for share_in, share_out in ((usage.input_audio_tokens, usage.output_audio_tokens),
                                (usage.input_image_tokens, usage.output_image_tokens)):
        fresh = min(share_in, uncached)
        cached = min(share_in - fresh, read)
        emitted = min(share_out, out)
        uncached, read, out = uncached - fresh, read - cached, out - emitted
        shares.append((fresh, cached, emitted))
    return shares[0], shares[1]


@dataclass(frozen=True, slots=True)
class _Prices:
    """One model's compiled token prices, already scaled for batch when needed."""

    input: _Rate
    output: _Rate
    cache_read: _Rate
    cache_write_5m: _Rate
    cache_write_1h: _Rate
    factor: float
    tiered: bool
    has_input: bool
    has_output: bool
    label: str
    per_call: float = 0.0
    audio: _Modality = _TEXT_ONLY
    image: _Modality = _TEXT_ONLY
    web_search: float = 0.0
    """USD per server-side web search; not scaled by ``factor`` (batch discounts are on tokens)."""
    audio_second: float | None = None
    """USD per second of input audio (``whisper-1``); None where the model has no such price."""
    input_character: float | None = None
    """USD per character of input text (``tts-1``); None where the model has no such price."""

    def cost(self, usage: TokenUsage) -> float:
        if not self.has_output and usage.output_tokens:
            raise PricingError(f"{self.label} has no output-token price, yet the usage has output tokens")
        if not self.has_input and usage.total_input_tokens:
            raise PricingError(f"{self.label} has no input-token price, yet the usage has input tokens")
        searches = usage.web_search_requests * self.web_search
        if (self.tiered or usage.input_audio_tokens or usage.output_audio_tokens or usage.input_image_tokens
                or usage.output_image_tokens or usage.audio_seconds or usage.input_characters):
            return self._full_cost(usage) + searches
        return self.factor * (
            self.per_call
            + usage.input_tokens * self.input.base
            + usage.output_tokens * self.output.base
            + usage.cache_read_tokens * self.cache_read.base
            + usage.cache_write_5m_tokens * self.cache_write_5m.base
            + usage.cache_write_1h_tokens * self.cache_write_1h.base
        ) + searches

    def _full_cost(self, usage: TokenUsage) -> float:
        """Tiered prices, and the audio and image shares of input and output (split by
        :func:`_modality_shares`) at their modality's rates."""
        total = usage.total_input_tokens
        uncached, read, out = usage.input_tokens, usage.cache_read_tokens, usage.output_tokens
        cost = (
            self.per_call
            + usage.cache_write_5m_tokens * self.cache_write_5m.at(total)
            + usage.cache_write_1h_tokens * self.cache_write_1h.at(total)
        )
        if usage.audio_seconds or usage.input_characters:
            cost += self._unit_cost(usage)
        for rates, (fresh, cached, emitted) in zip((self.audio, self.image), _modality_shares(usage), strict=True):
            cost += (
                fresh * (rates.input or self.input).at(total)
                + cached * (rates.cache_read or self.cache_read).at(total)
                + emitted * (rates.output or self.output).at(total)
            )
            uncached, read, out = uncached - fresh, read - cached, out - emitted
        return self.factor * (
            cost + uncached * self.input.at(total) + read * self.cache_read.at(total) + out * self.output.at(total)
        )

    def _unit_cost(self, usage: TokenUsage) -> float:
        """Seconds of input audio and characters of input text at the model's prices for them."""
        cost = 0.0
        for count, rate, unit in ((usage.audio_seconds, self.audio_second, "seconds of input audio"),
                                  (usage.input_characters, self.input_character, "input characters")):
            if count and rate is None:
                raise PricingError(f"{self.label} has no price for {unit}, yet the usage has {count}")
            cost += count * (rate or 0.0)
        return cost


class GenaiPricer:
    """Prices token usage from genai-prices; an unknown model raises PricingError, never $0.

    ``provider`` is a genai-prices provider id or alias (``anthropic``, ``openai``, ``x-ai``,
    ``google``...); an empty provider lets genai-prices infer it from the model. Model names may
    carry a provider prefix (``anthropic/claude-sonnet-4-5``) and dated snapshot suffixes.
    Batch usage costs genai-prices' batch price where it has one, else 50 % of the standard price.
    Instances are safe to share between threads.
    """

    prices_context = True
    """``cost`` takes a price ``context`` (:func:`costwarden.engine.pricing.cost_in_context`)."""

    def __init__(self, *, refresh_s: float = REFRESH_S) -> None:
        self._refresh_s = refresh_s
        self._cache: dict[_Key, tuple[float, _Prices | PricingError]] = {}

    def cost(
        self, provider: str, model: str, usage: TokenUsage, *, batch: bool = False,
        context: Mapping[str, str] | None = None,
    ) -> float:
        """USD for ``usage`` on ``model``; raises PricingError when the model has no token price.
        ``context`` selects genai-prices' price variants, such as ``{"service_tier": "priority"}``."""
        key: _Key = (provider, model, batch, tuple(sorted(context.items())) if context else ())
        entry = self._cache.get(key)
        if entry is None or entry[0] < time.monotonic():
            entry = self._compile(key)
        prices = entry[1]
        if isinstance(prices, PricingError):
            raise prices
        return prices.cost(usage)

    def _compile(self, key: _Key) -> tuple[float, _Prices | PricingError]:
        compiled: _Prices | PricingError
        try:
            compiled = _compile_prices(_snapshot(), *key)
        except PricingError as exc:
            compiled = exc
        entry = (time.monotonic() + self._refresh_s, compiled)
        if len(self._cache) >= _MAX_ENTRIES:  # model names can come from callers; stay bounded
            self._cache.clear()
        self._cache[key] = entry
        return entry


def genai_usage(usage: TokenUsage) -> Any:
    """``usage`` as a ``genai_prices.Usage``, whose ``input_tokens`` is the total input (the audio and
    image shares split into uncached and cached as :class:`GenaiPricer` prices them:
    :func:`_modality_shares`)."""
    from genai_prices import Usage

    (audio_in, audio_read, audio_out), (image_in, image_read, image_out) = _modality_shares(usage)
    return Usage(
        input_tokens=usage.total_input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        web_searches=usage.web_search_requests,
        input_audio_tokens=audio_in + audio_read,
        output_audio_tokens=audio_out,
        cache_audio_read_tokens=audio_read,
        input_image_tokens=image_in + image_read,
        output_image_tokens=image_out,
        cache_image_read_tokens=image_read,
        **_unit_usage(usage),
    )


def _unit_usage(usage: TokenUsage) -> dict[str, int]:
    """genai-prices' keys for the units of ``usage`` other than tokens (only those it has: a parent
    duration key must come with its child)."""
    units: dict[str, int] = {}
    if usage.audio_seconds:
        units.update(audio_seconds=usage.audio_seconds, input_audio_seconds=usage.audio_seconds)
    if usage.input_characters:
        units["input_characters"] = usage.input_characters
    return units


def _snapshot() -> object:
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def _model_refs(model: str) -> list[str]:
    refs = [model.strip()]
    if "/" in model:
        refs += [model.split("/", 1)[1], model.rsplit("/", 1)[1]]
    return list(dict.fromkeys(refs))


def _find(snapshot: Any, provider: str, model: str) -> tuple[Any, Any]:
    provider_id = provider.strip() or (model.split("/", 1)[0] if "/" in model else None)
    for ref in _model_refs(model):
        try:
            return snapshot.find_provider_model(ref, None, provider_id, None)  # type: ignore[no-any-return]
        except LookupError:
            continue
    from genai_prices import __version__

    raise PricingError(
        f"no price for model {model!r} from provider {provider or '(any)'!r} in genai-prices {__version__}; "
        f"a self-hosted or private model gets one from a ModelCatalog document (spec.prices: model, "
        f"inputPerMTok, outputPerMTok)"
    )


def _compile_prices(
    snapshot: Any, provider: str, model: str, batch: bool, context: tuple[tuple[str, str], ...] = ()
) -> _Prices:
    found_provider, info = _find(snapshot, provider, model)
    now = datetime.now(tz=UTC)
    own_model = any(info is candidate for candidate in found_provider.models)
    # as genai-prices' calc_price: a model found under another provider is priced without context
    price_context = dict(context) if own_model else {}
    has_batch_price = (
        batch
        and own_model
        and any(
            variant.when == _BATCH_CONTEXT and (variant.constraint is None or variant.constraint.active(now))
            for variant in info.price_variants or ()
        )
    )
    if has_batch_price:
        price_context.update(_BATCH_CONTEXT)
    price = info.get_prices(now, price_context or None)
    label = f"model {model!r} ({found_provider.id}/{info.id})"
    values = {key: getattr(price, key) for key in _TOKEN_KEYS}
    per_second, per_character = _unit_rates(price)
    metered = per_second is not None or per_character is not None  # billed by seconds or characters
    free = all(value is None for value in values.values()) and not metered  # an empty price: a free model
    if free and _has_other_prices(price):
        raise PricingError(f"{label} is not priced per token ({price}); it cannot be priced from token usage")
    rates = {key: _rate(value) for key, value in values.items()}
    requests_kcount = getattr(price, "requests_kcount", None)
    web_searches_kcount = getattr(price, "web_searches_kcount", None)
    modalities = {name: _modality(price, keys, rates["cache_read_mtok"]) for name, keys in _MODALITY_KEYS.items()}
    input_rate = rates["input_mtok"] or _ZERO
    write = rates["cache_write_mtok"] or input_rate
    return _Prices(
        input=input_rate,
        output=rates["output_mtok"] or _ZERO,
        cache_read=rates["cache_read_mtok"] or input_rate,
        cache_write_5m=write,
        cache_write_1h=rates["cache_write_1h_mtok"] or write,
        factor=BATCH_DISCOUNT if batch and not has_batch_price else 1.0,
        # a model billed by other units takes the full path, as a tiered one does
        tiered=metered or any(rate is not None and rate.tiers
                              for rate in (*rates.values(), *_modality_rates(modalities))),
        has_input=free or rates["input_mtok"] is not None,
        has_output=free or rates["output_mtok"] is not None,
        label=label,
        per_call=float(requests_kcount) / 1_000 if requests_kcount is not None else 0.0,
        audio=modalities["audio"],
        image=modalities["image"],
        web_search=float(web_searches_kcount) / 1_000 if web_searches_kcount is not None else 0.0,
        audio_second=per_second,
        input_character=per_character,
    )


def _unit_rates(price: Any) -> tuple[float | None, float | None]:
    """(USD per second of input audio, USD per input character): genai-prices' ``input_audio_hours``
    and ``input_mchars``; None where the model has no such price. ``audio_hours`` alone (a live
    model's session audio, either way) is not taken for input audio. Tiered unit prices are not
    known to genai-prices' data; one would raise rather than be misread."""
    hourly = getattr(price, "input_audio_hours", None)
    per_million = getattr(price, "input_mchars", None)
    if getattr(hourly, "tiers", None) is not None or getattr(per_million, "tiers", None) is not None:
        raise PricingError(f"tiered audio-duration or character prices are not supported ({price})")
    return (float(hourly) / 3600 if hourly is not None else None,
            float(per_million) / 1e6 if per_million is not None else None)


def _modality(price: Any, keys: tuple[str, str, str], cache_read: _Rate | None) -> _Modality:
    """A modality's rates from ``keys`` (input, output, cache read). As genai-prices, a unit without a
    price of its own is billed at its most specific priced parent: the modality's cache reads at
    their own price, else cache reads' (``cache_read``), else the modality's input price, else input."""
    input_rate, output_rate, read_rate = (_rate(getattr(price, key, None)) for key in keys)
    if input_rate is None and output_rate is None and read_rate is None:
        return _TEXT_ONLY
    return _Modality(input_rate, output_rate, read_rate or cache_read or input_rate)


def _modality_rates(modalities: Mapping[str, _Modality]) -> list[_Rate | None]:
    return [rate for m in modalities.values() for rate in (m.input, m.output, m.cache_read)]


def _has_other_prices(price: Any) -> bool:
    return any(value is not None for key, value in vars(price).items() if key not in _TOKEN_KEYS)


def _rate(value: Any) -> _Rate | None:
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return _Rate(float(value) / 1e6)
    return _Rate(
        float(value.base) / 1e6,
        tuple((int(tier.start), float(tier.price) / 1e6) for tier in tiers),
    )


__all__ = ["BATCH_DISCOUNT", "GenaiPricer", "genai_usage"]
