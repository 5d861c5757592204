"""OpenAI Images bodies (``images.generate``) as ``llm_call`` subjects: the prompt estimate, the
output tokens a call is reserved for per image (OpenAI's GPT Image table), the price of the worst
case and of the usage, and how policies and the built-in library judge such a call."""

from __future__ import annotations

from typing import Any

import pytest
from llm_call_support import USER_BUDGET, judge, llm_call_policy, results
from policy_support import compile_text

from costwarden.adapters import openai_images as images
from costwarden.adapters.openai import usage_from_response
from costwarden.adapters.pricing import GenaiPricer
from costwarden.enforcers import openai_endpoints as endpoints
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP, worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError, PricingError

PRICER = GenaiPricer()
PROMPT = "a watercolour fox in the snow"  # 29 chars: 8 tokens by the prose estimate


def body(model: str = "gpt-image-1", prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, **extra}


# --- the output table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "quality", "tokens"),
    [
        ("1024x1024", "low", 272), ("1024x1024", "medium", 1056), ("1024x1024", "high", 4160),
        ("1024x1536", "low", 408), ("1024x1536", "medium", 1584), ("1024x1536", "high", 6240),
        ("1536x1024", "low", 400), ("1536x1024", "medium", 1568), ("1536x1024", "high", 6208),
    ],
)
def test_each_size_and_quality_reserves_openais_published_output_tokens(size: str, quality: str, tokens: int) -> None:
    call = images.subject_from_request(body(size=size, quality=quality))
    assert (call.request.max_tokens, call.request.choices) == (tokens, 1)
    assert images.output_tokens_per_image(body(size=size, quality=quality)) == tokens


@pytest.mark.parametrize(
    ("extra", "tokens"),
    [
        ({}, 6240),  # both default to auto: the largest image of the table
        ({"size": "auto", "quality": "auto"}, 6240),
        ({"size": None, "quality": None}, 6240),  # the SDK's omitted values, sent as null
        ({"size": "1024x1024"}, 4160),  # auto quality at a known size: its high quality
        ({"size": "1536x1024", "quality": "auto"}, 6208),
        ({"quality": "low"}, 408),  # auto size at a known quality: its largest size
        ({"quality": "medium", "size": "auto"}, 1584),
    ],
)
def test_auto_size_or_quality_reserves_the_largest_they_may_become(extra: dict[str, Any], tokens: int) -> None:
    assert images.subject_from_request(body(**extra)).request.max_tokens == tokens


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "gpt-image-1.5-2025-12-16", "openai/gpt-image-1"])
def test_the_table_holds_for_the_models_it_was_published_for(model: str) -> None:
    assert images.subject_from_request(body(model, size="1024x1024", quality="low")).request.max_tokens == 272


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("gpt-image-1-mini", {"size": "1024x1024", "quality": "low"}),  # bills more tokens than the table
        ("gpt-image-2", {"size": "1024x1024", "quality": "high"}),  # 7,024 tokens: another table
        ("gpt-image-2.5-flare", {"size": "1536x864", "quality": "max"}),
        ("gpt-image-1", {"size": "1792x1024", "quality": "high"}),  # a size outside the table
        ("gpt-image-1", {"size": "1024x1024", "quality": "hd"}),  # a quality outside the table
        ("some-image-model", {}),
    ],
)
def test_outside_the_table_the_output_is_left_to_the_budgets_clamp(model: str, extra: dict[str, Any]) -> None:
    call = images.subject_from_request(body(model, **extra))
    assert call.request.max_tokens is None
    assert worst_case_usage(call).output_tokens == OUTPUT_TOKENS_CAP  # never 0: reserved as far as the clamp


def test_n_images_are_n_choices_and_the_worst_case_holds_them_all() -> None:
    call = images.subject_from_request(body(n=3, size="1024x1536", quality="medium"))
    assert (call.request.max_tokens, call.request.choices) == (1584, 3)
    assert worst_case_usage(call) == TokenUsage(input_tokens=8, output_tokens=3 * 1584,
                                                output_image_tokens=3 * 1584)  # all of it image tokens


