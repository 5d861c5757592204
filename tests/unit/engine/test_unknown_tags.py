"""Tags a subject cannot show yet (``Resource.unknown_tags``), judged by the engine itself: the
same verdict for ``costwarden check``, ``costwarden test`` cases, ``PolicySet.evaluate`` callers and
every surface, whatever adapter (or plain JSON) built the subject."""

from __future__ import annotations

import json
from typing import Any

import pytest
from policy_support import compile_text

from costwarden.engine.cel import compile_cel
from costwarden.engine.decision import RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import UnknownTags, subject_from_dict
from costwarden.errors import SubjectError


def require_tags(keys: list[str], values: dict[str, str] | None = None, **spec: Any) -> PolicySet:
    rule = {"name": "cost-tags", "requireTags": {"keys": keys, "values": values or {}}}
    return compile_text(json.dumps({
        "apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": "cost-tags"},
        "spec": {"subject": "resource", "rules": [rule], **spec},
    }))


def resource(tags: dict[str, str], **unknown: Any) -> Any:
    data: dict[str, Any] = {"type": "resource", "provider": "terraform", "kind": "aws_instance",
                            "name": "aws_instance.web", "tags": tags}
    if unknown:
        data["unknown_tags"] = unknown
    return subject_from_dict(data)


def one(policies: PolicySet, subject: Any, surface: Any = "ci") -> RuleResult:
    [result] = policies.evaluate(subject, surface).results
    return result


ENV = "^(prod|staging|dev)$"


@pytest.mark.parametrize("surface", ["ci", "admission", "audit"])
def test_a_value_known_only_after_apply_warns_on_every_surface(surface: str) -> None:
    subject = resource({"team": "ml", "environment": "(known after apply)"}, values=["environment"])
    result = one(require_tags(["team"], {"environment": ENV}), subject, surface)
    assert (result.result, result.effect) == ("warn", "warn")
    assert result.message == (
        f"cannot be judged at plan time: tag 'environment' is known only after apply: its value cannot be "
        f"checked against {ENV}"
    )
    assert result.fix is None and not result.is_blocking


def test_a_placeholder_the_regex_happens_to_match_is_not_a_pass() -> None:
    subject = resource({"environment": "(known after apply)"}, values=["environment"])
    assert one(require_tags([], {"environment": "."}), subject).result == "warn"


def test_without_the_fact_the_same_text_is_an_ordinary_value() -> None:
    # the engine never reads meaning into a tag's text: only unknown_tags says a value is unknown
    result = one(require_tags([], {"environment": ENV}), resource({"environment": "(known after apply)"}))
    assert result.result == "fail" and "does not match" in result.message


def test_a_key_whose_value_is_unknown_is_present() -> None:
    subject = resource({"team": "(known after apply)"}, values=["team"])
    assert one(require_tags(["team"]), subject).result == "pass"


def test_incomplete_tags_may_hold_a_missing_key_but_not_every_key() -> None:
    why = "the provider's default_tags = local.common_tags (not in the plan)"
    subject = resource({"environment": "prod"}, incomplete=why, incomplete_keys=["team"])
    result = one(require_tags(["team", "environment", "feature"]), subject)
    assert result.result == "fail" and result.is_blocking
    assert result.message == (
        f"missing required tag: feature; cannot be judged at plan time: tag 'team' is not among the tags the "
        f"plan shows, and {why} may hold it"
    )
    assert result.actual == {"feature": None}


def test_a_known_bad_value_beside_an_unknown_one_fails_on_the_known_one() -> None:
    subject = resource({"team": "ML Team", "environment": "(known after apply)"}, values=["environment"])
    result = one(require_tags(["team"], {"team": "^[a-z]+$", "environment": ENV}), subject)
    assert result.result == "fail"
    assert result.message.startswith("tag 'team'='ML Team' does not match ^[a-z]+$; cannot be judged at plan time:")
    assert result.actual == {"team": "ML Team"}


def test_a_tag_set_unknown_as_a_whole_leaves_every_key_unjudged() -> None:
    subject = resource({}, incomplete="tags = (known after apply)")
    result = one(require_tags(["team", "environment"]), subject)
    assert result.result == "warn"
    assert "tags 'team', 'environment' are not among the tags the plan shows" in result.message
    assert result.actual == {"team": None, "environment": None}


def test_a_policy_in_audit_records_the_unjudged_tag_without_denying() -> None:
    subject = resource({"environment": "(known after apply)"}, values=["environment"])
    result = one(require_tags([], {"environment": ENV}, enforcement={"default": "audit"}), subject)
    assert result.effect == "audit" and not result.is_blocking and "cannot be judged" in result.message


@pytest.mark.parametrize("first_known", [True, False])
def test_the_verdict_on_equal_tags_follows_what_is_unknown_in_either_order(first_known: bool) -> None:
    # the compiled plan keeps memoised failures by the tag values: the unknowns must be part of that key
    policies = require_tags(["team"], {"environment": ENV})
    known = resource({"environment": "x"})
    incomplete = resource({"environment": "x"}, incomplete="tags = (known after apply)")
    order = [known, incomplete] if first_known else [incomplete, known]
    for _ in range(3):
        results = {s is known: one(policies, s) for s in order}
        assert results[True].message == "missing required tag: team; tag 'environment'='x' does not match " + ENV
        assert results[False].message.endswith("may hold it")
        assert "missing required tag" not in results[False].message


