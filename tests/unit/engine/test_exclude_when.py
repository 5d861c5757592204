"""A CEL condition that fails on a subject is an error result naming the block it is in: an
author reading ``match.when failed`` looks at ``match`` when the broken condition is ``exclude``'s."""

from __future__ import annotations

from typing import Any

from policy_support import CompilePolicies

from costwarden.engine.subjects import Subject, subject_from_dict


def resource(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


def policy(match: str = "{}", exclude: str = "", on_error: str = "deny") -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: tagged}}
spec:
  subject: resource
  onError: {on_error}
  match: {match}
  {exclude}
  rules:
    - name: team
      requireTags: {{keys: [team]}}
"""


MISSING_TIER = 'when: "subject.tags.tier == \\"free\\""'  # no 'tier' tag: a CEL runtime error


def test_a_failing_exclude_when_is_reported_as_exclude_when(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(policy(exclude=f"exclude: {{{MISSING_TIER}}}"))
    decision = ps.evaluate(resource(tags={"team": "ml"}))
    [result] = decision.results
    assert (result.result, result.rule) == ("error", "exclude")
    assert result.message.startswith("exclude.when failed: ")
    assert "match" not in result.message
    assert decision.verdict == "deny"


def test_a_failing_match_when_is_still_reported_as_match_when(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(policy(match=f"{{{MISSING_TIER}}}", exclude='exclude: {when: "false"}'))
    [result] = ps.evaluate(resource(tags={"team": "ml"})).results
    assert (result.result, result.rule) == ("error", "match")
    assert result.message.startswith("match.when failed: ")


def test_exclude_when_runs_only_for_matched_subjects(compile_policies: CompilePolicies) -> None:
    """A subject the match rejects never reaches the exclude's condition, so it has no error."""
    ps = compile_policies(policy(match="{namespaces: [ml]}", exclude=f"exclude: {{{MISSING_TIER}}}"))
    assert ps.evaluate(resource(namespace="web", tags={"team": "ml"})).results == ()
    [result] = ps.evaluate(resource(namespace="ml", tags={"team": "ml"})).results
    assert result.rule == "exclude"


def test_a_failing_exclude_when_follows_on_error_allow(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(policy(exclude=f"exclude: {{{MISSING_TIER}}}", on_error="allow"))
    decision = ps.evaluate(resource(tags={"team": "ml"}))
    [result] = decision.results
    assert (result.result, result.rule, result.effect) == ("error", "exclude", "audit")
    assert decision.allowed
