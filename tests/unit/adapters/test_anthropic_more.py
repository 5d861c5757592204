"""Anthropic adapter: a clamp kept valid for extended thinking; the platform a body is billed by."""

from __future__ import annotations

from typing import Any

import pytest

from costwarden.adapters.anthropic import MIN_THINKING_BUDGET, fit_thinking, subject_from_request

ASKED: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 16000,
                         "thinking": {"type": "enabled", "budget_tokens": 10000}, "messages": []}


def clamped(limit: int, asked: dict[str, Any] = ASKED) -> dict[str, Any]:
    return {**asked, "max_tokens": limit}


def test_a_budget_a_clamp_left_above_max_tokens_is_scaled_with_it() -> None:
    body, note = fit_thinking(clamped(4000), ASKED)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2500} and body["max_tokens"] == 4000
    assert note is not None and "2500" in note


def test_the_scaled_budget_stays_at_the_api_minimum_and_below_max_tokens() -> None:
    body, _ = fit_thinking(clamped(1100), ASKED)
    assert body["thinking"]["budget_tokens"] == MIN_THINKING_BUDGET
    caller = {**ASKED, "thinking": {"type": "enabled", "budget_tokens": 15999}}
    body, _ = fit_thinking(clamped(3000, caller), caller)
    assert body["thinking"]["budget_tokens"] == 2999


@pytest.mark.parametrize("limit", [1024, 500])
def test_no_room_for_the_minimum_budget_turns_thinking_off(limit: int) -> None:
    body, note = fit_thinking(clamped(limit), ASKED)
    assert body["thinking"] == {"type": "disabled"} and note is not None


@pytest.mark.parametrize("body, asked", [
    (clamped(12000), ASKED),  # still valid under the clamp
    (ASKED, ASKED),  # not rewritten
    ({**ASKED, "thinking": {"type": "adaptive"}, "max_tokens": 100}, {**ASKED, "thinking": {"type": "adaptive"}}),
    ({**ASKED, "max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": True}}, ASKED),
])
def test_bodies_that_need_no_change_are_returned_as_they_are(body: dict[str, Any], asked: dict[str, Any]) -> None:
    fitted, note = fit_thinking(body, asked)
    assert fitted is body and note is None


def test_a_budget_the_caller_set_invalid_is_left_to_the_api() -> None:
    asked = {**ASKED, "max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 20000}}
    body = {**asked, "max_tokens": 4000}
    assert fit_thinking(body, asked) == (body, None)


def test_interleaved_thinking_may_keep_a_budget_above_max_tokens() -> None:
    body = clamped(2000)
    assert fit_thinking(body, ASKED, interleaved=True) == (body, None)


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "vertex_ai"])
def test_the_subject_names_the_platform_that_bills_the_call(provider: str) -> None:
    assert subject_from_request(ASKED, provider=provider).provider == provider
    assert subject_from_request(ASKED).provider == "anthropic"
