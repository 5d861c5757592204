"""``*`` means "every" in an ``exclude`` as it does in a ``match``: each match field, in a policy's
exclude, removes every subject when written as a wildcard — none may read as "no constraint"."""

from __future__ import annotations

from typing import Any

import pytest
from policy_support import compile_text

from costwarden.engine.matching import Matcher
from costwarden.engine.schema import ExemptionMatch, Match
from costwarden.engine.subjects import Subject, subject_from_dict


def resource(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


def llm_call(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "llm_call", "provider": "anthropic", "model": "claude-haiku-4-5"}
    data.update(fields)
    return subject_from_dict(data)


def policy(exclude: str, subject: str = "resource") -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: tagged}}
spec:
  subject: {subject}
  exclude: {exclude}
  rules:
    - name: team
      requireTags: {{keys: [team]}}
"""


SUBJECTS = [
    resource(),
    resource(provider="aws", kind="ec2-instance", name="i-1"),
    resource(namespace="ml"),
    resource(namespace="kube-system", tags={"tier": "free"}),
]

WILDCARDS = [
    "{providers: ['*']}",
    "{kinds: ['*']}",
    "{names: ['*']}",
    "{namespaces: ['*']}",
    "{selector: {}}",
    "{providers: ['*'], kinds: ['*'], namespaces: ['*'], names: ['*']}",
    "{providers: [aws, '*']}",
]


@pytest.mark.parametrize("exclude", WILDCARDS)
def test_a_wildcard_exclude_removes_every_subject(exclude: str) -> None:
    ps = compile_text(policy(exclude))
    for subject in SUBJECTS:
        assert ps.evaluate(subject).results == (), (exclude, subject.provider, subject.namespace)


@pytest.mark.parametrize("exclude", ["{providers: ['*']}", "{kinds: ['*']}", "{names: ['*']}"])
def test_a_wildcard_exclude_removes_llm_calls(exclude: str) -> None:
    ps = compile_text(policy(exclude, subject="llm_call"))
    assert ps.evaluate(llm_call(feature="search")).results == ()


@pytest.mark.parametrize(
    "exclude",
    ["{}", "{providers: null}", "{providers: []}", "{kinds: []}", "{names: []}", "{namespaces: []}"],
)
def test_an_empty_exclude_removes_nothing(exclude: str) -> None:
    ps = compile_text(policy(exclude))
    for subject in SUBJECTS:
        assert ps.evaluate(subject).verdict == "deny", (exclude, subject.provider)


def test_a_provider_exclude_removes_only_that_provider() -> None:
    ps = compile_text(policy("{providers: [aws]}"))
    assert ps.evaluate(SUBJECTS[1]).results == ()
    assert ps.evaluate(SUBJECTS[0]).verdict == "deny"


def test_a_star_provider_is_a_constraint_not_an_empty_block() -> None:
    built = Matcher.build(Match(providers=["*"]))
    assert built is not None and not built.is_empty
    assert built.matches(resource(provider="anything"))
    unset = Matcher.build(Match())
    assert unset is not None and unset.is_empty


def test_an_exemption_for_every_provider_still_covers_every_subject() -> None:
    built = Matcher.build(ExemptionMatch(providers=["*"]))
    assert built is not None
    assert all(built.matches(s) for s in SUBJECTS)