def test_gif_frames_are_each_reserved_as_an_image() -> None:
    call = images.subject_from_request(body(n=2, size="1024x1024", quality="low", output_format="gif", frame_count=4))
    assert (call.request.max_tokens, call.request.choices) == (272, 8)
    default = images.subject_from_request(body(size="1024x1024", quality="low", output_format="gif"))
    assert default.request.choices == images.DEFAULT_GIF_FRAMES == 9


# --- the subject ------------------------------------------------------------------------------------


def test_the_subject_is_an_images_call() -> None:
    call = images.subject_from_request(body(size="1024x1024", quality="high", n=2, output_format="webp"))
    req = call.request
    assert (call.type, call.provider, call.model, call.kind, call.phase) == (
        "llm_call", "openai", "gpt-image-1", "images", "pre")
    assert (req.api, req.input_tokens, req.stream, req.batch) == ("images", 8, False, False)
    assert (req.cacheable_prefix_tokens, req.cache_breakpoints, req.max_web_searches, req.output_audio) == (
        0, 0, 0, False)
    assert call.as_cel["kind"] == "images" and call.as_cel["request"]["max_tokens"] == 4160


def test_the_prompt_is_estimated_as_prose_with_no_framing() -> None:
    assert images.estimate_input_tokens(body(prompt="x" * 400)) == 100
    assert images.estimate_input_tokens(body(prompt="")) == 0


