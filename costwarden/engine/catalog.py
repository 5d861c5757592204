"""The model catalog: model tiers, cache minimums, model sizes, attention heads and GPU/instance
prices as data.

Every policy set starts from the catalog shipped in ``engine/data/catalog.yaml`` and layers the
``ModelCatalog`` documents it loads on top; later documents win. Price, cache-minimum, size and
attention-head entries of a later document are consulted first (sizes and heads in the order a
document lists them: the first glob that matches wins); within one document, the price of the most specific
glob (as for tiers, below) applies, and on a tie one scoped to the call's provider. Tiers:

* a tier with a new name joins the order after the existing ones (the order is cheapest first);
* a tier with a name that exists keeps its place, and its models and ``downgradeTo`` entries are
  added to the existing ones (a self-hosted model added to ``simple`` leaves Haiku in it), unless
  it says ``replace: true``, which drops the earlier ones;
* a model's tier is found by the latest document with a glob that matches it; within one
  document the most specific glob wins (the one with the most characters other than wildcards:
  ``gpt-5-pro*`` before ``gpt-5*``), and the cheaper tier on a tie.

Lookups are memoised, so the hot path costs one dict hit after the first call for a model. Model
globs (:class:`ModelGlobs`) match the name after a model id's last ``/``, or the whole id when they
contain a ``/`` themselves.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from costwarden.engine.pricing import cost_in_context
from costwarden.engine.subjects import TokenUsage, Workload
from costwarden.errors import PricingError

if TYPE_CHECKING:
    from costwarden.engine.pricing import LlmPricer
    from costwarden.engine.schema import HourlyPrice, ModelCatalogSpec, ModelPrice

HOURS_PER_MONTH = 730.0


# Amazon Bedrock names a model ``[<geo>.]<vendor>.<name>[-v<N>[:<M>]]`` (or ``-<N>:<M>``)
# (``us.anthropic.claude-haiku-4-5-20251001-v1:0``, ``global.`` for cross-region profiles; an
# inference-profile ARN ends with the same id after its last ``/``).
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?"
    r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer|moonshot|google)\."
    r"(?P<name>.+?)(?:-v\d+(?::\d+)?|-\d+:\d+)?$"
)


@functools.lru_cache(maxsize=8192)
def short_model_name(model: str) -> str:
    """The model's own name, lower case: after the id's last ``/``, without Bedrock's region and
    vendor prefix or version suffix (Vertex's ``@<date>`` is kept: tier globs end in ``*``)."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    bedrock = _BEDROCK.match(name) if "." in name else None
    return bedrock.group("name") if bedrock else name


def normalize_model(model: str) -> str:
    """``anthropic/Claude-Sonnet-4-5`` → ``claude-sonnet-4-5``: lower case, no provider prefix
    (``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` → ``claude-sonnet-4-5-20250929``)."""
    return short_model_name(model)


class ModelGlobs:
    """Model globs, matched without regard to case. A glob without a ``/`` (``claude-haiku-*``)
    matches the name after the model id's last ``/``, so ``anthropic/claude-haiku-4-5`` too. A
    glob with one (``meta-llama/*``, as Hugging Face names models) matches the whole id."""

    __slots__ = ("_full", "_short")

    def __init__(self, patterns: Iterable[str]) -> None:
        globs = [p.strip().lower() for p in patterns]
        self._short = _compiled([g for g in globs if "/" not in g])
        self._full = _compiled([g for g in globs if "/" in g])

    def match(self, model: str) -> bool:
        full = model.strip().lower()
        if self._short is not None and self._short.match(short_model_name(full)):
            return True
        return self._full is not None and self._full.match(full) is not None


def _compiled(globs: Sequence[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None


def model_key(model: str) -> str:
    """The model id as catalog lookups are memoised: lower case, the whole id."""
    return model.strip().lower()


_GKE_TPU = re.compile(r"TPU-(V\d+[A-Z]*)(-LITE)?-(?:PODSLICE|SLICE|DEVICE)")


@functools.lru_cache(maxsize=4096)
def normalize_gpu(gpu_type: str) -> str:
    """``nvidia-h100-80gb`` / ``NVIDIA-H100-80GB-HBM3`` / ``H100`` → ``H100-80GB...`` upper case.

    GKE's TPU node label values (``cloud.google.com/gke-tpu-accelerator``) name the slice, not the
    chip: ``tpu-v5-lite-podslice`` and ``tpu-v5-lite-device`` are ``TPU-V5E`` ("v5 lite" is
    Google's name for v5e), ``tpu-v5p-slice`` is ``TPU-V5P``, ``tpu-v6e-slice`` ``TPU-V6E``,
    ``tpu-v4-podslice`` ``TPU-V4``: the keys a catalog prices TPU chips by."""
    text = gpu_type.strip().upper().replace(" ", "-").replace("_", "-")
    for prefix in ("NVIDIA-TESLA-", "NVIDIA-", "TESLA-", "AMD-INSTINCT-", "AMD-"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    tpu = _GKE_TPU.fullmatch(text)
    if tpu:
        version, lite = tpu.group(1), tpu.group(2)
        text = f"TPU-{version}E" if lite and version == "V5" else f"TPU-{version}{lite or ''}"
    return text



@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    rank: int
    pattern: ModelGlobs
    downgrade_to: Mapping[str, str]
    models: tuple[str, ...] = ()
    """The globs, as the catalog documents give them (earliest document first)."""


@dataclass(frozen=True)
class Catalog:
    """Merged catalog data with memoised lookups. Immutable once built."""

    tiers: tuple[Tier, ...] = ()
    prices: tuple[tuple[ModelGlobs, str | None, ModelPrice], ...] = ()
    cache_minimums: tuple[tuple[ModelGlobs, int], ...] = ()
    gpu_prices: Mapping[str, HourlyPrice] = field(default_factory=dict)
    instance_prices: Mapping[str, HourlyPrice] = field(default_factory=dict)
    model_sizes: tuple[tuple[ModelGlobs, float], ...] = ()
    prices_as_of: date | None = None
    tier_globs: tuple[tuple[ModelGlobs, Tier], ...] | None = None
    """Each tier glob with its tier, in the order a model's tier is looked up (see the module's
    docstring); None: every tier's globs, cheapest tier first."""
    heads: tuple[tuple[ModelGlobs, int], ...] = ()
    """Attention heads by model glob, in lookup order (see :meth:`attention_heads`)."""
    _memo: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def merge(cls, specs: Sequence[ModelCatalogSpec]) -> Catalog:
        """Layer catalog specs, earliest first; later ones take precedence."""
        tiers: dict[str, _TierParts] = {}
        prices: list[Any] = []
        minimums: list[tuple[ModelGlobs, int]] = []
        sizes: list[tuple[ModelGlobs, float]] = []
        heads: list[tuple[ModelGlobs, int]] = []
        gpu: dict[str, HourlyPrice] = {}
        instance: dict[str, HourlyPrice] = {}
        as_of: date | None = None
        for layer, spec in enumerate(specs):
            for tier in spec.tiers:
                parts = tiers.setdefault(tier.name, _TierParts())
                if tier.replace:
                    parts.globs.clear()
                    parts.downgrade_to.clear()
                parts.globs += [(layer, g) for g in tier.models]
                parts.downgrade_to.update(tier.downgradeTo)
            # within one document, the most specific glob first, then one scoped to a provider
            ordered = sorted(spec.prices, key=lambda p: (-_specificity(p.model), p.provider is None))
            prices[:0] = [(ModelGlobs([p.model]), p.provider, p) for p in ordered]
            minimums[:0] = [(ModelGlobs(m.models), m.minTokens) for m in spec.cacheMinimums]
            sizes[:0] = [(ModelGlobs([k]), v) for k, v in spec.modelSizes.items()]
            heads[:0] = [(ModelGlobs([k]), v) for k, v in spec.attentionHeads.items()]
            gpu.update({normalize_gpu(k): v for k, v in spec.gpuPrices.items()})
            instance.update({k.lower(): v for k, v in spec.instancePrices.items()})
            as_of = spec.pricesAsOf or as_of
        compiled = tuple(
            Tier(name, rank, ModelGlobs(g for _, g in t.globs), dict(t.downgrade_to), tuple(g for _, g in t.globs))
            for rank, (name, t) in enumerate(tiers.items())
        )
        # later layers first, then the more specific glob, then the cheaper tier
        lookup = sorted(
            (
                ((layer, _specificity(glob), -tier.rank), glob, tier)
                for tier, parts in zip(compiled, tiers.values(), strict=True)
                for layer, glob in parts.globs
            ),
            key=lambda entry: entry[0],
            reverse=True,
        )
        tier_globs = tuple((ModelGlobs([glob]), tier) for _, glob, tier in lookup)
        return cls(compiled, tuple(prices), tuple(minimums), gpu, instance, tuple(sizes), as_of, tier_globs,
                   tuple(heads))

    def _lookup(self, table: str, key: str, compute: Any) -> Any:
        memo_key = (table, key)
        try:
            return self._memo[memo_key]
        except KeyError:
            value = compute()
            if len(self._memo) < 65536:
                self._memo[memo_key] = value
            return value

    # --- tiers -------------------------------------------------------------------------------

    def tier(self, name: str) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    def tier_of(self, model: str) -> Tier | None:
        """The model's tier: that of the first glob, in lookup order, that matches it; or None."""
        key = model_key(model)
        return self._lookup("tier", key, lambda: _tier_of(key, self))  # type: ignore[no-any-return]

    # --- caching -----------------------------------------------------------------------------

    def min_cacheable_tokens(self, model: str) -> int | None:
        """The provider's minimum cacheable prefix for the model, when known."""
        key = model_key(model)
        return self._lookup(  # type: ignore[no-any-return]
            "cachemin", key, lambda: next((n for p, n in self.cache_minimums if p.match(key)), None)
        )

    def params_b(self, model: str) -> float | None:
        """Billions of parameters, from the catalog's modelSizes, else from the name (``-70b``)."""
        key = model_key(model)
        return self._lookup("size", key, lambda: _params_from_name(key, self.model_sizes))  # type: ignore[no-any-return]

    def attention_heads(self, model: str) -> int | None:
        """The model's attention heads (``num_attention_heads``), from the catalog's
        ``attentionHeads``; None when no glob matches. A trailing ``/`` of a local path is ignored."""
        key = model_key(model).rstrip("/")
        return self._lookup(  # type: ignore[no-any-return]
            "heads", key, lambda: next((n for p, n in self.heads if p.match(key)), None)
        )

    # --- prices ------------------------------------------------------------------------------

    def price_override(self, provider: str, model: str) -> ModelPrice | None:
        if not self.prices:
            return None
        key = model_key(model)
        return self._lookup(  # type: ignore[no-any-return]
            "override",
            f"{provider}\x00{key}",
            lambda: next((p for pat, prov, p in self.prices if pat.match(key) and prov in (None, provider)), None),
        )

    def gpu_price(self, gpu_type: str | None) -> HourlyPrice | None:
        """Per-GPU hourly prices; matches the longest known type inside the given name."""
        if not gpu_type:
            return None
        text = normalize_gpu(gpu_type)
        return self._lookup("gpu", text, lambda: _longest_key_in(text, self.gpu_prices))  # type: ignore[no-any-return]

    def instance_price(self, instance_type: str | None) -> HourlyPrice | None:
        return self.instance_prices.get(instance_type.lower()) if instance_type else None

    def hourly_usd(self, workload: Workload, *, spot: bool) -> float | None:
        """Estimated USD per hour for all replicas of a workload, or None when no price is known."""
        replicas = max(workload.replicas, 0)  # a workload scaled to zero costs nothing
        inst = self.instance_price(workload.instance_type)
        if inst is not None:
            return _pick(inst, spot) * replicas
        if workload.gpus > 0:
            gpu = self.gpu_price(workload.gpu_type)
            if gpu is not None:
                return _pick(gpu, spot) * workload.gpus * replicas
        return None

    def spot_hourly_usd(self, workload: Workload) -> float | None:
        inst = self.instance_price(workload.instance_type)
        price = inst if inst is not None else self.gpu_price(workload.gpu_type)
        if price is None or price.spotUsd is None:
            return None
        factor = 1.0 if inst is not None else workload.gpus
        return price.spotUsd * factor * max(workload.replicas, 0)

    def pricer(self, fallback: LlmPricer | None) -> LlmPricer:
        """An LlmPricer that uses this catalog's overrides first, then ``fallback`` (``fallback``
        itself when the catalog overrides no price: one layer less on every priced call)."""
        if not self.prices and fallback is not None:
            return fallback
        return _CatalogPricer(self, fallback)


@dataclass
class _TierParts:
    """A tier as the documents so far define it: (layer, glob) pairs and downgrade targets."""

    globs: list[tuple[int, str]] = field(default_factory=list)
    downgrade_to: dict[str, str] = field(default_factory=dict)


def _specificity(glob: str) -> int:
    """How specific a model glob is: its characters other than wildcards."""
    return len(glob) - sum(glob.count(c) for c in "*?")


def _tier_of(key: str, catalog: Catalog) -> Tier | None:
    if catalog.tier_globs is None:
        return next((t for t in catalog.tiers if t.pattern.match(key)), None)
    return next((tier for globs, tier in catalog.tier_globs if globs.match(key)), None)


def _pick(price: HourlyPrice, spot: bool) -> float:
    return price.spotUsd if spot and price.spotUsd is not None else price.onDemandUsd


def _longest_key_in(text: str, table: Mapping[str, HourlyPrice]) -> HourlyPrice | None:
    words = text.split("-")
    best = max((k for k in table if k in text or _words_in_order(k.split("-"), words)), key=len, default=None)
    return table[best] if best is not None else None


def _words_in_order(wanted: list[str], words: list[str]) -> bool:
    """``A100-80GB`` in ``A100-SXM4-80GB`` (NVIDIA's ``nvidia.com/gpu.product`` label puts the form
    factor between the model and the memory): each ``-``-separated word of the key, in order."""
    if len(wanted) < 2:
        return False
    rest = iter(words)
    return all(word in rest for word in wanted)


_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)b(?![a-z0-9])")
_MOE_SIZE = re.compile(r"(\d+)x(\d+(?:\.\d+)?)b(?![a-z0-9])")


def _params_from_name(model: str, sizes: Sequence[tuple[ModelGlobs, float]]) -> float | None:
    for pattern, value in sizes:
        if pattern.match(model):
            return value
    name = normalize_model(model)
    moe = _MOE_SIZE.search(name)
    if moe:
        return float(moe.group(1)) * float(moe.group(2))
    found = [float(m) for m in _SIZE.findall(name.replace("_", "-"))]
    return max(found) if found else None


@dataclass(frozen=True, slots=True)
class _CatalogPricer:
    catalog: Catalog
    fallback: LlmPricer | None

    @property
    def prices_context(self) -> bool:
        return bool(getattr(self.fallback, "prices_context", False))

    def cost(
        self, provider: str, model: str, usage: TokenUsage, *, batch: bool = False,
        context: Mapping[str, str] | None = None,
    ) -> float:
        override = self.catalog.price_override(provider, model)
        if override is not None:
            return _override_cost(override, usage, batch, provider, model)
        if self.fallback is None:
            raise PricingError(f"no price for model {model!r} ({provider}) and no price source configured; "
                               "give it one in a ModelCatalog document (spec.prices)")
        return cost_in_context(self.fallback, provider, model, usage, batch=batch, context=context)


# Anthropic bills a cache write at a multiple of the base input price, by the cache's lifetime
# (5 minutes: 1.25x; 1 hour: 2x); OpenAI, Gemini and self-hosted servers bill no write premium.
_WRITE_MULTIPLIERS = {"anthropic": (1.25, 2.0)}


def _override_cost(p: ModelPrice, usage: TokenUsage, batch: bool, provider: str, model: str) -> float:
    read = p.cacheReadPerMTok if p.cacheReadPerMTok is not None else p.inputPerMTok
    five_min, one_hour = _WRITE_MULTIPLIERS.get(provider, (1.0, 1.0))
    write = p.cacheWritePerMTok if p.cacheWritePerMTok is not None else p.inputPerMTok * five_min
    if p.cacheWrite1hPerMTok is not None:
        write_1h = p.cacheWrite1hPerMTok
    elif p.cacheWritePerMTok is not None and provider not in _WRITE_MULTIPLIERS:
        write_1h = write
    else:
        write_1h = p.inputPerMTok * one_hour
    # the audio share of input is taken to be uncached first, as the genai-prices pricer does
    audio_in = min(usage.input_audio_tokens, usage.input_tokens)
    audio_out = min(usage.output_audio_tokens, usage.output_tokens)
    audio_in_price = p.inputAudioPerMTok if p.inputAudioPerMTok is not None else p.inputPerMTok
    audio_out_price = p.outputAudioPerMTok if p.outputAudioPerMTok is not None else p.outputPerMTok
    text_out = usage.output_tokens - audio_out
    if usage.audio_seconds or usage.input_characters:  # a ModelCatalog price is per token only: never $0 for them
        raise PricingError(f"model {model!r} ({provider}; ModelCatalog price {p.model!r}) is priced per token, "
                           "yet the usage is billed in seconds of audio or characters of text")
    if (text_out and p.outputPerMTok is None) or (audio_out and audio_out_price is None):  # as genai-prices
        raise PricingError(f"model {model!r} ({provider}; ModelCatalog price {p.model!r}) has no output-token "
                           "price, yet the usage has output tokens")
    total = (
        (usage.input_tokens - audio_in) * p.inputPerMTok
        + audio_in * audio_in_price
        + text_out * (p.outputPerMTok or 0.0)
        + audio_out * (audio_out_price or 0.0)
        + usage.cache_read_tokens * read
        + usage.cache_write_5m_tokens * write
        + usage.cache_write_1h_tokens * write_1h
    ) / 1e6
    searches = usage.web_search_requests * (p.webSearchPerRequest or 0.0)  # per search: no batch discount
    return (total * 0.5 if batch else total) + searches


__all__ = ["HOURS_PER_MONTH", "Catalog", "ModelGlobs", "Tier", "model_key", "normalize_gpu", "normalize_model",
           "short_model_name"]
