"""OpenAI Responses compaction bodies (``responses.compact``) as ``llm_call`` subjects: the input
estimate (the Responses one), no field that caps output, the worst case a budget reserves, the
usage of a ``CompactedResponse``, and how the built-in policy library judges such a call."""

from __future__ import annotations

from typing import Any

import pytest
from llm_call_support import USER_BUDGET, judge, llm_call_policy, results
from policy_support import compile_text

from costwarden.adapters import openai as responses
from costwarden.adapters import openai_compaction as compaction
from costwarden.adapters.pricing import GenaiPricer
from costwarden.engine.pricing import cost_in_context, price_context
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP, worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

PRICER = GenaiPricer()
CONVERSATION = [
    {"role": "developer", "content": "Answer tersely."},
    {"role": "user", "content": "What is the capital of France?"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris."}]},
    {"role": "user", "content": [{"type": "input_text", "text": "And of Germany?"}]},
]


def body(model: str = "gpt-5", **extra: Any) -> dict[str, Any]:
    return {"model": model, **extra}


# --- the input estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"input": "Summarise the thread so far, please."},
        {"input": CONVERSATION},
        {"input": CONVERSATION, "instructions": "You compact conversations for a support bot."},
        {"instructions": "Only instructions."},
        {},
    ],
)
def test_the_input_is_estimated_as_a_responses_body_is(extra: dict[str, Any]) -> None:
    call = compaction.subject_from_request(body(**extra))
    as_responses = responses.subject_from_request(body(**{"input": [], **extra}))  # api "responses"
    assert call.request.input_tokens == as_responses.request.input_tokens > 0
    assert call.request.cacheable_prefix_tokens == as_responses.request.cacheable_prefix_tokens
    assert compaction.estimate_input_tokens(body(**extra)) == call.request.input_tokens


def test_instructions_and_input_both_count() -> None:
    alone = compaction.estimate_input_tokens(body(input=CONVERSATION))
    with_instructions = compaction.estimate_input_tokens(body(input=CONVERSATION, instructions="x " * 200))
    assert with_instructions - alone >= 100  # 400 characters of instructions: about 100 tokens more


def test_a_previous_response_is_context_the_estimate_cannot_see() -> None:
    """``previous_response_id`` carries the stored conversation: it adds nothing to the estimate
    (the usage settles what it was), so the worst case of a compaction of a long stored thread is low."""
    plain = compaction.estimate_input_tokens(body(input="Go on."))
    assert compaction.estimate_input_tokens(body(input="Go on.", previous_response_id="resp_abc")) == plain


def test_a_previous_compaction_item_counts_nothing_for_its_encrypted_content() -> None:
    item = {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAA" + "x" * 4_000}
    assert compaction.estimate_input_tokens(body(input=[item])) < 10


@pytest.mark.parametrize(("value", "says"), [(42, "got int"), ({"role": "user"}, "got dict")])
def test_an_input_of_no_shape_the_api_takes_is_refused(value: Any, says: str) -> None:
    with pytest.raises(AdapterError, match="'input' must be a list") as caught:
        compaction.subject_from_request(body(input=value))
    assert says in str(caught.value)


@pytest.mark.parametrize("model", [None, "", 3])
def test_a_body_without_a_model_is_refused(model: Any) -> None:
    with pytest.raises(AdapterError, match="model"):
        compaction.subject_from_request({"model": model, "input": "hi"})


# --- the subject ----------------------------------------------------------------------------------


def test_the_subject_is_a_compaction_with_one_completion_and_no_field_to_cap() -> None:
    call = compaction.subject_from_request(body(input=CONVERSATION, prompt_cache_key="k-1", service_tier="flex"))
    req = call.request
    assert (call.type, call.provider, call.model, call.kind, call.phase) == (
        "llm_call", "openai", "gpt-5", "responses.compact", "pre")
    assert compaction.API == "responses.compact"
    assert (req.api, req.max_tokens, req.max_tokens_field, req.choices) == ("responses.compact", None, "", 1)
    assert (req.stream, req.batch, req.cache_breakpoints, req.prefix_pointer) == (False, False, 0, None)
    assert (req.max_web_searches, req.output_audio, req.output_image) == (0, False, False)
    assert call.as_cel["kind"] == "responses.compact" and call.as_cel["request"]["max_tokens"] is None


def test_attribution_and_provider_pass_through() -> None:
    given = compaction.subject_from_request(body(input="hi"), user="u-ctx", feature="chat", team="support",
                                            tags={"env": "prod"}, provider="azure")
    assert (given.user, given.feature, given.team, given.provider) == ("u-ctx", "chat", "support", "azure")
    assert compaction.subject_from_request(body(input="hi", safety_identifier="u-body")).user == "u-body"


# --- the worst case, the usage and the price ---------------------------------------------------------


def test_the_worst_case_is_the_input_plus_the_clamped_output_cap() -> None:
    call = compaction.subject_from_request(body(input=CONVERSATION))
    assert worst_case_usage(call) == TokenUsage(input_tokens=call.request.input_tokens,
                                                output_tokens=OUTPUT_TOKENS_CAP)


COMPACTED = {
    "id": "cmp_123", "object": "response.compaction", "model": "gpt-5-2025-08-07", "created_at": 1764460800,
    "output": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
               {"type": "compaction", "id": "cmp_item_1", "encrypted_content": "gAAAA"}],
    "usage": {"input_tokens": 5_000, "input_tokens_details": {"cached_tokens": 1_000},
              "output_tokens": 700, "output_tokens_details": {"reasoning_tokens": 300}, "total_tokens": 5_700},
}


