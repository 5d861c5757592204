"""Effective tags from Terraform plans against the verdicts of infracost, terraform-compliance and checkov.

The corpora live in ``../shared/corpora/terraform-plans`` beside the repository (see its README).

* infracost: the effective tags (resource tags over provider ``default_tags``) and region that
  infracost uploads for ``breakdown_with_policy_data_upload_plan_json``.
* terraform-compliance: each functional test is a Gherkin feature of tag scenarios. Each scenario
  is restated below as a :class:`Scenario` (which resources, which filters, which tag keys must be
  present, which value regex, which values must not be null), run on our subjects, and printed
  the way terraform-compliance prints it, so that every regex of the folder's ``.expected`` must
  match our output and the suite must fail exactly when ``.failure`` exists.
* checkov: ``plan_tags_variety`` parses, and list-style ASG tags come out as tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters.terraform import subjects_from_plan, subjects_from_plan_text
from costwarden.engine.subjects import Resource

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / ".." / "shared" / "corpora" / "terraform-plans"
COMPLIANCE = PLANS / "terraform-compliance"

pytestmark = pytest.mark.skipif(
    not PLANS.is_dir(), reason=f"shared corpora not present at {PLANS.resolve()} (they live beside the repository)"
)


def _subjects(path: Path, *, include_all: bool = False) -> dict[str, Resource]:
    subjects = subjects_from_plan_text(path.read_text(encoding="utf-8"), file=str(path), include_all=include_all)
    return {s.name: s for s in subjects}


# --- infracost ------------------------------------------------------------------------------


def _golden_sections(path: Path) -> dict[str, Any]:
    """``name:\\n<json>`` sections of an infracost ``*-upload.golden`` GraphQL payload file."""
    sections: dict[str, Any] = {}
    for block in re.split(r"^(\w+):\s*$", path.read_text(encoding="utf-8"), flags=re.M)[1:]:
        if block.strip() and not block.lstrip().startswith(("[", "{")):
            name = block
        else:
            sections[name] = json.loads(block)
    return sections


def test_infracost_effective_tags_match_the_uploaded_policy_resources() -> None:
    folder = PLANS / "infracost" / "breakdown_with_policy_data_upload_plan_json"
    golden = _golden_sections(next(folder.glob("*-upload.golden")))
    uploaded = golden["storePolicyResources"][0]["variables"]["policyResources"]
    subjects = _subjects(folder / "plan.json")
    assert uploaded, "the golden payload lists no resources"
    for res in uploaded:
        subject = subjects[res["address"]]
        expected = {t["key"]: t["value"] for t in res["tags"]}
        # infracost also uploads the attached EBS volumes' tags as "volume_tags.<key>"; those tag
        # the volumes, not the instance, so they are not the instance's effective tags.
        own = {k: v for k, v in expected.items() if not k.startswith("volume_tags.")}
        assert dict(subject.tags) == own, res["address"]
        assert subject.kind == res["resourceType"]
        assert subject.region == res["region"]
        assert subject.workload.instance_type == res["values"].get("instance_type")
        # every resource of the plan carries the provider default_tags infracost reports
        defaults = {t["key"]: t["value"] for t in res["defaultTags"]}
        for other in subjects.values():
            assert defaults.items() <= dict(other.tags).items(), other.name


@pytest.mark.parametrize("name", ["example_plan.json", "examples__terraform__plan.json"])
def test_infracost_untagged_example_plans(name: str) -> None:
    subjects = _subjects(PLANS / "infracost" / name)
    web = subjects["aws_instance.web_app"]
    assert (web.capacity, web.workload.instance_type, web.workload.gpus, web.region) == (
        "on-demand",
        "m5.4xlarge",
        0.0,
        "us-east-1",
    )
    assert all(dict(s.tags) == {} for s in subjects.values())
    assert all(s.capacity == "unknown" for s in subjects.values() if s.kind != "aws_instance")


# --- checkov --------------------------------------------------------------------------------


def test_checkov_plan_parses_with_list_style_asg_tags() -> None:
    subjects = _subjects(PLANS / "checkov" / "plan_tags_variety" / "tfplan.json")
    both = {"tag1": "test", "tag2": "test"}
    assert dict(subjects["aws_autoscaling_group.example"].tags) == both  # `tags` list of objects
    assert dict(subjects["aws_autoscaling_group.example2"].tags) == both  # `tag` blocks
    assert dict(subjects["aws_dynamodb_table.basic-dynamodb-table"].tags) == both  # tags_all
    assert all(s.source.line for s in subjects.values())


# --- terraform-compliance -------------------------------------------------------------------


@dataclass(frozen=True)
class When:
    """A ``When`` filter; resources it drops are reported as terraform-compliance reports them."""

    keep: Callable[[Resource], bool]
    skipped: Callable[[Resource], str] = lambda s: ""


def includes(key: str, value: str | None = None, *, negate: bool = False) -> When:
    """``When its tags includes [an entry where "key" is "value"]`` (or ``does not include``)."""
    what = key if value is None else f"{key}={value}"

    def found(s: Resource) -> bool:
        return key in s.tags and (value is None or s.tags[key] == value)

    return When(
        lambda s: found(s) != negate, lambda s: f"{'Found' if found(s) else 'Can not find'} {what} tags in {s.name}."
    )


HAS_TAGS = When(lambda s: bool(s.tags))


@dataclass(frozen=True)
class Scenario:
    """One scenario as a tag requirement.

    ``given`` is ``"tags"`` (resource that supports tags: a ``tags`` key anywhere in its values,
    as terraform-compliance finds them) or a resource type. ``require`` maps tag keys that must be
    present to a value regex (``re.match``, case-insensitive unless ``case_sensitive``) or None.
    ``tags_not_null``: the tag map must have a non-empty value; ``values_not_null``: the required
    keys' values must be non-empty. ``must_fail``: ``Then it must fail``.
    """

    given: str = "tags"
    when: tuple[When, ...] = ()
    require: Mapping[str, str | None] = field(default_factory=dict)
    tags_not_null: bool = False
    values_not_null: bool = False
    must_fail: bool = False
    exclude: str | None = None
    case_sensitive: bool = False


def _has_key(value: Any, key: str) -> bool:
    if isinstance(value, Mapping):
        return key in value or any(_has_key(v, key) for v in value.values())
    return isinstance(value, list) and any(_has_key(v, key) for v in value)


def _failures(sc: Scenario, s: Resource) -> list[str]:
    flags = 0 if sc.case_sensitive else re.IGNORECASE
    tags = dict(s.tags)
    out = []
    if sc.tags_not_null and (not tags or all(v == "" for v in tags.values())):
        multi = "Multivalued " if tags else ""
        out.append(f'{multi}tags property in {s.name} is considered to be Null. It is set to "{tags!r}".')
    for key, regex in sc.require.items():
        actual = next((k for k in tags if (k == key if sc.case_sensitive else k.lower() == key.lower())), None)
        if actual is None:
            out.append(f"{s.name} ({s.kind}) does not have {key} property.")
        elif sc.values_not_null and tags[actual] == "":
            out.append(f"{key} property in {s.name} is considered to be Null. It is set to {tags[actual]!r}.")
        elif regex is not None and not re.match(regex, tags[actual], flags):
            kind = "case sensitive" if sc.case_sensitive else "case insensitive"
            out.append(
                f"{key} property in {s.name} resource does not match with {regex} {kind} regex. "
                f"It is set to {tags[actual]}."
            )
    return out


def run(sc: Scenario, subjects: Iterable[Resource]) -> tuple[str, list[str]]:
    """('passed' | 'failed' | 'skipped', output lines) for one scenario."""
    chosen = [s for s in subjects if (_has_key(s.raw, "tags") if sc.given == "tags" else s.kind == sc.given)]
    chosen = [s for s in chosen if not (sc.exclude and re.match(sc.exclude, s.name))]
    lines: list[str] = []
    for step in sc.when:
        lines += [f"* SKIPPING: {msg}" for s in chosen if not step.keep(s) and (msg := step.skipped(s))]
        chosen = [s for s in chosen if step.keep(s)]
    if not chosen:
        return "skipped", lines
    if sc.must_fail:
        return "failed", lines
    lines += [f"Failure: {msg}" for s in chosen for msg in _failures(sc, s)]
    return ("failed" if any(line.startswith("Failure") for line in lines) else "passed"), lines


def _not_aws_instance(s: Resource) -> bool:
    return s.kind != "aws_instance"


FEATURES: dict[str, list[Scenario]] = {
    "test_issue-166": [
        Scenario(when=(When(_not_aws_instance), HAS_TAGS), require={"Name": "terraform-compliance-test-156"}),
    ],
    "test_issue-168": [Scenario(require={"Name": "^mcrilly-.+$"}), Scenario(require={"Environment": "^Sandbox$"})],
    "test_issue-208": [Scenario(require={"Capability": None}), Scenario(require={"Environment": None})],
    "test_issue-228": [
        Scenario("aws_s3_bucket", (includes("Colour", "Red"),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("Colour", "Green"),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("Experience", "Green"),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("Colour", "Red", negate=True),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("Colour", "Green", negate=True),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("Experience", "Green", negate=True),), must_fail=True),
    ],
    "test_issue-243": [
        Scenario(
            when=(HAS_TAGS, When(lambda s: s.tags.get("environment", "").lower() == "live")),
            require={"service": None},
            values_not_null=True,
        ),
    ],
    "test_issue-294": [
        Scenario("azurerm_virtual_machine", (HAS_TAGS,), {"backmeup": "(true|false)"}, tags_not_null=True),
        Scenario("azurerm_virtual_machine", (HAS_TAGS,), {"terraform": "(true)"}, tags_not_null=True),
    ],
    "test_issue-338": [Scenario(tags_not_null=True)],
    "test_issue-343": [Scenario(tags_not_null=True)],
    "test_issue-343-bonus-regex": [Scenario(tags_not_null=True)],
    "test_issue-567": [Scenario(when=(HAS_TAGS,), require={"Name": ".+"}, exclude=".*datadog_monitor.*")],
    "test_its_key_is_value_with_spaces": [
        Scenario("aws_s3_bucket", (includes("WithoutSpace"),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("With Space"),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("WithoutSpace", negate=True),), must_fail=True),
        Scenario("aws_s3_bucket", (includes("With Space", negate=True),), must_fail=True),
    ],
    # Only the last scenario (tags); see NOT_COVERED.
    "test_regex_on_when": [
        Scenario(
            when=(When(lambda s: re.match("module.project1.*", s.name) is not None),),
            require={"project": "project1"},
            case_sensitive=True,
        ),
    ],
}

# Scenarios deliberately left out: they judge no tags, so our subjects have nothing to say.
NOT_COVERED: dict[str, str] = {
    "test_regex_on_when": "scenarios 1-5 filter the aws provider's version_constraint and require S3 companion "
    "resources (server-side encryption, versioning, logging): configuration, not tags",
}


def _expected_lines(folder: Path) -> list[str]:
    path = folder / ".expected"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip()]


def test_every_terraform_compliance_folder_is_covered_or_listed() -> None:
    folders = {p.name for p in COMPLIANCE.iterdir() if p.is_dir()}
    assert folders == set(FEATURES), "add the new folder's scenarios to FEATURES (or say why not in NOT_COVERED)"
    assert set(NOT_COVERED) <= folders


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_terraform_compliance_suite_verdict(name: str) -> None:
    folder = COMPLIANCE / name
    subjects = list(_subjects(folder / "plan.out.json", include_all=True).values())
    results = [run(sc, subjects) for sc in FEATURES[name]]
    statuses = [status for status, _ in results]
    output = [line for _, lines in results for line in lines]
    output.append(
        f"{len(statuses)} scenarios ({statuses.count('passed')} passed, {statuses.count('failed')} "
        f"failed, {statuses.count('skipped')} skipped)"
    )
    text = "\n".join(output)

    assert ("failed" in statuses) == (folder / ".failure").exists(), text
    for regex in _expected_lines(folder):
        if name in NOT_COVERED and "aws_kms_key" not in regex:
            continue  # lines of the scenarios we do not restate
        assert re.search(regex, text), f"{regex!r} not in:\n{text}"


def test_terraform_compliance_feature_files_match_the_restated_scenarios() -> None:
    """A guard against drift: each feature has as many scenarios (outline rows) as restated."""
    for name, scenarios in FEATURES.items():
        feature = (COMPLIANCE / name / "test.feature").read_text(encoding="utf-8")
        plain = len(re.findall(r"^\s*Scenario:", feature, re.M))
        outline_rows = sum(
            len(block.strip().splitlines()) - 1  # minus the header row
            for block in re.findall(r"Examples:\s*\n((?:[ \t]*\|.*\n?)+)", feature)
        )
        count = plain + outline_rows
        if name in NOT_COVERED:
            count -= 5
        assert count == len(scenarios), name


def test_terraform_compliance_asg_and_datadog_tags() -> None:
    asg = _subjects(COMPLIANCE / "test_issue-208" / "plan.out.json")["aws_autoscaling_group.thing"]
    assert dict(asg.tags) == {"Name": "thing", "Environment": "dev", "Capability": "thing"}
    assert asg.workload.replicas == 3
    monitors = _subjects(COMPLIANCE / "test_issue-567" / "plan.out.json", include_all=True)
    assert len(monitors) == 9  # no-op included; the one no-op with a null `after` is not
    assert dict(monitors["datadog_monitor.kubernetes_memory_limit_reached[0]"].tags)["owner"] == "some-owner"
    assert len(_subjects(COMPLIANCE / "test_issue-567" / "plan.out.json")) == 6  # updates only


def test_plan_without_source_text_has_no_lines() -> None:
    plan = json.loads((COMPLIANCE / "test_issue-168" / "plan.out.json").read_text(encoding="utf-8"))
    subjects = subjects_from_plan(plan, file="plan.out.json")
    assert [s.source.line for s in subjects] == [None, None]
    assert [s.source.pointer for s in subjects] == ["/resource_changes/0", "/resource_changes/1"]
