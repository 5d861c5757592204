"""Provider ``default_tags`` the plan's ``configuration`` does not hold as a value.

``terraform show -json`` writes an expression as ``constant_value`` only when it has no references;
otherwise only ``references`` (``["local.common_tags"]``, ``["var.team", "local.base"]`` for a
``merge(...)``), and locals are not in the plan at all (``jsonconfig`` marshals outputs, resources,
module calls and variables, never locals). When ``tags_all`` is unknown (a tag of the resource is
known only after apply) the default tags must come from elsewhere: the ``tags_all`` the plan does
know for the provider's other resources, or the check must say it cannot judge them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy_support import compile_text

from costwarden.adapters.terraform import UNKNOWN_VALUE, subjects_from_plan
from costwarden.enforcers.ci import run_check

REQUIRE = json.dumps({
    "apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": "cost-tags"},
    "spec": {"subject": "resource", "match": {"providers": ["terraform"], "kinds": ["aws_instance"]},
             "rules": [{"name": "cost-tags", "requireTags": {"keys": ["team", "environment"]}}]},
})


def config(default_tags: dict[str, Any], *addresses: str) -> dict[str, Any]:
    return {
        "provider_config": {"aws": {"name": "aws", "expressions": {"default_tags": [{"tags": default_tags}]}}},
        "root_module": {"resources": [{"address": a, "provider_config_key": "aws"} for a in addresses]},
    }


def change(address: str, tags: dict[str, Any] | None, tags_all: dict[str, Any] | None,
           unknown: dict[str, Any] | None = None, actions: tuple[str, ...] = ("create",)) -> dict[str, Any]:
    rtype, name = address.split(".")
    after: dict[str, Any] = {"tags": tags}
    if tags_all is not None:
        after["tags_all"] = tags_all
    return {"address": address, "mode": "managed", "type": rtype, "name": name,
            "change": {"actions": list(actions), "after": after, "after_unknown": unknown or {}}}


def plan(*changes: dict[str, Any], configuration: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format_version": "1.2", "resource_changes": list(changes), "configuration": configuration, **extra}


# the instance's Name comes from a resource created in the same apply: tags_all is unknown
NAMED_LATER = {"tags": {"Name": True}, "tags_all": True}


def test_default_tags_from_a_local_are_read_off_a_sibling_whose_tags_all_is_known() -> None:
    p = plan(
        change("aws_s3_bucket.logs", {"Name": "logs"}, {"Name": "logs", "team": "ml", "environment": "prod"},
               actions=("no-op",)),
        change("aws_instance.web", {"Name": None}, None, NAMED_LATER),
        configuration=config({"references": ["local.common_tags"]}, "aws_s3_bucket.logs", "aws_instance.web"),
    )
    [web] = subjects_from_plan(p)
    assert dict(web.tags) == {"team": "ml", "environment": "prod", "Name": UNKNOWN_VALUE}
    assert web.unknown_tags.values == {"Name"}
    assert web.unknown_tags.incomplete is None  # the default tags are known: no key left unjudged


def test_a_key_every_sibling_sets_itself_may_still_be_a_default_tag() -> None:
    p = plan(
        change("aws_s3_bucket.logs", {"team": "data"}, {"team": "data", "environment": "prod"}),
        change("aws_instance.web", {"Name": None}, None, NAMED_LATER),
        configuration=config({"references": ["local.common_tags"]}, "aws_s3_bucket.logs", "aws_instance.web"),
    )
    [_, web] = subjects_from_plan(p)
    assert dict(web.tags) == {"environment": "prod", "Name": UNKNOWN_VALUE}
    assert web.unknown_tags.incomplete is not None and "local.common_tags" in web.unknown_tags.incomplete
    assert web.unknown_tags.incomplete_keys == {"team"}
    assert not web.annotations  # facts, not annotations a policy could mistake for the resource's own


def test_merge_of_locals_and_variables_without_a_known_sibling_cannot_be_judged(tmp_path: Path) -> None:
    # default_tags { tags = merge(local.base, { team = var.team }) }: only the references reach the plan
    p = plan(
        change("aws_instance.web", {"Name": None}, None, NAMED_LATER),
        configuration=config({"references": ["local.base", "var.team"]}, "aws_instance.web"),
        variables={"team": {"value": "ml"}},
    )
    [web] = subjects_from_plan(p)
    assert dict(web.tags) == {"Name": UNKNOWN_VALUE}
    assert web.unknown_tags.incomplete is not None and "local.base" in web.unknown_tags.incomplete
    assert web.unknown_tags.incomplete_keys is None  # any key may be a default

    file = tmp_path / "plan.json"
    file.write_text(json.dumps(p), encoding="utf-8")
    report = run_check([str(file)], compile_text(REQUIRE))
    [result] = report.decisions[0].results
    assert result.result == "warn" and report.exit_code == 0
    assert "team" in result.message and "environment" in result.message
    assert "default_tags" in result.message and "local.base" in result.message
    assert "missing" not in result.message


def test_a_key_the_default_tags_cannot_hold_is_still_missing(tmp_path: Path) -> None:
    p = plan(
        change("aws_s3_bucket.logs", {"team": "data"}, {"team": "data", "environment": "prod"}),
        change("aws_instance.web", {"Name": None}, None, NAMED_LATER),
        configuration=config({"references": ["local.common_tags"]}, "aws_s3_bucket.logs", "aws_instance.web"),
    )
    policy = REQUIRE.replace('"keys": ["team", "environment"]', '"keys": ["team", "environment", "feature"]')
    file = tmp_path / "plan.json"
    file.write_text(json.dumps(p), encoding="utf-8")
    report = run_check([str(file)], compile_text(policy))
    [result] = next(d for d in report.decisions if d.subject.name == "aws_instance.web").results
    # `feature` is on no sibling at all: not a default tag. `team` might be one (every sibling overrides it).
    assert result.result == "fail" and report.exit_code == 1
    assert "missing required tag: feature" in result.message
    assert "'team'" in result.message and "default_tags" in result.message


def test_a_root_variable_default_tags_stays_exact_and_a_scalar_reference_is_not_a_map() -> None:
    p = plan(
        change("aws_instance.web", {"Name": None}, None, NAMED_LATER),
        configuration=config({"references": ["var.team"]}, "aws_instance.web"),
        variables={"team": {"value": "ml"}},  # `tags = { team = var.team }`: references name a string
    )
    [web] = subjects_from_plan(p)
    assert web.unknown_tags.incomplete is not None


def test_known_tags_all_needs_no_default_tags() -> None:
    p = plan(
        change("aws_instance.web", {"Name": "web"}, {"Name": "web", "team": "ml"}),
        configuration=config({"references": ["local.common_tags"]}, "aws_instance.web"),
    )
    [web] = subjects_from_plan(p)
    assert dict(web.tags) == {"Name": "web", "team": "ml"} and not web.unknown_tags
