"""Gatekeeper's and Kyverno's required-label policies, expressed as costwarden policies, reproduce
every verdict their own suites expect on their own objects (``shared/corpora/k8s-required-labels``).

Each source policy is translated mechanically from its own file (required keys, allowed regexes,
matched kinds), so a change in the corpus changes the policy under test. Kyverno auto-generates its
Pod rules for pod controllers; costwarden's Kubernetes adapter judges a controller by its pod
template's labels, which is the same semantics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.engine.compile import compile_documents
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader import load_text

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "k8s-required-labels"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")

POD_CONTROLLERS = ["Deployment", "CronJob", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"]


def policy_set(keys: list[str], kinds: list[str], values: dict[str, str] | None = None) -> PolicySet:
    doc = {
        "apiVersion": "costwarden.dev/v1",
        "kind": "Policy",
        "metadata": {"name": "required-labels"},
        "spec": {
            "subject": "resource",
            "match": {"providers": ["kubernetes"], "kinds": [f"kubernetes/{k}" for k in kinds]},
            "rules": [{"name": "labels", "requireTags": {"keys": keys, "values": values or {}}}],
        },
    }
    loaded = load_text(yaml.safe_dump(doc), "translated.yaml")
    return compile_documents(loaded.documents, diagnostics=loaded.diagnostics, pricer=None)


def denied(policies: PolicySet, obj: dict[str, Any]) -> bool:
    """Whether any subject of the object fails the translated rule."""
    results = [r for s in subjects_from_object(obj) for r in policies.evaluate(s, "admission").results]
    assert results, f"the policy did not apply to {obj.get('kind')}/{obj['metadata'].get('name')}"
    return any(r.result == "fail" for r in results)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- Gatekeeper ------------------------------------------------------------------------------


def gatekeeper_policy(constraint: dict[str, Any]) -> PolicySet:
    params = constraint["spec"].get("parameters", {})
    keys, values = [], {}
    for label in params.get("labels", []):
        if isinstance(label, str):  # the old `labels: ["key"]` form of demo/basic
            keys.append(label)
            continue
        keys.append(label["key"])
        if label.get("allowedRegex"):
            values[label["key"]] = label["allowedRegex"]
    kinds = [k for group in constraint["spec"]["match"]["kinds"] for k in group["kinds"]]
    return policy_set(keys, kinds, values)


def gatekeeper_library_cases() -> list[tuple[str, Path, Path, bool]]:
    suite_dir = CORPUS / "gatekeeper-library" / "requiredlabels"
    if not suite_dir.is_dir():
        return []
    suite = yaml.safe_load((suite_dir / "suite.yaml").read_text())
    return [
        (
            f"{test['name']}/{case['name']}",
            suite_dir / test["constraint"],
            suite_dir / case["object"],
            case["assertions"][0]["violations"] in ("yes", True),
        )
        for test in suite["tests"]
        for case in test["cases"]
    ]


@pytest.mark.parametrize(
    ("name", "constraint", "obj", "violates"), gatekeeper_library_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_gatekeeper_library_requiredlabels(name: str, constraint: Path, obj: Path, violates: bool) -> None:
    policies = gatekeeper_policy(docs(constraint)[0])
    assert denied(policies, docs(obj)[0]) is violates


def test_gatekeeper_library_suite_has_cases() -> None:
    assert len(gatekeeper_library_cases()) == 5


@pytest.mark.parametrize("demo", ["agilebank", "basic"])
def test_gatekeeper_demo_good_admitted_bad_denied(demo: str) -> None:
    root = CORPUS / "gatekeeper-demo" / demo
    constraint = next(d for p in (root / "constraints").glob("*.yaml") for d in docs(p))
    policies = gatekeeper_policy(constraint)
    verdicts = {
        p.parent.name + "/" + p.name: denied(policies, d)
        for p in sorted(root.glob("*/*.yaml"))
        if "good" in p.parent.name or "bad" in p.parent.name
        for d in docs(p)
    }
    assert verdicts, "no demo resources found"
    for where, was_denied in verdicts.items():
        assert was_denied is where.startswith("bad"), where


# --- Kyverno ---------------------------------------------------------------------------------


def kyverno_keys(policy_file: Path) -> list[str]:
    """Required label keys, read from the ClusterPolicy pattern or from its CEL expressions."""
    policy = docs(policy_file)[0]
    keys: list[str] = []
    for rule in policy["spec"].get("rules", []):
        pattern = rule.get("validate", {}).get("pattern", {})
        keys += [k for k, v in pattern.get("metadata", {}).get("labels", {}).items() if v == "?*"]
        for expr in rule.get("validate", {}).get("cel", {}).get("expressions", []):
            keys += re.findall(r"labels\.\?([A-Za-z0-9_]+)\.orValue\(''\) != ''", expr["expression"])
    for validation in policy["spec"].get("validations", []):
        keys += re.findall(r"'([^']+)' in\s+object\.metadata\.labels", validation["expression"])
    assert keys, f"no required labels found in {policy_file}"
    return keys


KYVERNO = ["require-labels", "require-kubecost-labels", "require-kubecost-labels-cel", "require-labels-vpol"]


def kyverno_test_cases() -> list[tuple[str, Path, str, bool]]:
    out = []
    for folder in KYVERNO:
        root = CORPUS / "kyverno-policies" / folder
        test_file = root / ".kyverno-test" / "kyverno-test.yaml"
        if not test_file.is_file():
            continue
        spec = yaml.safe_load(test_file.read_text())
        out.extend(
            (folder, root, name, result["result"] == "fail")
            for result in spec["results"]
            for name in result["resources"]
        )
    return out


@pytest.mark.parametrize(
    ("folder", "root", "resource", "fails"), kyverno_test_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kyverno_cli_results(folder: str, root: Path, resource: str, fails: bool) -> None:
    policy_file = next(p for p in root.glob("*.yaml"))
    policies = policy_set(kyverno_keys(policy_file), ["Pod", *POD_CONTROLLERS])
    spec = yaml.safe_load((root / ".kyverno-test" / "kyverno-test.yaml").read_text())
    objects = [d for r in spec["resources"] for d in docs(root / ".kyverno-test" / r)]
    obj = next(o for o in objects if o["metadata"]["name"] == resource)
    assert denied(policies, obj) is fails


def test_kyverno_cli_cases_cover_every_listed_resource() -> None:
    assert len(kyverno_test_cases()) == 4 + 6 + 6 + 4


CHAINSAW = ["require-labels", "require-kubecost-labels"]


def chainsaw_cases() -> list[tuple[str, Path, bool]]:
    out = []
    for folder in CHAINSAW:
        root = CORPUS / "kyverno-policies" / folder / ".chainsaw-test"
        spec = yaml.safe_load((root / "chainsaw-test.yaml").read_text())
        for step in spec["spec"]["steps"]:
            for op in step["try"]:
                apply = op.get("apply")
                if not apply or "policy" in apply["file"] or apply["file"].startswith("../"):
                    continue
                rejected = any(c.get("check", {}).get("($error != null)") is True for c in apply.get("expect", []))
                out.append((folder, root / apply["file"], rejected))
    return out


@pytest.mark.parametrize(
    ("folder", "file", "rejected"),
    chainsaw_cases(),
    ids=lambda v: v if isinstance(v, str) else (v.name if isinstance(v, Path) else ""),
)
def test_kyverno_chainsaw_enforce(folder: str, file: Path, rejected: bool) -> None:
    root = CORPUS / "kyverno-policies" / folder
    policies = policy_set(kyverno_keys(root / f"{folder}.yaml"), ["Pod", *POD_CONTROLLERS])
    objects = docs(file)
    assert objects
    verdicts = [denied(policies, obj) for obj in objects]
    # Every document of a *bad* file is a violation of its own (pods and each pod controller);
    # every document of a good file is admitted.
    assert verdicts == [rejected] * len(verdicts)


def test_chainsaw_includes_pod_controllers() -> None:
    names = [f.name for _, f, _ in chainsaw_cases()]
    assert "podcontroller-bad.yaml" in names and "good-podcontrollers.yaml" in names


# --- Cloud Custodian admission events --------------------------------------------------------


@pytest.mark.parametrize(("event", "flagged"), [("create_pod_no_labels.json", True), ("create_pod.json", False)])
def test_custodian_admission_events(event: str, flagged: bool) -> None:
    review = json.loads((CORPUS / "cloud-custodian-kube" / "events" / event).read_text())
    obj = review["request"]["object"]
    # c7n's filter is `metadata.labels: absent`; the costwarden equivalent requires any label key
    # the object carries when labelled — expressed as a CEL rule on the subject's tags.
    doc = {
        "apiVersion": "costwarden.dev/v1",
        "kind": "Policy",
        "metadata": {"name": "labels-present"},
        "spec": {
            "subject": "resource",
            "enforcement": {"default": "warn"},
            "rules": [{"name": "labels", "expr": {"cel": "size(subject.tags) > 0", "message": "no labels"}}],
        },
    }
    loaded = load_text(yaml.safe_dump(doc), "c7n.yaml")
    policies = compile_documents(loaded.documents, diagnostics=loaded.diagnostics, pricer=None)
    results = [r for s in subjects_from_object(obj) for r in policies.evaluate(s, "admission").results]
    assert results and all(r.result == ("warn" if flagged else "pass") for r in results)
