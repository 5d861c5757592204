"""Image tokens at their own rates, as audio tokens are: the image share of input and output read from
OpenAI usage, reserved for GPT Image calls (their output is image tokens) and priced by
:class:`GenaiPricer` at genai-prices' ``input_image`` / ``output_image`` / ``cache_image_read`` rates.

genai-prices (per MTok): ``gpt-image-1`` input $5, input image $10, cache read $1.25, cached image
$2.50, output $40 and no output image rate (its output is image); ``gpt-image-1.5`` input $5, input
image $8, cache read $1.25, cached image $2, output $10, output image $32."""

from __future__ import annotations

from typing import Any

import pytest
from genai_prices import calc_price, data_snapshot

from costwarden.adapters import openai
from costwarden.adapters import openai_images as images
from costwarden.adapters.pricing import GenaiPricer, genai_usage
from costwarden.engine.rules.budget import worst_case_usage
from costwarden.engine.subjects import TokenUsage

PRICER = GenaiPricer()
PROMPT = "a watercolour fox in the snow"  # 8 tokens by the prose estimate


def reference(usage: TokenUsage, model: str, provider: str = "openai", *, batch: bool = False) -> float:
    context = {"processing": "batch"} if batch else None
    return float(calc_price(genai_usage(usage), model_ref=model, provider_id=provider,
                            price_context=context).total_price)


# --- pricing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-image-1.5", "chatgpt-image-latest"])
def test_output_image_tokens_cost_the_output_image_rate(model: str) -> None:
    usage = TokenUsage(input_tokens=12, output_tokens=4160, output_image_tokens=4160)
    assert PRICER.cost("openai", model, usage) == pytest.approx((12 * 5 + 4160 * 32) / 1e6, rel=1e-12)
    assert PRICER.cost("openai", model, usage) == pytest.approx(reference(usage, model), rel=1e-12)
    as_text = TokenUsage(input_tokens=12, output_tokens=4160)  # what it was charged before: $10 / M
    assert PRICER.cost("openai", model, usage) > 3 * PRICER.cost("openai", model, as_text)


def test_the_text_share_of_output_keeps_the_output_rate() -> None:
    usage = TokenUsage(input_tokens=12, output_tokens=4200, output_image_tokens=4160)
    assert PRICER.cost("openai", "gpt-image-1.5", usage) == pytest.approx((12 * 5 + 40 * 10 + 4160 * 32) / 1e6)


def test_a_model_without_an_output_image_rate_prices_image_output_at_its_output_rate() -> None:
    usage = TokenUsage(input_tokens=12, output_tokens=4160, output_image_tokens=4160)
    expected = (12 * 5 + 4160 * 40) / 1e6  # gpt-image-1: its $40 output rate is its image rate
    assert PRICER.cost("openai", "gpt-image-1", usage) == pytest.approx(expected, rel=1e-12)
    assert PRICER.cost("openai", "gpt-image-1", TokenUsage(input_tokens=12, output_tokens=4160)) == pytest.approx(
        expected, rel=1e-12)
    text_model = TokenUsage(input_tokens=100, output_tokens=50, output_image_tokens=50)
    assert PRICER.cost("openai", "gpt-4.1", text_model) == PRICER.cost(
        "openai", "gpt-4.1", TokenUsage(input_tokens=100, output_tokens=50))


@pytest.mark.parametrize(("model", "text", "image"), [("gpt-image-1", 5, 10), ("gpt-image-1.5", 5, 8),
                                                      ("gpt-image-1-mini", 2, 2.5)])
def test_an_input_image_share_costs_the_input_image_rate(model: str, text: float, image: float) -> None:
    usage = TokenUsage(input_tokens=600, input_image_tokens=500)
    assert PRICER.cost("openai", model, usage) == pytest.approx((100 * text + 500 * image) / 1e6, rel=1e-12)
    assert PRICER.cost("openai", model, usage) == pytest.approx(reference(usage, model), rel=1e-12)


