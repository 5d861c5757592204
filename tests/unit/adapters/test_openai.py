"""The OpenAI Chat Completions / Responses adapter against the recorded examples and fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters import openai
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

# The documented bound of the input-token estimate (costwarden.adapters.llm_payload).
ESTIMATE_LOW, ESTIMATE_HIGH = -0.25, 0.30
EXAMPLES = ("0-default", "1-image-input", "3-functions", "4-logprobs")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _example(llm_corpus: Path, name: str, part: str) -> Any:
    return _json(llm_corpus / "openai" / "openapi-examples" / f"chat_completions__{name}.{part}.json")


def _fixture(llm_corpus: Path, name: str) -> Any:
    return _json(llm_corpus / "openai" / "vercel-ai-fixtures" / name)


# --- request facts ---------------------------------------------------------------------------


def test_default_example_facts(llm_corpus: Path) -> None:
    body = _example(llm_corpus, "0-default", "request")
    call = openai.subject_from_request(body)
    req = call.request
    assert (call.provider, call.model, call.kind, call.phase) == (
        "openai",
        "VAR_chat_model_id",
        "chat.completions",
        "pre",
    )
    assert (req.max_tokens, req.max_tokens_field, req.stream) == (None, "max_completion_tokens", False)
    assert (req.cache_breakpoints, req.prefix_pointer) == (0, None)
    # The leading developer message is the cacheable prefix; "Hello!" is not.
    assert 0 < req.cacheable_prefix_tokens < req.input_tokens
    assert call.user is None


def test_image_functions_and_streaming_examples(llm_corpus: Path) -> None:
    image = openai.subject_from_request(_example(llm_corpus, "1-image-input", "request")).request
    assert (image.max_tokens, image.max_tokens_field) == (300, "max_tokens")
    assert image.cacheable_prefix_tokens == 0  # no system message, no tools
    assert image.input_tokens >= openai.IMAGE_TOKENS

    functions = openai.subject_from_request(_example(llm_corpus, "3-functions", "request")).request
    assert functions.cacheable_prefix_tokens > 50  # the get_current_weather definition

    stream_body = _json(llm_corpus / "openai" / "openapi-examples" / "chat_completions__2-streaming.request.json")
    assert openai.subject_from_request(stream_body).request.stream is True


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_usage_and_estimate_bound(llm_corpus: Path, name: str) -> None:
    body = _example(llm_corpus, name, "request")
    response = _example(llm_corpus, name, "response")
    call = openai.subject_from_request(body, response=response)
    prompt = response["usage"]["prompt_tokens"]
    assert call.phase == "post" and call.usage is not None
    assert call.usage.total_input_tokens == prompt
    assert call.usage.output_tokens == response["usage"]["completion_tokens"]
    error = call.request.input_tokens / prompt - 1
    assert ESTIMATE_LOW <= error <= ESTIMATE_HIGH, f"{name}: {call.request.input_tokens} vs {prompt}"


def test_max_tokens_field_choice() -> None:
    both = {"model": "gpt-4o", "messages": [], "max_tokens": 10, "max_completion_tokens": 20}
    assert openai.subject_from_request(both).request.max_tokens_field == "max_completion_tokens"
    assert openai.subject_from_request(both).request.max_tokens == 20
    legacy = {"model": "gpt-4o", "messages": [], "max_tokens": 10}
    assert openai.subject_from_request(legacy).request.max_tokens_field == "max_tokens"


def test_n_choices_are_counted_for_chat_completions_only() -> None:
    chat = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 400}
    assert openai.subject_from_request(chat).request.choices == 1
    assert openai.subject_from_request({**chat, "n": None}).request.choices == 1
    four = openai.subject_from_request({**chat, "n": 4})
    assert (four.request.choices, four.request.max_tokens) == (4, 400)  # the max stays per choice
    assert four.as_cel["request"]["choices"] == 4
    assert openai.subject_from_request({"model": "gpt-5", "input": "hi", "n": 3}).request.choices == 1


def test_responses_api_body() -> None:
    body = {
        "model": "gpt-5",
        "instructions": "You are a careful assistant. " * 40,
        "input": [
            {"role": "developer", "content": "House rules. " * 20},
            {"role": "user", "content": [{"type": "input_text", "text": "Summarise this."}]},
        ],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        "max_output_tokens": 500,
        "stream": True,
        "safety_identifier": "hashed-user",
    }
    call = openai.subject_from_request(body)
    req = call.request
    assert (call.kind, req.max_tokens_field, req.max_tokens, req.stream) == (
        "responses",
        "max_output_tokens",
        500,
        True,
    )
    assert call.user == "hashed-user"
    # instructions + developer item + tool are the prefix; only the user turn is outside it.
    assert 0 < req.input_tokens - req.cacheable_prefix_tokens < 20
    assert openai.api_of({"model": "m", "instructions": "x"}) == "responses"
    assert openai.subject_from_request({"model": "m", "input": "hi"}).request.cacheable_prefix_tokens == 0


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-5", "prompt": {"id": "pmpt_abc", "variables": {"city": "Paris"}}, "max_output_tokens": 300},
        {"model": "gpt-5", "previous_response_id": "resp_abc", "max_output_tokens": 300},
        {"model": "gpt-5", "conversation": "conv_abc", "max_output_tokens": 300},
    ],
)
def test_responses_body_without_input_is_still_responses(body: dict[str, Any]) -> None:
    # `input` is optional in the Responses API (a stored prompt, a previous response, a conversation).
    call = openai.subject_from_request(body)
    assert (call.kind, call.request.max_tokens_field, call.request.max_tokens) == (
        "responses", "max_output_tokens", 300)


def test_batch_and_provider_override() -> None:
    call = openai.subject_from_request({"model": "grok-3-mini", "messages": []}, batch=True, provider="x-ai")
    assert (call.provider, call.kind, call.request.batch) == ("x-ai", "batch", True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not a body", "must be a JSON object, got str"),
        ({"messages": []}, "no 'model'"),
        ({"model": ""}, "model name string is required"),
        ({"model": "gpt-4o", "messages": [], "max_completion_tokens": 1.5}, "non-negative integer"),
        ({"model": "gpt-4o", "input": {"role": "user"}}, "'input' must be a list"),
        ({"model": "gpt-4o", "messages": [], "n": 0}, "'n' must be at least 1"),
        ({"model": "gpt-4o", "messages": [], "n": "2"}, "'n' must be a non-negative integer"),
    ],
)
def test_bad_bodies_raise(body: Any, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        openai.subject_from_request(body)


# --- usage -----------------------------------------------------------------------------------


def test_cached_tokens_map_to_cache_reads(llm_corpus: Path) -> None:
    tool_call = openai.usage_from_response(_fixture(llm_corpus, "openai-compatible__xai-tool-call.json"))
    # prompt 307 with 244 cached; xAI leaves 255 reasoning tokens out of completion_tokens (26) but
    # its total_tokens (588) includes them, so output is 588 - 307.
    assert tool_call == TokenUsage(input_tokens=63, output_tokens=281, cache_read_tokens=244)
    text = openai.usage_from_response(_fixture(llm_corpus, "openai-compatible__xai-text.json"))
    assert text == TokenUsage(input_tokens=10, output_tokens=322, cache_read_tokens=2)
    plain = openai.usage_from_response(_fixture(llm_corpus, "openai-text.json"))
    assert plain == TokenUsage(input_tokens=16, output_tokens=363)


def test_responses_usage_and_cache_writes() -> None:
    response = {
        "object": "response",
        "usage": {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 300},
            "output_tokens": 40,
            "output_tokens_details": {"reasoning_tokens": 30},
        },
    }
    usage = openai.usage_from_response(response)
    assert usage == TokenUsage(input_tokens=200, output_tokens=40, cache_read_tokens=1500, cache_write_5m_tokens=300)
    assert usage.total_input_tokens == 2000


def test_batch_output_line() -> None:
    line = {
        "custom_id": "req-1",
        "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 30, "completion_tokens": 5}}},
    }
    assert openai.usage_from_response(line) == TokenUsage(input_tokens=30, output_tokens=5)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"id": "chatcmpl-1"}, "no 'usage'"),
        ({"usage": {"total_tokens": 3}}, "neither 'prompt_tokens' nor 'input_tokens'"),
        ({"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}}, "exceed input"),
        ({"usage": {"prompt_tokens": True}}, "non-negative integer"),
        ({"id": "resp_9", "status": "queued", "usage": None}, "background response 'resp_9' is queued"),
    ],
)
def test_bad_usage_raises(response: Any, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        openai.usage_from_response(response)


def test_streamed_chunks_take_the_last_usage(llm_corpus: Path) -> None:
    lines = (llm_corpus / "openai" / "vercel-ai-fixtures" / "openai-text.chunks.txt").read_text().splitlines()
    chunks = [json.loads(line) for line in lines if line.strip()]
    assert chunks[-1]["usage"] is not None and all(c["usage"] is None for c in chunks[:-1])
    expected = TokenUsage(input_tokens=16, output_tokens=300)
    assert openai.usage_from_chunks(chunks) == expected
    assert openai.usage_from_sse(lines) == expected
    assert openai.usage_from_sse(f"data: {line}\n" for line in lines if line.strip()) == expected


def test_stream_without_usage_raises(llm_corpus: Path) -> None:
    path = llm_corpus / "openai" / "openapi-examples" / "chat_completions__2-streaming.response.stream.txt"
    with pytest.raises(AdapterError, match="include_usage"):
        openai.usage_from_sse(path.read_text().splitlines())


def test_responses_stream_completed_event() -> None:
    events = [
        {"type": "response.created", "response": {"usage": None}},
        {"type": "response.output_text.delta", "delta": "Hi"},
        {
            "type": "response.completed",
            "response": {
                "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3}
            },
        },
    ]
    assert openai.usage_from_chunks(events) == TokenUsage(input_tokens=12, output_tokens=3)


def test_audio_tokens_are_the_audio_share_of_input_and_output() -> None:
    usage = {"prompt_tokens": 1_000, "completion_tokens": 300, "total_tokens": 1_300,
             "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 600},
             "completion_tokens_details": {"audio_tokens": 250, "reasoning_tokens": 0}}
    assert openai.usage_from_response({"object": "chat.completion", "usage": usage}) == TokenUsage(
        input_tokens=800, output_tokens=300, cache_read_tokens=200, input_audio_tokens=600, output_audio_tokens=250)
    chunks = [{"choices": [{"delta": {"content": "hi"}}], "usage": None}, {"choices": [], "usage": usage}]
    assert openai.usage_from_chunks(chunks).output_audio_tokens == 250
    nulls = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"audio_tokens": None},
             "completion_tokens_details": None}
    assert openai.usage_from_response({"usage": nulls}) == TokenUsage(input_tokens=10, output_tokens=2)


@pytest.mark.parametrize(("modalities", "expected"), [(["text", "audio"], True), (["text"], False), (None, False)])
def test_request_asking_for_audio_output_is_marked(modalities: Any, expected: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-audio", "messages": [{"role": "user", "content": "hi"}]}
    if modalities is not None:
        body["modalities"] = modalities
    call = openai.subject_from_request(body)
    assert call.request.output_audio is expected
    assert call.to_dict()["request"]["output_audio"] is expected


@pytest.mark.parametrize(
    ("asked", "sent", "kept"),
    [
        ({"model": "o3", "reasoning_effort": "high"}, {"model": "gpt-4.1-mini", "reasoning_effort": "high"}, False),
        ({"model": "o3", "reasoning": {"effort": "low"}}, {"model": "gpt-4.1", "reasoning": {"effort": "low"}}, False),
        ({"model": "gpt-5", "reasoning_effort": "low"}, {"model": "gpt-5-mini", "reasoning_effort": "low"}, True),
        ({"model": "o3", "reasoning_effort": "low"}, {"model": "o4-mini", "reasoning_effort": "low"}, True),
        ({"model": "gpt-5", "reasoning_effort": "low"},
         {"model": "gpt-5-chat-latest", "reasoning_effort": "low"}, False),
        # the caller's own choice, however odd, is the API's to judge
        ({"model": "gpt-4.1", "reasoning_effort": "low"}, {"model": "gpt-4.1", "reasoning_effort": "low"}, True),
    ],
)
def test_fit_reasoning_drops_what_a_downgraded_model_refuses(
    asked: dict[str, Any], sent: dict[str, Any], kept: bool
) -> None:
    from costwarden.adapters.openai import fit_reasoning

    body, note = fit_reasoning(sent, asked)
    assert (body is sent, note is None) == (kept, kept)
    if not kept:
        assert not {"reasoning_effort", "reasoning"} & set(body) and body["model"] == sent["model"]
