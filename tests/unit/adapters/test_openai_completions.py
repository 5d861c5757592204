"""OpenAI legacy Completions bodies as ``llm_call`` subjects: every prompt shape, the completions
``n`` and ``best_of`` generate, ``max_tokens``' default per provider, malformed bodies, the worst case a
budget reserves, and which guarded path routes to which builder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llm_call_support import MIXED_LISTS, USER_BUDGET, WRONG_TYPES, judge, llm_call_policy
from policy_support import compile_text

from costwarden.adapters import openai_completions as completions
from costwarden.adapters.pricing import GenaiPricer
from costwarden.enforcers.openai_endpoints import (
    GUARDED,
    UNGUARDED_SPEND,
    edges,
    guarded_path,
    path_api,
    route,
    unguarded_spend,
    usage_on_request,
)
from costwarden.enforcers.openai_stream import OpenAIStream
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP, worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

PRICER = GenaiPricer()
INSTRUCT = "gpt-3.5-turbo-instruct"


def body(prompt: Any, model: str = INSTRUCT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, **extra}


# --- the input estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "tokens", "prompts"),
    [
        ("hello world", 3, 1),  # 11 chars / 4, rounded up; no framing
        (["hello world", "hi"], 3 + 1, 2),  # each prompt rounded up on its own
        ([15339, 1917, 0], 3, 1),  # token ids: one prompt, exactly its count
        ([[15339, 1917], [9906], []], 3, 3),  # token-id lists: a prompt each, the sum of their lengths
        ("", 0, 1),
        (None, 0, 1),  # no prompt: OpenAI generates from the start of a document
        ("héllo wörld", 4, 1),  # non-ASCII weighs more (llm_payload's prose estimate)
    ],
)
def test_input_tokens_and_prompts_come_from_each_prompt_shape(prompt: Any, tokens: int, prompts: int) -> None:
    assert completions.estimate_input_tokens(body(prompt)) == tokens
    call = completions.subject_from_request(body(prompt, max_tokens=5))
    assert (call.request.input_tokens, call.request.choices) == (tokens, prompts)


def test_a_missing_prompt_is_one_empty_prompt() -> None:
    call = completions.subject_from_request({"model": INSTRUCT, "max_tokens": 5})
    assert (call.request.input_tokens, call.request.choices) == (0, 1)


def test_a_suffix_is_input_to_every_prompt() -> None:
    # "one two three four" is 18 chars: 5 tokens; the suffix "the end." 8 chars: 2 tokens, twice
    call = completions.subject_from_request(body(["one two three four", "xyz"], suffix="the end."))
    assert call.request.input_tokens == 5 + 1 + 2 * 2
    tokens = completions.subject_from_request(body([[1, 2, 3]], suffix="the end."))
    assert tokens.request.input_tokens == 3 + 2


def test_echo_adds_nothing_to_the_input_or_the_worst_case() -> None:
    plain = completions.subject_from_request(body("say this back", max_tokens=7))
    echoed = completions.subject_from_request(body("say this back", max_tokens=7, echo=True))
    assert echoed.request == plain.request
    assert worst_case_usage(echoed) == worst_case_usage(plain) == TokenUsage(input_tokens=4, output_tokens=7)


@pytest.mark.parametrize(("prompt", "says"), [*WRONG_TYPES, ([], "got an empty list"), *MIXED_LISTS])
def test_a_prompt_of_no_shape_the_api_takes_is_refused(prompt: Any, says: str) -> None:
    with pytest.raises(AdapterError, match="'prompt' must be a string, a list of strings") as caught:
        completions.subject_from_request(body(prompt))
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"max_tokens": -1}, "'max_tokens' must be a non-negative integer"),
        ({"max_tokens": "16"}, "'max_tokens' must be a non-negative integer"),
        ({"n": 0}, "'n' must be at least 1"),
        ({"best_of": 0}, "'best_of' must be at least 1"),
        ({"n": 1.5}, "'n' must be a non-negative integer"),
        ({"best_of": True}, "'best_of' must be a non-negative integer"),
        ({"suffix": ["a"]}, "'suffix' must be a string"),
    ],
)
def test_malformed_numbers_and_suffixes_are_refused(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(AdapterError, match=says):
        completions.subject_from_request(body("hi", **extra))


@pytest.mark.parametrize("broken", [{"prompt": "hi"}, {"model": "", "prompt": "hi"}, ["not", "an", "object"]])
def test_a_body_that_is_no_object_or_names_no_model_is_refused(broken: Any) -> None:
    with pytest.raises(AdapterError, match="OpenAI completions request body"):
        completions.subject_from_request(broken)


# --- the subject ----------------------------------------------------------------------------------


def test_the_subject_is_a_completions_call_capped_by_max_tokens() -> None:
    call = completions.subject_from_request(body("Once upon a time", max_tokens=64, stream=True, temperature=0))
    req = call.request
    assert (call.type, call.provider, call.model, call.kind, call.phase) == (
        "llm_call", "openai", INSTRUCT, "completions", "pre")
    assert (req.api, req.max_tokens, req.max_tokens_field, req.choices, req.stream, req.batch) == (
        "completions", 64, "max_tokens", 1, True, False)
    assert (req.cacheable_prefix_tokens, req.cache_breakpoints, req.prefix_pointer) == (0, 0, None)
    assert (req.max_web_searches, req.output_audio) == (0, False)
    assert call.as_cel["kind"] == "completions" and call.as_cel["request"]["max_tokens"] == 64


@pytest.mark.parametrize(
    ("prompt", "extra", "choices"),
    [
        ("hi", {}, 1),
        ("hi", {"n": 3}, 3),
        ("hi", {"best_of": 5}, 5),  # 5 generated and billed, 1 returned
        ("hi", {"n": 2, "best_of": 4}, 4),
        ("hi", {"n": 4, "best_of": 2}, 4),  # the API refuses best_of < n; the larger is reserved anyway
        (["a", "b", "c"], {}, 3),  # a completion for each prompt
        (["a", "b", "c"], {"n": 2}, 6),
        ([[1], [2]], {"n": 2, "best_of": 3}, 6),
        ([1, 2, 3], {"n": 2}, 2),  # one token-id prompt
        ("hi", {"n": None, "best_of": None}, 1),
    ],
)
def test_choices_are_prompts_times_the_larger_of_n_and_best_of(prompt: Any, extra: dict[str, Any],
                                                               choices: int) -> None:
    call = completions.subject_from_request(body(prompt, max_tokens=10, **extra))
    assert call.request.choices == choices
    assert worst_case_usage(call).output_tokens == 10 * choices


def test_without_max_tokens_openai_is_reserved_for_its_default_of_16() -> None:
    call = completions.subject_from_request(body("hi", n=2))
    assert call.request.max_tokens == completions.DEFAULT_MAX_TOKENS == 16
    assert worst_case_usage(call).output_tokens == 32
    assert "max_tokens" not in call.body  # the body sent is left as it was: 16 is OpenAI's own default


@pytest.mark.parametrize("provider", ["vllm", "azure", "groq", "x-ai"])
def test_without_max_tokens_other_servers_are_reserved_at_the_usual_clamp(provider: str) -> None:
    call = completions.subject_from_request(body("hi"), provider=provider)
    assert (call.provider, call.request.max_tokens) == (provider, None)  # vLLM's default is the context left
    assert worst_case_usage(call).output_tokens == OUTPUT_TOKENS_CAP


def test_scoring_a_text_with_max_tokens_0_reserves_the_input_alone() -> None:
    """``echo`` + ``max_tokens: 0`` (prompt logprobs, as evaluation harnesses score texts) generates
    nothing: reserving the output clamp for each prompt would hold 32,768 tokens a prompt for it."""
    call = completions.subject_from_request(body(["a b c d"] * 8, max_tokens=0, echo=True, logprobs=1))
    assert (call.request.max_tokens, call.request.choices) == (0, 0)
    assert worst_case_usage(call) == TokenUsage(input_tokens=8 * 2)


def test_a_max_tokens_set_is_kept_for_every_provider() -> None:
    for provider in ("openai", "vllm"):
        assert completions.subject_from_request(body("hi", max_tokens=300), provider=provider).request.max_tokens == 300


def test_attribution_comes_from_the_body_user_unless_given() -> None:
    assert completions.subject_from_request(body("hi", user="u-body")).user == "u-body"
    given = completions.subject_from_request(body("hi", user="u-body"), user="u-ctx", feature="autocomplete",
                                             team="ide", tags={"env": "prod"})
    assert (given.user, given.feature, given.team) == ("u-ctx", "autocomplete", "ide")
    assert dict(given.attribution) == {"env": "prod", "feature": "autocomplete", "user": "u-ctx", "team": "ide"}


def test_batch_marks_the_batch_api() -> None:
    call = completions.subject_from_request(body("hi"), batch=True)
    assert (call.kind, call.request.batch) == ("batch", True)


def test_a_response_makes_a_post_call_with_its_usage() -> None:
    response = {"id": "cmpl-1", "object": "text_completion", "model": INSTRUCT,
                "choices": [{"text": " there", "index": 0, "logprobs": None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}}
    call = completions.subject_from_request(body("hi"), response=response)
    assert call.phase == "post"
    assert call.usage == TokenUsage(input_tokens=5, output_tokens=16)


def test_echoed_characters_are_the_prompts_once_per_completion() -> None:
    assert completions.echoed_chars(body(["abcd", "ef"], n=2)) == 0  # no echo
    assert completions.echoed_chars(body(["abcd", "ef"], n=2, echo=True)) == (4 + 2) * 2
    assert completions.echoed_chars(body([[1, 2, 3]], echo=True, best_of=3)) == 3 * completions.CHARS_PER_TOKEN * 3


# --- the worst case and its price -----------------------------------------------------------------


def test_the_worst_case_is_priced_at_the_instruct_model_rates() -> None:
    call = completions.subject_from_request(body([[1] * 1000, [2] * 1000], max_tokens=100, best_of=3, n=2))
    worst = worst_case_usage(call)
    assert worst == TokenUsage(input_tokens=2000, output_tokens=100 * 2 * 3)
    # gpt-3.5-turbo-instruct: $1.50 / MTok in, $2.00 out
    assert PRICER.cost("openai", INSTRUCT, worst) == pytest.approx((2000 * 1.5 + 600 * 2.0) / 1e6)


# --- stream reading -------------------------------------------------------------------------------


def test_a_legacy_stream_counts_its_text_and_its_usage_chunk_can_be_hidden() -> None:
    observer = OpenAIStream(drop_usage_chunk=True)
    chunk = {"id": "cmpl-1", "object": "text_completion", "model": INSTRUCT}
    passed = [observer.on_event(json.dumps({**chunk, "choices": [{"text": t, "index": 0, "logprobs": None,
                                                                  "finish_reason": None}]}))
              for t in ("Hello", " there", " friend")]
    usage = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    hidden = observer.on_event(json.dumps({**chunk, "choices": [], "usage": usage}))
    assert passed == [True, True, True] and hidden is False
    assert observer.output_chars == len("Hello there friend")
    assert observer.output_estimate() == 5 and observer.output_estimate(echoed_chars=len("Hello ")) == 3
    assert observer.output_estimate(echoed_chars=100) == 0
    assert observer.usage() == TokenUsage(input_tokens=3, output_tokens=3)
    assert observer.model == INSTRUCT


# --- routing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/completions", "completions"),
        ("/v1/completions/", "completions"),
        ("/completions", "completions"),
        ("/v1/chat/completions", "chat"),
        ("/chat/completions", "chat"),
        ("/v1/responses", "chat"),
        ("/v1/embeddings", "embeddings"),
        ("/openai/deployments/instruct/completions", "completions"),  # Azure
        ("/openai/deployments/gpt-4o/chat/completions", "chat"),
        ("/openai/deployments/chat/completions", "completions"),  # the legacy API of a deployment named "chat"
        ("/openai/deployments/chat/chat/completions", "chat"),
        ("/v1/mychat/completions", "completions"),  # only a whole "chat" segment makes it Chat Completions
    ],
)
def test_the_path_alone_routes_a_request_and_completions_is_never_chat(path: str, api: str) -> None:
    assert path_api(path) == api
    assert guarded_path("POST", path) and not guarded_path("GET", path)
    openai = edges()
    assert route(openai, path) is {"chat": openai.chat, "embeddings": openai.embeddings,
                                   "completions": openai.completions}[api]


def test_each_edge_builds_its_own_subject_for_its_provider() -> None:
    vllm = edges("vllm")
    legacy = vllm.completions.subject({"model": "meta-llama/Llama-3.1-8B", "prompt": "hi"})
    chat = vllm.chat.subject({"model": "meta-llama/Llama-3.1-8B", "messages": [{"role": "user", "content": "hi"}]})
    assert (legacy.provider, legacy.kind, legacy.request.max_tokens) == ("vllm", "completions", None)
    assert (chat.provider, chat.kind) == ("vllm", "chat.completions")
    assert edges().completions.subject(body("hi")).request.max_tokens == 16


def test_completions_are_guarded_not_passed_through() -> None:
    assert "/completions" in GUARDED and "/completions" not in UNGUARDED_SPEND
    assert unguarded_spend("POST", "/v1/completions") is None
    assert unguarded_spend("POST", "/v1/videos") == "/videos"


@pytest.mark.parametrize(
    ("path", "sent", "asks"),
    [
        ("/v1/completions", {"model": INSTRUCT, "prompt": "hi"}, True),
        ("/v1/chat/completions", {"model": "gpt-4.1", "messages": []}, True),
        ("/v1/responses", {"model": "gpt-4.1", "input": "hi"}, False),  # a Responses stream always reports it
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, False),
    ],
)
def test_streams_that_report_usage_only_when_asked(path: str, sent: dict[str, Any], asks: bool) -> None:
    assert usage_on_request(path, sent) is asks


# --- policies -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policies() -> PolicySet:
    """A $1 daily budget per user and a 256-token cap on the output, in one policy."""
    return compile_text(llm_call_policy("spend", {"cap": USER_BUDGET, "out": "maxOutputTokens: {limit: 256}"},
                                        on_error="deny"), pricer=PRICER)


def test_a_budget_holds_every_completion_and_the_cap_judges_max_tokens(policies: Any) -> None:
    call = completions.subject_from_request(body(["a b c d"] * 2, max_tokens=100, n=3), user="u-1")
    decision = judge(policies, call)
    assert decision.allowed, decision.summary()
    (hold,) = decision.holds
    assert hold.amount_usd == pytest.approx((2 * 2 * 1.5 + 100 * 6 * 2.0) / 1e6)


def test_openai_without_max_tokens_passes_the_cap_with_its_default(policies: Any) -> None:
    decision = judge(policies, completions.subject_from_request(body("hi"), user="u-2"))
    assert decision.allowed and decision.fixes() == []  # no max_tokens is added: OpenAI stops at 16


def test_vllm_without_max_tokens_gets_one_added(policies: Any) -> None:
    decision = judge(policies, completions.subject_from_request(body("hi", model="my-llama"), provider="vllm",
                                                                user="u-3"))
    (fix,) = [r.fix for r in decision.results if r.rule == "out" and r.fix is not None]
    assert fix.patch == ({"op": "add", "path": "/max_tokens", "value": 256},)


def test_an_unpriced_model_is_an_error_the_budget_denies_on(policies: Any) -> None:
    decision = judge(policies, completions.subject_from_request(body("hi", model="my-llama"), provider="vllm",
                                                                user="u-4"))
    assert not decision.allowed
    assert [r.result for r in decision.results if r.rule == "cap"] == ["error"]
