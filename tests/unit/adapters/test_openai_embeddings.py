"""OpenAI Embeddings bodies as ``llm_call`` subjects: the input estimate, the worst case a budget
reserves (input only), the price, and how the built-in policy library judges such a call."""

from __future__ import annotations

from typing import Any

import pytest
from llm_call_support import (
    MIXED_LISTS,
    SMALL_EMBEDDINGS_ONLY,
    USER_BUDGET,
    WRONG_TYPES,
    judge,
    llm_call_policy,
    results,
)
from policy_support import compile_text

from costwarden.adapters import openai_embeddings as embeddings
from costwarden.adapters.pricing import GenaiPricer
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.rules.budget import worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError, PricingError

PRICER = GenaiPricer()


def body(value: Any, model: str = "text-embedding-3-small", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": value, **extra}


# --- the input estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("hello world", 3),  # 11 chars / 4, rounded up; no framing
        (["hello world", "hi"], 3 + 1),  # each input rounded up on its own
        ([15339, 1917, 0], 3),  # token ids: exactly their count
        ([[15339, 1917], [9906], []], 3),  # token-id lists: the sum of their lengths
        ([], 0),
        ("", 0),
        ("héllo wörld", 4),  # non-ASCII weighs more (llm_payload's prose estimate)
    ],
)
def test_input_tokens_are_estimated_from_each_input_shape(value: Any, tokens: int) -> None:
    assert embeddings.estimate_input_tokens(body(value)) == tokens
    assert embeddings.subject_from_request(body(value)).request.input_tokens == tokens


@pytest.mark.parametrize(("value", "says"), [(None, "got NoneType"), *WRONG_TYPES, *MIXED_LISTS])
def test_an_input_of_no_shape_the_api_takes_is_refused(value: Any, says: str) -> None:
    with pytest.raises(AdapterError, match="'input' must be a string, a list of strings") as caught:
        embeddings.subject_from_request(body(value))
    assert says in str(caught.value)


def test_a_body_without_a_model_is_refused() -> None:
    with pytest.raises(AdapterError, match="has no 'model'"):
        embeddings.subject_from_request({"input": "hi"})


# --- the subject ----------------------------------------------------------------------------------


def test_the_subject_is_an_embeddings_call_with_no_output_and_nothing_to_cache() -> None:
    call = embeddings.subject_from_request(body(["a b", "c"], dimensions=256, encoding_format="base64"))
    req = call.request
    assert (call.type, call.provider, call.model, call.kind, call.phase) == (
        "llm_call", "openai", "text-embedding-3-small", "embeddings", "pre")
    assert (req.api, req.max_tokens, req.choices, req.stream, req.batch) == ("embeddings", None, 0, False, False)
    assert (req.cacheable_prefix_tokens, req.cache_breakpoints, req.prefix_pointer) == (0, 0, None)
    assert (req.max_web_searches, req.output_audio) == (0, False)
    assert call.as_cel["kind"] == "embeddings" and call.as_cel["request"]["max_tokens"] is None


def test_attribution_comes_from_the_body_user_unless_given() -> None:
    assert embeddings.subject_from_request(body("hi", user="u-body")).user == "u-body"
    given = embeddings.subject_from_request(body("hi", user="u-body"), user="u-ctx", feature="rag", team="search",
                                            tags={"env": "prod"})
    assert (given.user, given.feature, given.team) == ("u-ctx", "rag", "search")
    assert dict(given.attribution) == {"env": "prod", "feature": "rag", "user": "u-ctx", "team": "search"}
    assert embeddings.subject_from_request(body("hi", user="")).user is None


def test_provider_and_batch_are_passed_through() -> None:
    call = embeddings.subject_from_request(body("hi"), provider="azure", batch=True)
    assert (call.provider, call.kind, call.request.batch) == ("azure", "batch", True)


def test_a_response_makes_a_post_call_with_its_prompt_tokens_and_no_output() -> None:
    response = {"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": "AAAAAA=="}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    call = embeddings.subject_from_request(body("hi there"), response=response)
    assert call.phase == "post"
    assert call.usage == TokenUsage(input_tokens=7)