def test_cached_image_input_is_read_at_the_cache_image_read_rate() -> None:
    # which cached tokens were image is not reported: the image is taken to be uncached first (it
    # costs more), the rest of it read from the cache at $2 / M, the other reads text at $1.25 / M
    usage = TokenUsage(input_tokens=200, cache_read_tokens=300, input_image_tokens=400,
                       output_tokens=100, output_image_tokens=100)
    assert genai_usage(usage).cache_image_read_tokens == 200
    expected = (200 * 8 + 200 * 2 + 100 * 1.25 + 100 * 32) / 1e6
    assert PRICER.cost("openai", "gpt-image-1.5", usage) == pytest.approx(expected, rel=1e-12)
    assert PRICER.cost("openai", "gpt-image-1.5", usage) == pytest.approx(reference(usage, "gpt-image-1.5"), rel=1e-12)


def test_audio_and_image_shares_together_agree_with_genai_prices() -> None:
    """gpt-realtime prices audio and images apart: the audio is uncached first, then the image,
    and each modality's overflow is read from the cache at its own cached rate."""
    usage = TokenUsage(input_tokens=1_000, cache_read_tokens=500, input_audio_tokens=600, input_image_tokens=700,
                       output_tokens=300, output_audio_tokens=200)
    converted = genai_usage(usage)
    assert (converted.cache_audio_read_tokens, converted.cache_image_read_tokens) == (0, 300)
    assert PRICER.cost("openai", "gpt-realtime", usage) == pytest.approx(reference(usage, "gpt-realtime"), rel=1e-12)


def test_batch_image_tokens_cost_the_batch_rates() -> None:
    usage = TokenUsage(input_tokens=50, input_image_tokens=40, output_tokens=4160, output_image_tokens=4160)
    batch = PRICER.cost("openai", "gpt-image-1.5", usage, batch=True)
    assert batch == pytest.approx(reference(usage, "gpt-image-1.5", batch=True), rel=1e-12)
    assert batch < PRICER.cost("openai", "gpt-image-1.5", usage)


def _image_priced(provider_id: str) -> list[Any]:
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == provider_id)
    found = []
    for model in provider.models:
        prices = model.prices if not isinstance(model.prices, list) else model.prices[-1].prices
        imaged = any(getattr(prices, key, None) is not None for key in ("input_image_mtok", "output_image_mtok"))
        if imaged and getattr(prices, "output_mtok", None) is not None:  # embeddings refuse output tokens
            found.append(model)
    return found


@pytest.mark.parametrize("provider_id", ["openai", "google"])
def test_agrees_with_calc_price_on_image_tokens(provider_id: str) -> None:
    usages = [
        TokenUsage(input_tokens=3_000, output_tokens=1_800, input_image_tokens=1_200, output_image_tokens=1_290),
        TokenUsage(input_tokens=2_000, output_tokens=300, cache_read_tokens=1_000, input_image_tokens=2_500),
        TokenUsage(input_tokens=900, output_tokens=2_000, output_image_tokens=2_000, input_audio_tokens=300,
                   input_image_tokens=500),
    ]
    compared = 0
    for model in _image_priced(provider_id):
        for usage in usages:
            try:
                expected = reference(usage, model.id, provider_id)
            except (LookupError, ValueError):
                continue
            assert PRICER.cost(provider_id, model.id, usage) == pytest.approx(expected, rel=1e-9), (model.id, usage)
            compared += 1
    assert compared >= 6


# --- reading usage ----------------------------------------------------------------------------------


def test_an_images_response_reports_the_image_share_of_input_and_output() -> None:
    usage = {"input_tokens": 50, "output_tokens": 4200, "total_tokens": 4250,
             "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
             "output_tokens_details": {"image_tokens": 4160, "text_tokens": 40}}
    response = {"created": 1_780_000_000, "data": [{"b64_json": "iVBORw0KGgo="}], "usage": usage}
    assert openai.usage_from_response(response) == TokenUsage(
        input_tokens=50, output_tokens=4200, input_image_tokens=40, output_image_tokens=4160)