def max_hourly_cost() -> PolicySet:
    return compile_text(json.dumps({
        "apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": "cap"},
        "spec": {"subject": "resource", "rules": [
            {"name": "cap", "maxHourlyCost": {"limitUsd": 40, "approvalTag": "cost-approved-by"}}]},
    }))


def priced(tags: dict[str, str], **unknown: Any) -> Any:
    data = {"type": "resource", "provider": "terraform", "kind": "aws_instance", "tags": tags, "hourly_usd": 98.32}
    return subject_from_dict({**data, "unknown_tags": unknown} if unknown else data)


def test_an_approval_tag_known_only_after_apply_approves_nothing_and_says_so() -> None:
    subject = priced({"cost-approved-by": "(known after apply)"}, values=["cost-approved-by"])
    result = one(max_hourly_cost(), subject)
    assert result.result == "fail" and result.is_blocking
    assert "approved by" not in result.message
    assert "the approval tag cost-approved-by is known only after apply, so it approves nothing" in result.message


def test_an_approval_tag_the_default_tags_may_hold_approves_nothing_and_says_so() -> None:
    subject = priced({}, incomplete="the provider's default_tags = local.tags (not in the plan)")
    result = one(max_hourly_cost(), subject)
    assert result.result == "fail"
    assert "not among the tags the plan shows (the provider's default_tags = local.tags" in result.message


def test_a_known_approval_tag_still_approves_beside_unknown_ones() -> None:
    subject = priced({"cost-approved-by": "ana", "Name": "(known after apply)"}, values=["Name"])
    result = one(max_hourly_cost(), subject)
    assert result.result == "pass" and "approved by ana" in result.message


def test_unknown_tags_round_trip_and_reach_cel() -> None:
    subject = resource({"environment": "(known after apply)"}, values=["environment"], incomplete="why",
                       incomplete_keys=["team"])
    assert subject.unknown_tags == UnknownTags(frozenset({"environment"}), "why", frozenset({"team"}))
    assert subject_from_dict(subject.to_dict()) == subject
    assert subject.as_cel["unknown_tags"] == {"values": ["environment"], "incomplete": "why",
                                              "incomplete_keys": ["team"]}
    handled = compile_cel("'environment' in subject.unknown_tags.values || subject.tags.environment == 'prod'")
    assert handled.evaluate_bool(subject.as_cel)
    assert not resource({"team": "ml"}).unknown_tags  # every other subject: nothing unknown
    assert resource({"team": "ml"}).as_cel["unknown_tags"] == {"values": [], "incomplete": None,
                                                               "incomplete_keys": None}


@pytest.mark.parametrize(("unknown", "path"), [
    ({"values": ["team"]}, "unknown_tags.values"),  # an unknown value is of a present key
    ({"values": "environment"}, "unknown_tags.values"),
    ({"incomplete_keys": ["team"]}, "unknown_tags.incomplete_keys"),  # which keys, but not why
    ({"incomplete": 3}, "unknown_tags.incomplete"),
])
def test_malformed_unknown_tags_name_the_field(unknown: dict[str, Any], path: str) -> None:
    with pytest.raises(SubjectError) as info:
        resource({"environment": "x"}, **unknown)
    assert info.value.path == path


def policy(rule: dict[str, Any], **spec: Any) -> PolicySet:
    return compile_text(json.dumps({
        "apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": "p"},
        "spec": {"subject": "resource", "enforcement": {"default": "deny"}, "rules": [rule], **spec},
    }))


def test_an_expr_that_reads_an_unknown_tag_cannot_be_judged_at_plan_time() -> None:
    prod_only = policy({"name": "prod", "expr": {"cel": "subject.tags.env == 'prod'", "message": "not prod"}})
    unknown = resource({"env": "(known after apply)", "team": "ml"}, values=["env"])
    result = one(prod_only, unknown)
    assert (result.result, result.effect, result.is_blocking) == ("warn", "warn", False)
    assert result.message == ("cannot be judged at plan time: subject.tags.env == 'prod' reads tag 'env', "
                              "known only after apply")
    assert one(prod_only, resource({"env": "dev"})).result == "fail"  # known values judge as ever
    by_team = policy({"name": "team", "expr": {"cel": "subject.tags.team == 'ml'", "message": "m"}})
    assert one(by_team, unknown).result == "pass"  # it reads nothing the plan cannot show
    whole = policy({"name": "any", "expr": {"cel": "'env' in subject.tags", "message": "m"}})
    assert "reads the tags" in one(whole, unknown).message
    aware = policy({"name": "aware", "expr": {
        "cel": "'env' in subject.unknown_tags.values || subject.tags.env == 'prod'", "message": "m"}})
    assert one(aware, unknown).result == "pass"  # it handles the unknown itself


def test_a_when_that_reads_an_unknown_tag_matches_nothing_and_an_exclude_waives_nothing() -> None:
    rule = {"name": "cost-tags", "requireTags": {"keys": ["owner"]}}
    only_prod = policy(rule, match={"when": "subject.tags.env == 'prod'"})
    not_dev = policy(rule, exclude={"when": "subject.tags.env == 'dev'"})
    unknown = resource({"env": "(known after apply)"}, values=["env"])
    assert only_prod.evaluate(unknown, "ci").results == ()
    assert one(not_dev, unknown).result == "fail"  # not excluded on a guess: owner is missing
    assert not_dev.evaluate(resource({"env": "dev"}), "ci").results == ()
