"""The Anthropic Messages adapter against recorded requests, responses and streams."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters import anthropic
from costwarden.adapters.llm_payload import UNCAPPED_WEB_SEARCHES
from costwarden.engine.subjects import SourceLocation, TokenUsage
from costwarden.errors import AdapterError

# The documented bound of the input-token estimate (costwarden.adapters.llm_payload).
ESTIMATE_LOW, ESTIMATE_HIGH = -0.25, 0.30


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def claude_code(llm_corpus: Path) -> dict[str, Any]:
    body: dict[str, Any] = _json(llm_corpus / "anthropic" / "litellm" / "claude_code_request.json")
    return body


def _exchanges(llm_corpus: Path) -> list[tuple[str, dict[str, Any], Any]]:
    """(name, request body, response body) of every successful recorded exchange."""
    out = []
    for path in sorted((llm_corpus / "anthropic" / "sdk-python-snapshots").glob("*.json")):
        for i, ex in enumerate(_json(path)):
            if ex["response"]["status_code"] == 200:
                out.append((f"{path.stem}[{i}]", ex["request"]["body"], ex["response"]["body"]))
    for i, ex in enumerate(_json(llm_corpus / "anthropic" / "sdk-typescript" / "ToolRunner.nock.json")):
        out.append((f"ToolRunner.nock[{i}]", ex["body"], ex["response"]))
    return out


def _final_delta_output(lines: list[str]) -> int:
    """The output_tokens of the last message_delta, read without the adapter."""
    outputs = [
        json.loads(line.removeprefix("data:"))["usage"]["output_tokens"] for line in lines if '"message_delta"' in line
    ]
    return int(outputs[-1])


# --- request facts ---------------------------------------------------------------------------


def test_claude_code_request_facts(claude_code: dict[str, Any]) -> None:
    call = anthropic.subject_from_request(claude_code, feature="agent")
    req = call.request
    assert len(claude_code["tools"]) == 24
    assert (call.provider, call.model, call.phase, call.kind) == ("anthropic", "claude-sonnet-4-5", "pre", "messages")
    assert req.max_tokens == 32000 and req.max_tokens_field == "max_tokens"
    assert req.stream is True and req.batch is False
    # system[1], system[2] and the last user block carry cache_control; no tool does.
    assert req.cache_breakpoints == 3
    assert req.prefix_pointer == "/system/2"
    assert 0 < req.cacheable_prefix_tokens < req.input_tokens
    assert call.user == claude_code["metadata"]["user_id"]
    assert call.usage is None and call.body is claude_code


def test_prefix_is_tools_and_system_only(claude_code: dict[str, Any]) -> None:
    base = anthropic.subject_from_request(claude_code).request
    more_messages = copy.deepcopy(claude_code)
    more_messages["messages"].append({"role": "assistant", "content": "x " * 4000})
    grown = anthropic.subject_from_request(more_messages).request
    assert grown.cacheable_prefix_tokens == base.cacheable_prefix_tokens
    assert grown.input_tokens > base.input_tokens + 1000

    more_system = copy.deepcopy(claude_code)
    more_system["system"].append({"type": "text", "text": "y " * 4000})
    longer = anthropic.subject_from_request(more_system).request
    assert longer.prefix_pointer == "/system/3"
    assert longer.cacheable_prefix_tokens > base.cacheable_prefix_tokens + 1000


def test_tools_dominate_claude_code_prefix(claude_code: dict[str, Any]) -> None:
    no_tools = {k: v for k, v in claude_code.items() if k != "tools"}
    without = anthropic.subject_from_request(no_tools).request
    with_tools = anthropic.subject_from_request(claude_code).request
    tools_json = sum(len(json.dumps(t, separators=(",", ":"))) for t in claude_code["tools"])
    # Tool JSON is measured at ~3 chars a token, plus the tool-use system prompt.
    added = with_tools.cacheable_prefix_tokens - without.cacheable_prefix_tokens
    assert tools_json / 3 <= added <= tools_json / 3 + anthropic.TOOL_SYSTEM_TOKENS + 24


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"system": "Be terse."}, "/system"),
        ({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, "/system/1"),
        ({"tools": [{"name": "t1", "input_schema": {}}, {"name": "t2", "input_schema": {}}]}, "/tools/1"),
        ({"system": ""}, None),
        ({}, None),
    ],
)
def test_prefix_pointer(body: dict[str, Any], pointer: str | None) -> None:
    call = anthropic.subject_from_request({"model": "claude-haiku-4-5", "messages": [], **body})
    assert call.request.prefix_pointer == pointer
    assert (call.request.cacheable_prefix_tokens > 0) is (pointer is not None)


def test_cache_breakpoints_count_every_marker() -> None:
    mark = {"type": "ephemeral"}
    body = {
        "model": "claude-sonnet-4-5",
        "cache_control": mark,
        "tools": [{"name": "a", "input_schema": {}, "cache_control": mark}],
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": mark}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "r", "cache_control": mark}],
                    }
                ],
            },
            {"role": "assistant", "content": "plain string content"},
        ],
    }
    request = anthropic.subject_from_request(body).request
    assert (request.cache_breakpoints, request.cache_write_1h) == (5, True)
    body["system"][0]["cache_control"] = mark  # type: ignore[index]
    assert anthropic.subject_from_request(body).request.cache_write_1h is False
    body["cache_control"] = {"type": "ephemeral", "ttl": "1h"}  # automatic caching with the 1h TTL
    assert anthropic.subject_from_request(body).request.cache_write_1h is True
    elsewhere = {"model": "m", "metadata": {"note": {"cache_control": {"ttl": "1h"}}}, "messages": []}
    assert anthropic.subject_from_request(elsewhere).request.cache_write_1h is False  # not a breakpoint


def test_batch_user_and_source() -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [], "metadata": {"user_id": "u-1"}}
    where = SourceLocation(file="batch.jsonl", line=3)
    call = anthropic.subject_from_request(body, batch=True, user="explicit", team="ml", source=where)
    assert (call.request.api, call.request.batch, call.kind) == ("batch", True, "batch")
    assert (call.user, call.team, call.source) == ("explicit", "ml", where)
    assert anthropic.subject_from_request(body).user == "u-1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"model": "claude"}], "must be a JSON object, got list"),
        ({"messages": []}, "no 'model'"),
        ({"model": 42}, "'model' 42"),
        ({"model": "claude", "max_tokens": -1}, "'max_tokens' must be a non-negative integer"),
        ({"model": "claude", "max_tokens": "many"}, "'max_tokens' must be a non-negative integer"),
        ({"model": "claude", "messages": "hi"}, "'messages' must be a list"),
    ],
)
def test_bad_bodies_raise(body: Any, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        anthropic.subject_from_request(body)


def test_estimate_counts_images_tool_blocks_and_non_ascii() -> None:
    def est(content: Any) -> int:
        return anthropic.estimate_input_tokens({"model": "m", "messages": [{"role": "user", "content": content}]})

    empty = est("")
    assert est("word " * 400) - empty == 500  # 2,000 ASCII chars / 4
    assert est("字" * 400) - empty == 500  # CJK: 1.25 tokens a character
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 99_999}}
    assert est([image]) - empty == anthropic.IMAGE_TOKENS
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": ""}
    assert est([result]) - empty == anthropic.TOOL_BLOCK_TOKENS


# --- recorded exchanges ----------------------------------------------------------------------


def test_recorded_exchanges_usage_and_estimate_bound(llm_corpus: Path) -> None:
    checked = 0
    for name, request, response in _exchanges(llm_corpus):
        if isinstance(response, str):  # a streamed response body
            usage = anthropic.usage_from_sse(response.splitlines())
        else:
            usage = anthropic.usage_from_response(response)
            raw = response["usage"]
            assert usage.input_tokens == raw["input_tokens"], name
            assert usage.output_tokens == raw["output_tokens"], name
            call = anthropic.subject_from_request(request, response=response)
            assert call.phase == "post" and call.usage == usage, name
        server_tools = any("allowed_callers" in t for t in request.get("tools", []))
        if usage.total_input_tokens == 0 or server_tools:
            continue  # server tools inject prompts the estimate cannot see (documented)
        estimate = anthropic.subject_from_request(request).request.input_tokens
        error = estimate / usage.total_input_tokens - 1
        assert ESTIMATE_LOW <= error <= ESTIMATE_HIGH, f"{name}: {estimate} vs {usage.total_input_tokens}"
        checked += 1
    assert checked >= 20


def test_sse_streams_equal_final_message_delta(llm_corpus: Path) -> None:
    streams = [
        llm_corpus / "anthropic" / "sse" / "basic_response.txt",
        llm_corpus / "anthropic" / "sse" / "tool_use_response.txt",
        *sorted((llm_corpus / "anthropic" / "vercel-ai-fixtures").glob("*.chunks.txt")),
    ]
    for path in streams:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert anthropic.usage_from_sse(lines).output_tokens == _final_delta_output(lines), path.name


def test_sse_basic_and_tool_use_streams(llm_corpus: Path) -> None:
    sse = llm_corpus / "anthropic" / "sse"
    basic = anthropic.usage_from_sse((sse / "basic_response.txt").read_text().splitlines())
    assert basic == TokenUsage(input_tokens=11, output_tokens=6)
    tool = anthropic.usage_from_sse((sse / "tool_use_response.txt").read_text().splitlines())
    assert tool == TokenUsage(input_tokens=377, output_tokens=65)  # 65 replaces the start's 1


def test_prompt_cache_stream_takes_latest_counts(llm_corpus: Path) -> None:
    path = (
        llm_corpus / "anthropic" / "vercel-ai-fixtures" / "anthropic-code-execution-20260120-prompt-cache.1.chunks.txt"
    )
    usage = anthropic.usage_from_sse(path.read_text().splitlines())
    # message_start: input 2, writes 3068 (all 5m); the final message_delta: input 6, reads 6289,
    # writes 3337 with no TTL split, so the 5m split is extended to the new total.
    assert usage == TokenUsage(input_tokens=6, output_tokens=198, cache_read_tokens=6289, cache_write_5m_tokens=3337)


def test_streamed_snapshot_bodies(llm_corpus: Path) -> None:
    for name, _request, response in _exchanges(llm_corpus):
        if isinstance(response, str):
            lines = response.splitlines()
            usage = anthropic.usage_from_sse(lines)
            assert usage.output_tokens == _final_delta_output(lines), name
            assert usage.input_tokens > 0, name


# --- usage edge cases ------------------------------------------------------------------------


def test_usage_cache_split_and_fallback() -> None:
    split = {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    }
    usage = anthropic.usage_from_response({"type": "message", "usage": split})
    assert usage == TokenUsage(5, 7, 100, 100, 200)
    assert usage.total_input_tokens == 405
    legacy = {"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 300}
    assert anthropic.usage_from_response({"usage": legacy}).cache_write_5m_tokens == 300


def test_usage_from_batch_result_line_and_bare_usage() -> None:
    line = {
        "custom_id": "r1",
        "result": {"type": "succeeded", "message": {"usage": {"input_tokens": 9, "output_tokens": 4}}},
    }
    assert anthropic.usage_from_response(line) == TokenUsage(input_tokens=9, output_tokens=4)
    assert anthropic.usage_from_response({"input_tokens": 1, "output_tokens": 2}).output_tokens == 2


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"type": "error", "error": {"type": "overloaded_error"}}, "is an error"),
        ({"type": "message", "content": []}, "no 'usage'"),
        ({"usage": {"input_tokens": -3}}, "non-negative integer"),
        ("text", "must be a JSON object"),
    ],
)
def test_bad_responses_raise(response: Any, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        anthropic.usage_from_response(response)


def test_sse_output_is_a_running_total_not_a_sum() -> None:
    lines = [
        'data: {"type":"message_start","message":{"usage":{"input_tokens":50,"output_tokens":1}}}',
        "",
        'data: {"type":"message_delta","usage":{"output_tokens":10}}',
        "",
        'data: {"type":"message_delta","usage":{"output_tokens":30,"input_tokens":null}}',
    ]
    assert anthropic.usage_from_sse(lines) == TokenUsage(input_tokens=50, output_tokens=30)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['data: {"type":"ping"}'], "no message_start"),
        (['data: {"type":"error","error":{"message":"Overloaded"}}'], "Overloaded"),
        (['data: {"type":"message_start", "message": {'], "line 1: data is not JSON"),
    ],
)
def test_bad_streams_raise(lines: list[str], message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        anthropic.usage_from_sse(lines)


def test_web_search_requests_are_read_from_responses_and_batch_lines() -> None:
    usage = {"input_tokens": 100, "output_tokens": 20, "server_tool_use": {"web_search_requests": 3,
                                                                          "web_fetch_requests": 1}}
    assert anthropic.usage_from_response({"type": "message", "usage": usage}).web_search_requests == 3
    line = {"custom_id": "a", "result": {"type": "succeeded", "message": {"type": "message", "usage": usage}}}
    assert anthropic.usage_from_response(line).web_search_requests == 3
    bare = {"usage": {"input_tokens": 1, "server_tool_use": None}}
    assert anthropic.usage_from_response(bare).web_search_requests == 0


def test_sse_web_search_requests_are_a_running_total_not_a_sum() -> None:
    lines = [
        'data: {"type":"message_start","message":{"usage":{"input_tokens":50,"output_tokens":1,'
        '"server_tool_use":{"web_search_requests":1}}}}',
        'data: {"type":"message_delta","usage":{"output_tokens":10,"server_tool_use":{"web_search_requests":2}}}',
        'data: {"type":"message_delta","usage":{"output_tokens":30}}',
    ]
    assert anthropic.usage_from_sse(lines) == TokenUsage(input_tokens=50, output_tokens=30, web_search_requests=2)


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([{"type": "web_search_20250305", "name": "web_search", "max_uses": 4}], 4),
        ([{"type": "web_search_20260209", "name": "web_search", "max_uses": 2},
          {"name": "lookup", "input_schema": {"type": "object"}, "max_uses": 9}], 2),
        # no limit (or one the API refuses): the assumed number, never none
        ([{"type": "web_search_20250305", "name": "web_search"}], UNCAPPED_WEB_SEARCHES),
        ([{"type": "web_search_20250305", "name": "web_search", "max_uses": "5"}], UNCAPPED_WEB_SEARCHES),
        ([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
          {"type": "web_search_20260209", "name": "web_search_2"}], 3 + UNCAPPED_WEB_SEARCHES),
        ([], 0),
    ],
)
def test_request_declares_its_web_search_limit(tools: list[Any], expected: int) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": tools}
    call = anthropic.subject_from_request(body)
    assert call.request.max_web_searches == expected
    assert call.to_dict()["request"]["max_web_searches"] == expected
