"""GenaiPricer: published per-MTok prices, batch, tiers, unknown models, agreement with genai-prices."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from costwarden.adapters.pricing import GenaiPricer, genai_usage
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import PricingError

MIXED = TokenUsage(
    input_tokens=1_000,
    output_tokens=500,
    cache_read_tokens=3_000,
    cache_write_5m_tokens=1_500,
    cache_write_1h_tokens=500,
)


@pytest.fixture(scope="module")
def pricer() -> GenaiPricer:
    return GenaiPricer()


def test_is_an_llm_pricer(pricer: GenaiPricer) -> None:
    assert isinstance(pricer, LlmPricer)


def test_claude_sonnet_4_5_matches_published_prices(pricer: GenaiPricer) -> None:
    # Anthropic: $3 input, $15 output, $0.30 cache read, $3.75 5m write, $6 1h write per MTok.
    expected = (1_000 * 3 + 500 * 15 + 3_000 * 0.30 + 1_500 * 3.75 + 500 * 6) / 1e6
    assert pricer.cost("anthropic", "claude-sonnet-4-5", MIXED) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.020025)


def test_gpt_4o_mini_matches_published_prices(pricer: GenaiPricer) -> None:
    # OpenAI: $0.15 input, $0.60 output, $0.075 cached input per MTok; no cache-write price, so
    # writes bill as input.
    usage = TokenUsage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)
    expected = (10_000 * 0.15 + 2_000 * 0.60 + 4_000 * 0.075) / 1e6
    assert pricer.cost("openai", "gpt-4o-mini", usage) == pytest.approx(expected, rel=1e-12)
    writes = TokenUsage(cache_write_5m_tokens=1_000_000)
    assert pricer.cost("openai", "gpt-4o-mini", writes) == pytest.approx(0.15)


def test_long_context_tier_applies_to_every_token(pricer: GenaiPricer) -> None:
    # Sonnet 4.5 above 200k input tokens: $6 input, $22.50 output, $0.60 read per MTok.
    usage = TokenUsage(input_tokens=150_000, output_tokens=1_000, cache_read_tokens=60_000)
    expected = (150_000 * 6 + 1_000 * 22.5 + 60_000 * 0.6) / 1e6
    assert pricer.cost("anthropic", "claude-sonnet-4-5", usage) == pytest.approx(expected, rel=1e-12)
    below = TokenUsage(input_tokens=150_000, output_tokens=1_000)
    assert pricer.cost("anthropic", "claude-sonnet-4-5", below) == pytest.approx((150_000 * 3 + 15_000) / 1e6)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "anthropic/claude-sonnet-4-5"),
        ("", "anthropic/claude-sonnet-4-5"),
        ("anthropic", "Claude-Sonnet-4-5"),
    ],
)
def test_prefixes_and_snapshots_resolve(pricer: GenaiPricer, provider: str, model: str) -> None:
    assert pricer.cost(provider, model, MIXED) == pricer.cost("anthropic", "claude-sonnet-4-5", MIXED)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-imaginary-9"),
        ("openai", "VAR_chat_model_id"),
        ("openai", "claude-sonnet-4-5"),
        ("self-hosted", "llama-3-70b"),
    ],
)
def test_unknown_model_raises_naming_model_and_provider(pricer: GenaiPricer, provider: str, model: str) -> None:
    for _ in range(2):  # the miss is cached and raised again, never turned into $0
        with pytest.raises(PricingError, match=f"{model!r}.*{provider!r}"):
            pricer.cost(provider, model, MIXED)


def test_model_not_priced_per_token_raises(pricer: GenaiPricer) -> None:
    with pytest.raises(PricingError, match="not priced per token"):
        pricer.cost("openai", "gpt-live-1", MIXED)


def test_free_model_is_free(pricer: GenaiPricer) -> None:
    assert pricer.cost("google", "gemma-3", MIXED) == 0.0


def test_batch_uses_genai_batch_price_when_there_is_one(pricer: GenaiPricer) -> None:
    # gpt-4o-mini has a batch price table whose cached-input rate is not half the standard one.
    usage = TokenUsage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)
    expected = calc_price(
        genai_usage(usage), model_ref="gpt-4o-mini", provider_id="openai", price_context={"processing": "batch"}
    ).total_price
    batch = pricer.cost("openai", "gpt-4o-mini", usage, batch=True)
    assert batch == pytest.approx(float(expected), rel=1e-12)
    assert batch != pytest.approx(0.5 * pricer.cost("openai", "gpt-4o-mini", usage))
    # Claude Haiku 4.5's batch table is exactly half.
    assert pricer.cost("anthropic", "claude-haiku-4-5", MIXED, batch=True) == pytest.approx(
        0.5 * pricer.cost("anthropic", "claude-haiku-4-5", MIXED), rel=1e-12
    )


def test_batch_without_batch_price_is_half(pricer: GenaiPricer) -> None:
    info = data_snapshot.get_snapshot().find_provider_model("claude-3-5-sonnet", None, "anthropic", None)[1]
    assert not info.price_variants  # no batch table in genai-prices for this model
    standard = pricer.cost("anthropic", "claude-3-5-sonnet-20241022", MIXED)
    assert pricer.cost("anthropic", "claude-3-5-sonnet-20241022", MIXED, batch=True) == pytest.approx(standard / 2)


def test_genai_usage_input_is_total_input() -> None:
    usage = genai_usage(MIXED)
    assert usage.input_tokens == MIXED.total_input_tokens == 6_000
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (3_000, 2_000, 500)


def _token_priced_models(provider_id: str) -> list[Any]:
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == provider_id)
    return [m for m in provider.models if _price(m, "input_mtok") is not None]


def _price(model: Any, key: str) -> Any:
    prices = model.prices if not isinstance(model.prices, list) else model.prices[-1].prices
    return getattr(prices, key, None)


@pytest.mark.parametrize("provider_id", ["anthropic", "openai", "google", "x-ai"])
@pytest.mark.parametrize("batch", [False, True])
def test_agrees_with_calc_price_on_every_model(pricer: GenaiPricer, provider_id: str, batch: bool) -> None:
    usages = [MIXED, TokenUsage(input_tokens=250_000, output_tokens=9_000, cache_read_tokens=90_000)]
    compared = 0
    for model in _token_priced_models(provider_id):
        for usage in usages:
            try:
                reference = calc_price(
                    genai_usage(usage),
                    model_ref=model.id,
                    provider_id=provider_id,
                    price_context={"processing": "batch"} if batch else None,
                ).total_price
            except (LookupError, ValueError):
                continue
            if _price(model, "output_mtok") is None:  # embeddings: output tokens are refused, not $0
                with pytest.raises(PricingError, match="no output-token price"):
                    pricer.cost(provider_id, model.id, usage, batch=batch)
                continue
            ours = pricer.cost(provider_id, model.id, usage, batch=batch)
            if batch and not any(v.when == {"processing": "batch"} for v in model.price_variants or ()):
                reference *= Decimal("0.5")
            assert ours == pytest.approx(float(reference), rel=1e-9, abs=1e-12), (model.id, usage)
            compared += 1
    assert compared >= 10


def test_warm_pricing_is_fast(pricer: GenaiPricer) -> None:
    pricer.cost("anthropic", "claude-sonnet-4-5", MIXED)
    rounds = 2_000
    start = time.perf_counter()
    for _ in range(rounds):
        pricer.cost("anthropic", "claude-sonnet-4-5", MIXED)
    per_call_s = (time.perf_counter() - start) / rounds
    assert per_call_s < 50e-6  # calc_price itself takes ~300 µs


def test_importing_the_pricer_does_not_import_genai_prices() -> None:
    code = "import sys, costwarden.adapters.pricing; print('genai_prices' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- web searches and audio tokens -------------------------------------------------------------


def _reference(usage: TokenUsage, model: str, provider: str, batch: bool = False) -> float:
    context = {"processing": "batch"} if batch else None
    price = calc_price(genai_usage(usage), model_ref=model, provider_id=provider, price_context=context)
    return float(price.total_price)


def test_web_searches_are_priced_per_search(pricer: GenaiPricer) -> None:
    # genai-prices bills Anthropic web searches per 1,000 (web_searches_kcount) on top of tokens.
    usage = TokenUsage(input_tokens=1_000, output_tokens=200, web_search_requests=5)
    expected = float(calc_price(Usage(input_tokens=1_000, output_tokens=200, web_searches=5),
                                model_ref="claude-haiku-4-5-20251001", provider_id="anthropic").total_price)
    tokens_only = calc_price(Usage(input_tokens=1_000, output_tokens=200), model_ref="claude-haiku-4-5-20251001",
                             provider_id="anthropic").total_price
    assert expected > float(tokens_only) * 10  # 5 searches cost far more than the tokens
    assert pricer.cost("anthropic", "claude-haiku-4-5-20251001", usage) == pytest.approx(expected, rel=1e-12)
    # tiered models too (Sonnet 4.5, above its 200k tier)
    big = TokenUsage(input_tokens=250_000, output_tokens=1_000, web_search_requests=3)
    assert pricer.cost("anthropic", "claude-sonnet-4-5", big) == pytest.approx(
        _reference(big, "claude-sonnet-4-5", "anthropic"), rel=1e-12)


def test_web_searches_are_not_batch_discounted(pricer: GenaiPricer) -> None:
    searches = TokenUsage(web_search_requests=4)
    per_search = float(_price(data_snapshot.get_snapshot().find_provider_model(
        "claude-3-5-sonnet", None, "anthropic", None)[1], "web_searches_kcount") or 0) / 1_000
    if not per_search:
        pytest.skip("genai-prices has no web search price for claude-3-5-sonnet")
    assert pricer.cost("anthropic", "claude-3-5-sonnet-20241022", searches, batch=True) == pytest.approx(4 * per_search)


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-audio"])
def test_audio_tokens_are_priced_at_the_audio_rate(pricer: GenaiPricer, model: str) -> None:
    usage = TokenUsage(input_tokens=1_000, output_tokens=200, input_audio_tokens=400, output_audio_tokens=150)
    text = TokenUsage(input_tokens=1_000, output_tokens=200)
    reported = Usage(input_tokens=1_000, output_tokens=200, input_audio_tokens=400, output_audio_tokens=150)
    expected = float(calc_price(reported, model_ref=model, provider_id="openai").total_price)
    assert expected > pricer.cost("openai", model, text) * 2  # audio is several times the text rate
    assert pricer.cost("openai", model, usage) == pytest.approx(expected, rel=1e-12)


def test_cached_input_with_audio_takes_the_audio_as_uncached(pricer: GenaiPricer) -> None:
    # gpt-realtime prices cached audio apart; usage does not say which cached tokens were audio,
    # so the audio is billed uncached first (the higher price) and the overflow as cached audio.
    for audio in (300, 900):
        usage = TokenUsage(input_tokens=700, output_tokens=100, cache_read_tokens=300, input_audio_tokens=audio)
        expected = calc_price(
            genai_usage(usage), model_ref="gpt-realtime", provider_id="openai").total_price
        assert genai_usage(usage).cache_audio_read_tokens == max(0, audio - 700)
        assert pricer.cost("openai", "gpt-realtime", usage) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("provider_id", ["anthropic", "openai", "google"])
def test_agrees_with_calc_price_on_audio_and_searches(pricer: GenaiPricer, provider_id: str) -> None:
    usages = [
        TokenUsage(input_tokens=3_000, output_tokens=800, input_audio_tokens=1_200, output_audio_tokens=500),
        TokenUsage(input_tokens=2_000, output_tokens=300, cache_read_tokens=1_000, input_audio_tokens=2_500),
        TokenUsage(input_tokens=2_000, output_tokens=300, web_search_requests=7),
    ]
    compared = 0
    for model in _token_priced_models(provider_id):
        if _price(model, "output_mtok") is None:
            continue
        for usage in usages:
            try:
                reference = _reference(usage, model.id, provider_id)
            except (LookupError, ValueError):
                continue
            assert pricer.cost(provider_id, model.id, usage) == pytest.approx(reference, rel=1e-9), (model.id, usage)
            compared += 1
    assert compared > 20


@pytest.mark.parametrize("usage", [TokenUsage(audio_seconds=60), TokenUsage(input_characters=1_000),
                                   TokenUsage(input_tokens=10, audio_seconds=60)])
def test_seconds_or_characters_on_a_model_priced_by_the_token_raise_never_cost_nothing(
        pricer: GenaiPricer, usage: TokenUsage) -> None:
    with pytest.raises(PricingError, match="has no price for"):
        pricer.cost("openai", "gpt-4.1-mini", usage)


def test_seconds_and_characters_on_the_models_billed_by_them(pricer: GenaiPricer) -> None:
    assert pricer.cost("openai", "whisper-1", TokenUsage(audio_seconds=60)) == pytest.approx(0.006)
    assert pricer.cost("openai", "tts-1", TokenUsage(input_characters=1_000)) == pytest.approx(0.015)