def test_attribution_comes_from_the_body_unless_given() -> None:
    assert images.subject_from_request(body(user="u-body")).user == "u-body"
    assert images.subject_from_request(body(user="u-body", safety_identifier="u-safe")).user == "u-safe"
    given = images.subject_from_request(body(user="u-body"), user="u-ctx", feature="art", team="design")
    assert (given.user, given.feature, given.team) == ("u-ctx", "art", "design")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"prompt": None}, "'prompt' must be a string"),
        ({"prompt": ["a", "b"]}, "'prompt' must be a string"),
        ({"n": 0}, "'n' must be at least 1"),
        ({"n": "2"}, "'n'"),
        ({"size": 1024}, "'size' must be a string"),
        ({"quality": ["high"]}, "'quality' must be a string"),
        ({"output_format": "gif", "frame_count": 0}, "'frame_count' must be at least 1"),
    ],
)
def test_a_malformed_body_is_refused(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(AdapterError, match=says):
        images.subject_from_request(body(**extra))


def test_a_body_without_a_model_is_refused() -> None:
    with pytest.raises(AdapterError, match="has no 'model'"):
        images.subject_from_request({"prompt": "hi"})


def test_a_streamed_call_reserves_100_output_tokens_a_partial_image() -> None:
    streamed = images.subject_from_request(body(size="1024x1024", quality="low", stream=True, partial_images=3))
    assert (streamed.request.stream, streamed.request.max_tokens) == (True, 272 + 3 * images.PARTIAL_IMAGE_TOKENS)
    plain = images.subject_from_request(body(size="1024x1024", quality="low", stream=False, partial_images=3))
    assert (plain.request.stream, plain.request.max_tokens) == (False, 272)  # partial images only stream
    with pytest.raises(AdapterError, match="partial_images"):
        images.subject_from_request(body(stream=True, partial_images=-1))


def test_provider_is_passed_through() -> None:
    assert images.subject_from_request(body(), provider="azure").provider == "azure"


# --- usage and price --------------------------------------------------------------------------------

RESPONSE = {
    "created": 1_780_000_000,
    "data": [{"b64_json": "iVBORw0KGgo="}],
    "usage": {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
              "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}},
}


def test_a_response_makes_a_post_call_with_its_usage() -> None:
    call = images.subject_from_request(body(size="1024x1024", quality="high"), response=RESPONSE)
    assert call.phase == "post"
    assert call.usage == TokenUsage(input_tokens=12, output_tokens=4160)
    assert usage_from_response(RESPONSE) == call.usage  # the shared reader the call-guard settles with


def test_gpt_image_1_is_priced_per_token_at_its_rates() -> None:
    # genai-prices: $5 / M text input, $40 / M output (image) tokens
    assert PRICER.cost("openai", "gpt-image-1", usage_from_response(RESPONSE)) == pytest.approx(
        12 * 5 / 1e6 + 4160 * 40 / 1e6)


def test_the_worst_case_is_priced_before_sending() -> None:
    call = images.subject_from_request(body(n=2, size="1536x1024", quality="high"))
    assert PRICER.cost("openai", call.model, worst_case_usage(call)) == pytest.approx(
        8 * 5 / 1e6 + 2 * 6208 * 40 / 1e6)


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3"])
def test_dall_e_models_have_no_token_price_and_are_never_priced_at_zero(model: str) -> None:
    call = images.subject_from_request(body(model, size="1024x1024", quality="standard"))
    with pytest.raises(PricingError, match=f"no price for model '{model}'"):
        PRICER.cost("openai", call.model, worst_case_usage(call))


# --- policies -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policies() -> PolicySet:
    """A $1 daily budget per user."""
    return compile_text(llm_call_policy("spend", {"cap": USER_BUDGET}, on_error="deny"), pricer=PRICER)


def test_a_budget_holds_the_worst_case_of_n_images(policies: Any) -> None:
    call = images.subject_from_request(body(n=4, size="1024x1024", quality="medium"), user="u-1")
    decision = judge(policies, call)
    assert decision.allowed, decision.summary()
    (hold,) = decision.holds
    assert hold.amount_usd == pytest.approx(8 * 5 / 1e6 + 4 * 1056 * 40 / 1e6)


def test_a_budget_refuses_what_it_cannot_hold(policies: Any) -> None:
    call = images.subject_from_request(body(n=10, size="1024x1536", quality="high"), user="u-2")  # $2.50
    decision = judge(policies, call)
    assert not decision.allowed
    assert results(decision)["spend/cap"] == "fail"


@pytest.mark.parametrize("model", ["dall-e-3", "gpt-image-9-secret"])
def test_an_unpriced_image_model_is_an_error_the_budget_denies_on(policies: Any, model: str) -> None:
    decision = judge(policies, images.subject_from_request(body(model), user="u"))
    assert results(decision)["spend/cap"] == "error"
    assert not decision.allowed


def test_the_builtin_library_holds_both_budgets_for_the_worst_case(builtin_policies: PolicySet) -> None:
    call = images.subject_from_request(body(size="1024x1024", quality="low"), feature="art", user="u-lib")
    by_rule = results(judge(builtin_policies, call))
    assert by_rule["feature-monthly-budget/monthly-feature-cap"] == "pass"
    assert by_rule["user-daily-budget/daily-user-cap"] == "pass"
    assert by_rule["require-llm-attribution/feature-and-user"] == "pass"


# --- routing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/images/generations", "/images/generations/",
                                  "/openai/deployments/gpt-image-1/images/generations"])  # Azure
def test_image_generation_is_guarded_through_the_images_edge(path: str) -> None:
    assert endpoints.path_api(path) == "images"
    assert endpoints.guarded_path("POST", path) and not endpoints.guarded_path("GET", path)
    assert endpoints.unguarded_spend("POST", path) is None
    assert endpoints.route(endpoints.edges(), path) is endpoints.OPENAI_IMAGES
    vllm = endpoints.route(endpoints.edges("vllm"), path).subject(body(size="1024x1024", quality="low"))
    assert (vllm.provider, vllm.kind, vllm.request.max_tokens) == ("vllm", "images", 272)


@pytest.mark.parametrize(("path", "api"), [("/v1/generations", "chat"), ("/v1/myimages/generations", "chat"),
                                           ("/v1/images/generations/x", "chat")])
def test_only_an_images_generations_path_is_the_images_api(path: str, api: str) -> None:
    assert endpoints.path_api(path) == api


@pytest.mark.parametrize("path", ["/v1/images/variations"])
def test_variations_still_pass_with_their_warning(path: str) -> None:
    assert not endpoints.guarded_path("POST", path)
    assert endpoints.unguarded_spend("POST", path) == path.removeprefix("/v1")
    assert "/images/generations" in endpoints.GUARDED and "/images/generations" not in endpoints.UNGUARDED_SPEND