# --- the worst case and its price -----------------------------------------------------------------


def test_the_worst_case_is_the_input_alone_and_it_has_a_price() -> None:
    call = embeddings.subject_from_request(body(["one two three four"] * 100, model="text-embedding-3-large"))
    worst = worst_case_usage(call)
    assert worst == TokenUsage(input_tokens=500)  # no output: embeddings models have no output price
    assert PRICER.cost("openai", call.model, worst) == pytest.approx(500 * 0.13 / 1e6)


@pytest.mark.parametrize(("model", "usd_per_mtok"),
                         [("text-embedding-3-small", 0.02), ("text-embedding-3-large", 0.13),
                          ("text-embedding-ada-002", 0.10)])
def test_embeddings_models_are_priced_per_input_token(model: str, usd_per_mtok: float) -> None:
    call = embeddings.subject_from_request(body([[1] * 1000], model=model))
    assert PRICER.cost("openai", model, worst_case_usage(call)) == pytest.approx(1000 * usd_per_mtok / 1e6)
    assert PRICER.cost("openai", model, worst_case_usage(call), batch=True) == pytest.approx(500 * usd_per_mtok / 1e6)


def test_an_unknown_embeddings_model_is_never_priced_at_zero() -> None:
    call = embeddings.subject_from_request(body("hi", model="text-embedding-9-secret"))
    with pytest.raises(PricingError, match="no price for model 'text-embedding-9-secret'"):
        PRICER.cost("openai", call.model, worst_case_usage(call))


# --- policies -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policies() -> PolicySet:
    """A $1 daily budget per user, an allowlist of embeddings models, and a prompt-caching rule."""
    return compile_text(
        llm_call_policy("spend", {"cap": USER_BUDGET}, on_error="deny"),
        SMALL_EMBEDDINGS_ONLY,
        llm_call_policy("caching", {"cache-long-prefixes": "requirePromptCaching: {minTokens: 1000, fix: true}"}),
        pricer=PRICER)


def test_a_budget_holds_the_input_cost_and_caching_rules_do_not_fire(policies: Any) -> None:
    call = embeddings.subject_from_request(body([[7] * 2000] * 3), user="u-1")
    decision = judge(policies, call)
    assert decision.allowed, decision.summary()
    assert results(decision)["caching/cache-long-prefixes"] == "skip"  # OpenAI caches on its own
    (hold,) = decision.holds
    assert hold.amount_usd == pytest.approx(6000 * 0.02 / 1e6)


def test_an_allowlist_on_the_model_still_judges_embeddings(policies: Any) -> None:
    decision = judge(policies, embeddings.subject_from_request(body("hi", model="text-embedding-3-large"), user="u"))
    assert not decision.allowed
    assert results(decision)["embedders/small-only"] == "fail"
    assert "text-embedding-3-large" in decision.summary()


def test_an_unknown_model_is_an_error_the_budget_denies_on(policies: Any) -> None:
    decision = judge(policies, embeddings.subject_from_request(body("hi", model="text-embedding-9-secret"), user="u"))
    assert results(decision)["spend/cap"] == "error"
    assert not decision.allowed


def test_the_builtin_library_holds_both_budgets_for_the_input_alone(builtin_policies: PolicySet) -> None:
    call = embeddings.subject_from_request(body([[1] * 500] * 2), feature="search", user="u-lib")
    decision = judge(builtin_policies, call)
    by_rule = results(decision)
    assert by_rule["feature-monthly-budget/monthly-feature-cap"] == "pass"
    assert by_rule["user-daily-budget/daily-user-cap"] == "pass"
    assert by_rule["require-llm-attribution/feature-and-user"] == "pass"
    assert [h.amount_usd for h in decision.holds] == pytest.approx([1000 * 0.02 / 1e6] * 2)


def test_the_builtin_library_allows_an_embeddings_call(builtin_policies: PolicySet) -> None:
    for feature in ("search", "classify", "code"):
        call = embeddings.subject_from_request(body("hello world"), feature=feature, user="u-lib")
        decision = judge(builtin_policies, call)
        assert decision.allowed, decision.summary()
        assert decision.fixes() == []
