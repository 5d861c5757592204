"""Exemptions as loaded and compiled: expiry at the edges of the calendar and in other zones,
and a policy named by more than one entry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import Subject, subject_from_dict

CompilePolicies = Callable[..., PolicySet]

POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: p}
spec:
  subject: resource
  rules:
    - name: team
      requireTags: {keys: [team]}
    - name: env
      requireTags: {keys: [env]}
"""


def exemption(expires: str, policies: str = "[{policy: p}]") -> str:
    return (
        "apiVersion: costwarden.dev/v1\nkind: Exemption\nmetadata: {name: ex}\n"
        f"spec:\n  policies: {policies}\n  expires: {expires}\n  owner: finops@example.com\n  reason: migration\n"
    )


def res(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


@pytest.mark.parametrize("expires", ["9999-12-31", "'9999-12-31T23:59:59-05:00'"])
def test_an_expiry_at_the_end_of_the_calendar_loads_and_applies(
    compile_policies: CompilePolicies, expires: str
) -> None:
    """A 'never, really' expiry must load (not crash compilation with OverflowError) and apply."""
    ps = compile_policies(POLICY, exemption(expires))
    [ex] = ps.exemptions
    assert ex.expires.tzinfo is not None
    assert ps.evaluate(res(), now=datetime(2999, 1, 1, tzinfo=UTC)).verdict == "allow"


def test_an_expiry_before_the_start_of_utc_has_already_passed(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(POLICY, exemption("'0001-01-01T00:00:00+05:00'"))
    assert ps.evaluate(res(), now=datetime(2026, 1, 1, tzinfo=UTC)).verdict == "deny"


def test_an_expiry_with_a_zone_is_described_in_utc(compile_policies: CompilePolicies) -> None:
    """Messages say '... UTC': the time printed must be the UTC one, not the local wall clock."""
    ps = compile_policies(POLICY, exemption("2026-12-01T12:00:00+02:00"))
    [ex] = ps.exemptions
    assert "until 2026-12-01 10:00 UTC" in ex.describe()
    late = ps.evaluate(res(), now=datetime(2026, 12, 1, 10, 30, tzinfo=UTC))
    assert late.verdict == "deny"
    assert "exemption ex expired 2026-12-01 10:00 UTC" in late.results[0].message


@pytest.mark.parametrize(
    ("policies", "exempted"),
    [
        ("[{policy: p, rules: [team]}, {policy: p, rules: [env]}]", {"team", "env"}),
        ("[{policy: p, rules: [team]}, {policy: p}]", {"team", "env"}),
        ("[{policy: p}, {policy: p, rules: [env]}]", {"team", "env"}),
        ("[{policy: p, rules: [team]}, {policy: p, rules: [team]}]", {"team"}),
    ],
)
def test_a_policy_named_twice_waives_what_either_entry_waives(
    compile_policies: CompilePolicies, policies: str, exempted: set[str]
) -> None:
    ps = compile_policies(POLICY, exemption("2027-01-31", policies))
    d = ps.evaluate(res(), now=datetime(2026, 12, 1, tzinfo=UTC))
    assert {r.rule for r in d.results if r.exemption == "ex"} == exempted
