"""Tags whose values a Terraform plan cannot know (``after_unknown``): the key is present, the
value cannot be judged at plan time. ``costwarden check`` must say so (a warning naming the tag)
instead of passing or failing a value constraint on the placeholder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from policy_support import compile_text

from costwarden.adapters.terraform import UNKNOWN_VALUE
from costwarden.enforcers.ci import run_check
from costwarden.enforcers.reporters import render


def policy(values: dict[str, str], keys: tuple[str, ...] = ("team", "environment"), message: str = "") -> str:
    rule: dict[str, Any] = {"name": "cost-tags", "requireTags": {"keys": list(keys), "values": values}}
    if message:
        rule["message"] = message
    return json.dumps({
        "apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": "cost-tags"},
        "spec": {"subject": "resource", "match": {"providers": ["terraform"]}, "rules": [rule]},
    })


def plan_file(tmp_path: Path, tags_all: dict[str, str], unknown: dict[str, Any]) -> str:
    plan = {
        "format_version": "1.2",
        "resource_changes": [{
            "address": "aws_instance.web", "mode": "managed", "type": "aws_instance", "name": "web",
            "change": {"actions": ["create"], "after": {"instance_type": "t3.micro", "tags_all": tags_all},
                       "after_unknown": {"tags_all": unknown}},
        }],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return str(path)


def judge(tmp_path: Path, policy_text: str, tags_all: dict[str, str], unknown: dict[str, Any]) -> Any:
    report = run_check([plan_file(tmp_path, tags_all, unknown)], compile_text(policy_text))
    [decision] = report.decisions
    [result] = decision.results
    return report, decision, result


def test_value_pattern_on_a_tag_known_only_after_apply_warns_instead_of_failing(tmp_path: Path) -> None:
    # `environment = var.env == "" ? random_pet.env.id : var.env`: the plan cannot know the value
    report, decision, result = judge(tmp_path, policy({"environment": "^(prod|staging|dev)$"}),
                                     {"team": "ml"}, {"environment": True})
    assert result.result == "warn" and result.effect == "warn"
    assert "environment" in result.message and "only after apply" in result.message
    assert "^(prod|staging|dev)$" in result.message
    assert UNKNOWN_VALUE not in result.message.replace(f"({UNKNOWN_VALUE})", "")  # never judged as a value
    assert decision.allowed and report.exit_code == 0


def test_value_pattern_that_the_placeholder_happens_to_match_is_not_a_pass(tmp_path: Path) -> None:
    _, _, result = judge(tmp_path, policy({"environment": "."}), {"team": "ml"}, {"environment": True})
    assert result.result == "warn"
    assert "environment" in result.message and "only after apply" in result.message


def test_key_only_requirement_passes_on_a_tag_known_only_after_apply(tmp_path: Path) -> None:
    _, _, result = judge(tmp_path, policy({}), {"team": "ml"}, {"environment": True})
    assert result.result == "pass"


def test_a_real_failure_still_fails_and_names_the_unjudged_tag_apart(tmp_path: Path) -> None:
    report, decision, result = judge(tmp_path, policy({"environment": "^(prod|dev)$"}), {}, {"environment": True})
    assert result.result == "fail" and not decision.allowed and report.exit_code == 1
    assert "missing required tag: team" in result.message
    assert "does not match" not in result.message  # the placeholder is never matched against the regex
    assert "'environment'" in result.message and "only after apply" in result.message
    assert result.actual == {"team": None}


def test_a_real_bad_value_beside_an_unknown_one_fails_on_the_bad_one(tmp_path: Path) -> None:
    text = policy({"environment": "^(prod|dev)$", "team": "^[a-z]+$"})
    _, _, result = judge(tmp_path, text, {"team": "ML Team"}, {"environment": True})
    assert result.result == "fail"
    assert "tag 'team'='ML Team' does not match ^[a-z]+$" in result.message
    assert "'environment'" in result.message and "only after apply" in result.message


def test_the_rule_message_still_leads(tmp_path: Path) -> None:
    text = policy({"environment": "^(prod|dev)$"}, message="tag it for FinOps")
    _, _, result = judge(tmp_path, text, {"team": "ml"}, {"environment": True})
    assert result.result == "warn" and result.message.startswith("tag it for FinOps (")


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_every_format_says_which_tag_and_why(tmp_path: Path, fmt: str) -> None:
    report, _, _ = judge(tmp_path, policy({"environment": "^(prod|dev)$"}), {"team": "ml"}, {"environment": True})
    out = render(fmt, report)
    assert "environment" in out and "only after apply" in out


def test_a_tag_map_known_only_after_apply_leaves_every_key_unjudged(tmp_path: Path) -> None:
    # `tags = module.labels.tags` where the module's output depends on a resource created in the apply
    plan = {
        "format_version": "1.2",
        "resource_changes": [{
            "address": "aws_instance.web", "mode": "managed", "type": "aws_instance", "name": "web",
            "change": {"actions": ["create"], "after": {"instance_type": "t3.micro"},
                       "after_unknown": {"tags": True, "tags_all": True}},
        }],
    }
    file = tmp_path / "plan.json"
    file.write_text(json.dumps(plan), encoding="utf-8")
    report = run_check([str(file)], compile_text(policy({})))
    [result] = report.decisions[0].results
    assert result.result == "warn" and report.exit_code == 0
    assert "'team', 'environment'" in result.message and "tags" in result.message
    assert "missing" not in result.message