def test_a_compacted_response_is_read_by_the_openai_usage_reader() -> None:
    usage = responses.usage_from_response(COMPACTED)
    assert usage == TokenUsage(input_tokens=4_000, cache_read_tokens=1_000, output_tokens=700)
    call = compaction.subject_from_request(body(input="hi"), response=COMPACTED)
    assert (call.phase, call.usage) == ("post", usage)


def test_the_service_tier_prices_the_worst_case_as_a_responses_call() -> None:
    flex, standard, priority = (compaction.subject_from_request(body(input=CONVERSATION, service_tier=tier))
                                for tier in ("flex", "default", "priority"))
    costs = [cost_in_context(PRICER, c.provider, c.model, worst_case_usage(c), context=price_context(c.body))
             for c in (flex, standard, priority)]
    assert costs[2] == pytest.approx(2 * costs[1]) and costs[0] == pytest.approx(costs[1] / 2)


# --- policies -------------------------------------------------------------------------------------

CAP = llm_call_policy("cap", {"output-cap": "maxOutputTokens: {limit: 256}"})


def test_max_output_tokens_skips_a_compaction_and_adds_no_field() -> None:
    decision = judge(compile_text(CAP), compaction.subject_from_request(body(input="hi")))
    (result,) = decision.results
    assert result.result == "skip" and result.fix is None


def test_a_budget_holds_the_worst_case() -> None:
    policies = compile_text(llm_call_policy("budget", {"daily": USER_BUDGET}), pricer=PRICER)
    call = compaction.subject_from_request(body(model="gpt-5-mini", input=CONVERSATION), user="u-1")
    decision = judge(policies, call)
    assert results(decision) == {"budget/daily": "pass"}
    (hold,) = decision.holds
    assert hold.amount_usd == pytest.approx(PRICER.cost(call.provider, call.model, worst_case_usage(call)))
    assert hold.amount_usd > PRICER.cost(call.provider, call.model, TokenUsage(output_tokens=OUTPUT_TOKENS_CAP))


def test_a_policy_scoped_to_responses_kinds_can_name_compaction() -> None:
    only = llm_call_policy("no-compaction", {"deny": 'allowedModels: {default: ["gpt-5-nano"], onViolation: deny}'},
                           match="{kinds: [responses.compact]}")
    policies = compile_text(only, pricer=PRICER)
    assert results(judge(policies, compaction.subject_from_request(body(input="hi")))) == {
        "no-compaction/deny": "fail"}
    assert results(judge(policies, responses.subject_from_request(body(input="hi")))) == {}
    responses_only = compile_text(only.replace("[responses.compact]", "[responses]"), pricer=PRICER)
    assert results(judge(responses_only, compaction.subject_from_request(body(input="hi")))) == {}


def test_the_builtin_tier_policy_downgrades_a_compaction(builtin_policies: Any) -> None:
    """``allowed-model-tiers`` excludes only the APIs chat models do not serve: a compaction is a
    Responses call, so a classify feature's compaction on gpt-4.1 is downgraded to the simple tier."""
    call = compaction.subject_from_request(body(model="gpt-4.1", input=CONVERSATION), feature="classify",
                                           user="u-2")
    decision = judge(builtin_policies, call)
    tiers = [r for r in decision.results if r.policy == "allowed-model-tiers" and r.result == "fail"]
    assert tiers and tiers[0].fix is not None
    assert {"op": "replace", "path": "/model", "value": "gpt-4.1-mini"} in tiers[0].fix.patch
    assert not [r for r in decision.results if r.policy == "cap-output-tokens" and r.result == "fail"]
