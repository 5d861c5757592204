"""The built-in library's structure and its own test cases (STYLE.md, "The policy library")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from costwarden.api import builtin_library_path, load_policies
from costwarden.testing import run_tests

LIBRARY = Path(__file__).resolve().parents[1] / "policies"
POLICY_DIRS = sorted(p.parent for p in LIBRARY.rglob("tests.yaml"))
POLICY_FILES = sorted(
    p for p in LIBRARY.rglob("*.yaml") if p.name != "tests.yaml" and "samples" not in p.relative_to(LIBRARY).parts
)


def test_packaged_library_is_the_source_tree() -> None:
    assert builtin_library_path() == LIBRARY.resolve()


def test_library_loads_and_has_the_policies_the_issue_names() -> None:
    names = set(load_policies().names)
    assert {
        "require-cost-tags",
        "require-llm-attribution",
        "allowed-model-tiers",
        "require-prompt-caching",
        "cap-output-tokens",
        "user-daily-budget",
        "feature-monthly-budget",
        "spot-only-batch",
        "gpu-hourly-cost-cap",
        "vllm-efficient-serving",
    } <= names


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_policy_name_matches_folder_and_file(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    policies = [d for d in docs if d.get("kind") == "Policy"]
    assert len(policies) == 1, f"{path} must hold exactly one Policy"
    name = policies[0]["metadata"]["name"]
    assert name == path.stem == path.parent.name


@pytest.mark.parametrize("folder", POLICY_DIRS, ids=lambda p: p.name)
def test_every_policy_has_allowed_and_denied_samples_and_uses_them(folder: Path) -> None:
    samples = {p.name for p in (folder / "samples").iterdir()}
    assert any(s.startswith("allowed-") for s in samples), f"{folder.name}: no allowed-* sample"
    assert any(s.startswith("denied-") for s in samples), f"{folder.name}: no denied-* sample"
    spec = yaml.safe_load((folder / "tests.yaml").read_text())
    used = {Path(case["input"]).name for case in spec["cases"]}
    assert samples - used == set(), f"{folder.name}: unused samples {sorted(samples - used)}"
    assert used - samples == set(), f"{folder.name}: cases name missing samples {sorted(used - samples)}"
    assert spec["policy"] == folder.name


@pytest.mark.parametrize("folder", POLICY_DIRS, ids=lambda p: p.name)
def test_policy_cases_pass(folder: Path) -> None:
    report = run_tests(folder)
    assert report.errors == []
    failures = [f"{c.case}: {c.failures}" for c in report.cases if not c.passed]
    assert failures == []
    assert len(report.cases) >= 2


def test_runner_rejects_unknown_rule_and_policy(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    (folder / "samples").mkdir(parents=True)
    source = LIBRARY / "llm" / "cap-output-tokens"
    (folder / "cap-output-tokens.yaml").write_text((source / "cap-output-tokens.yaml").read_text())
    sample = source / "samples" / "allowed-small-classify.json"
    (folder / "samples" / sample.name).write_text(sample.read_text())
    (folder / "tests.yaml").write_text(
        "policy: cap-output-tokens\ncases:\n"
        f"  - {{name: misspelt rule, input: samples/{sample.name}, results: [{{rule: output-cap-x, result: pass}}]}}\n"
        f"  - {{name: missing input, input: samples/nope.json, results: [{{rule: output-cap, result: pass}}]}}\n"
    )
    report = run_tests(folder)
    assert not report.passed
    messages = [f for c in report.cases for f in c.failures]
    assert any("unknown rule(s) output-cap-x" in m for m in messages)
    assert any("does not exist" in m for m in messages)
    (folder / "tests.yaml").write_text(
        "policy: no-such-policy\ncases:\n"
        f"  - {{name: x, input: samples/{sample.name}, results: [{{rule: a, result: pass}}]}}\n"
    )
    report = run_tests(folder)
    assert any("unknown policy 'no-such-policy'" in e for e in report.errors)