def test_chat_and_responses_usage_report_the_image_share_of_input() -> None:
    chat = {"prompt_tokens": 1_000, "completion_tokens": 30, "total_tokens": 1_030,
            "prompt_tokens_details": {"cached_tokens": 200, "image_tokens": 700, "audio_tokens": 0}}
    assert openai.usage_from_response({"object": "chat.completion", "usage": chat}) == TokenUsage(
        input_tokens=800, output_tokens=30, cache_read_tokens=200, input_image_tokens=700)
    responses = {"input_tokens": 900, "output_tokens": 40, "input_tokens_details": {"cached_tokens": 0,
                 "image_tokens": 600}, "output_tokens_details": {"reasoning_tokens": 0}}
    assert openai.usage_from_response({"object": "response", "usage": responses}).input_image_tokens == 600
    chunks = [{"choices": [{"delta": {"content": "hi"}}], "usage": None}, {"choices": [], "usage": chat}]
    assert openai.usage_from_chunks(chunks).input_image_tokens == 700
    events = [{"type": "response.completed", "response": {"usage": responses, "output": []}}]
    assert openai.usage_from_chunks(events).input_image_tokens == 600


def test_an_image_share_above_its_count_is_clamped_and_nulls_are_none() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"image_tokens": 99},
             "output_tokens_details": {"image_tokens": 50, "text_tokens": None}}
    assert openai.usage_from_response({"usage": usage}) == TokenUsage(
        input_tokens=10, output_tokens=5, input_image_tokens=10, output_image_tokens=5)
    nulls = {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"image_tokens": None},
             "output_tokens_details": None}
    assert openai.usage_from_response({"usage": nulls}) == TokenUsage(input_tokens=10, output_tokens=5)


# --- GPT Image calls: reserved and settled at the image rates ------------------------------------------


def test_an_images_request_says_its_output_is_image_tokens() -> None:
    call = images.subject_from_request({"model": "gpt-image-1.5", "prompt": PROMPT})
    assert call.request.output_image and not call.request.output_audio
    assert call.to_dict()["request"]["output_image"] is True
    chat = openai.subject_from_request({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    assert not chat.request.output_image


def test_gpt_image_1_5_worst_case_reserves_output_at_32_per_m() -> None:
    call = images.subject_from_request({"model": "gpt-image-1.5", "prompt": PROMPT, "n": 2, "size": "1536x1024",
                                        "quality": "high"})
    worst = worst_case_usage(call)
    assert worst.output_image_tokens == worst.output_tokens == 2 * 6208
    assert PRICER.cost("openai", call.model, worst) == pytest.approx((8 * 5 + 2 * 6208 * 32) / 1e6, rel=1e-12)
    assert worst_case_usage(call, output=False).output_image_tokens == 0


def test_gpt_image_1_worst_case_is_unchanged() -> None:
    call = images.subject_from_request({"model": "gpt-image-1", "prompt": PROMPT, "n": 2, "size": "1536x1024",
                                        "quality": "high"})
    assert PRICER.cost("openai", call.model, worst_case_usage(call)) == pytest.approx(
        (8 * 5 + 2 * 6208 * 40) / 1e6, rel=1e-12)


def test_a_gpt_image_1_5_response_settles_its_image_output_at_32_per_m() -> None:
    response = {"created": 1_780_000_000, "data": [{"b64_json": "iVBORw0KGgo="}],
                "usage": {"input_tokens": 8, "output_tokens": 4160, "total_tokens": 4168,
                          "input_tokens_details": {"text_tokens": 8, "image_tokens": 0},
                          "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0}}}
    body = {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024", "quality": "high"}
    call = images.subject_from_request(body, response=response)
    assert call.usage == TokenUsage(input_tokens=8, output_tokens=4160, output_image_tokens=4160)
    assert PRICER.cost("openai", call.model, call.usage) == pytest.approx((8 * 5 + 4160 * 32) / 1e6, rel=1e-12)
    assert PRICER.cost("openai", call.model, call.usage) == pytest.approx(
        PRICER.cost("openai", call.model, worst_case_usage(call)), rel=1e-12)  # served as reserved
