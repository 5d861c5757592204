"""``requirePromptCaching`` with ``minTokens: 0`` (\"the model's own minimum\") on a model the
catalog has no minimum for: a call without tools or system prompt has no stable prefix to cache
and no place for a breakpoint, so it passes instead of failing without a fix."""

from __future__ import annotations

from policy_support import compile_text

from costwarden.adapters import anthropic as anthropic_adapter

POLICY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: caching}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: cache
      requirePromptCaching: {minTokens: 0}
"""


def test_a_call_without_a_stable_prefix_passes_at_threshold_zero() -> None:
    ps = compile_text(POLICY)
    body = {"model": "claude-experimental-9", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    subject = anthropic_adapter.subject_from_request(body)
    assert subject.request.cacheable_prefix_tokens == 0
    d = ps.evaluate(subject, "runtime")
    (r,) = d.results
    assert (r.result, d.allowed) == ("pass", True)


def test_a_stable_prefix_still_needs_a_breakpoint_at_threshold_zero() -> None:
    ps = compile_text(POLICY)
    body = {
        "model": "claude-experimental-9",
        "max_tokens": 64,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    d = ps.evaluate(anthropic_adapter.subject_from_request(body), "runtime")
    (r,) = d.results
    assert r.result == "fail" and r.fix is not None
    assert not d.allowed
