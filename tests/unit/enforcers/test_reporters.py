"""Every report format of ``costwarden check``, rendered from one hand-built CheckReport.

The report mixes fail/warn/error/skip/pass results, baseline-accepted findings, an input error,
namespaced and cluster-scoped subjects, and strings built to break formats: newlines, ``%``, ``:``,
commas, XML specials, a control character and non-ASCII text.

Vendored schemas in ``tests/data`` (kept offline so the suite needs no network):

* ``sarif-2.1.0.json`` — the OASIS SARIF 2.1.0 JSON schema, byte-for-byte from
  github.com/oasis-tcs/sarif-spec, ``Documents/CommitteeSpecifications/2.1.0/sarif-schema-2.1.0.json``
  (commit 3682e9ee648f2f3e11ba1fcd47fc390a0b8f9dab; draft-07, 112,318 characters).
* ``wgpolicyk8s.io_clusterpolicyreports-v1alpha2.yaml`` — the ``wgpolicyk8s.io/v1alpha2`` CRD from
  github.com/kubernetes-sigs/wg-policy-prototypes,
  ``policy-report/crd/v1alpha2/wgpolicyk8s.io_clusterpolicyreports.yaml`` (commit
  037274b4aefe6fea1c8f01b424636ba821e0dd26). Its ``openAPIV3Schema`` is the PolicyReport one too:
  the namespaced CRD of the same version differs only in its description.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import costwarden
from costwarden.enforcers.ci import REPORT_SCHEMA, CheckReport, Finding, InputError
from costwarden.enforcers.reporters import REPORTERS, github, render, usd
from costwarden.enforcers.reporters import json as json_reporter
from costwarden.engine.decision import Decision, Fix, RuleResult, SubjectRef
from costwarden.errors import CostwardenError

DATA = Path(__file__).resolve().parents[2] / "data"
STARTED = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)

TRICKY = 'uses 50% on-demand: "a,b" <x> & [y]\nsecond line ✓ 日本 \x1b'
TRICKY_FIX = "set nodeSelector karpenter.sh/capacity-type: spot, or 100% spot"
K8S_FILE = "manifests/llm server.yaml"


def _deployment_results() -> tuple[RuleResult, ...]:
    return (
        RuleResult("gpu-spot", "require-spot", "fail", "deny", "high", TRICKY, path="/spec/template",
                   fix=Fix(TRICKY_FIX, ({"op": "add", "path": "/spec/x", "value": "spot"},)),
                   savings_usd_month=1250.0),
        RuleResult("model-tier", "cheap-model", "warn", "warn", "medium", "prefer a smaller model",
                   savings_usd_per_call=0.0042),
        RuleResult("labels", "cost-center", "pass", "deny", "low", "has cost-center"),
        RuleResult("labels", "owner", "skip", "deny", "low", "exempted", exemption="legacy-ml"),
    )


def _decisions() -> list[Decision]:
    deployment = SubjectRef("resource", "kubernetes", "Deployment", "llm-server", "ml", K8S_FILE, 3, "/0")
    job = SubjectRef("resource", "kubernetes", "Job", "train", "research", K8S_FILE, 20, "/1")
    instance = SubjectRef("resource", "aws", "aws_instance", "gpu_box", "123456789012", "infra/plan.json", None)
    call = SubjectRef("llm_call", "anthropic", "messages", "req-1", None, "logs/calls.jsonl", 7)
    return [
        Decision("ci", deployment, _deployment_results()),
        Decision("ci", job, (
            RuleResult("budget", "daily", "error", "deny", "critical", "CEL error: no such key 'team'"),
            RuleResult("gpu-spot", "require-spot", "fail", "deny", "low", "old job, accepted",
                       savings_usd_month=10.5),
        )),
        Decision("ci", instance, (
            RuleResult("idle-gpu", "utilisation", "fail", "audit", "info", "GPU idle 80% of the time",
                       savings_usd_month=300.0),
            RuleResult("labels", "cost-center", "pass", "deny", "low", "tagged"),
        )),
        Decision("ci", call, (
            RuleResult("prompt-cache", "long-prompt", "fail", "warn", "medium", "cache the system prompt",
                       fix=Fix("add cache_control", target="request"), savings_usd_per_call=0.0123),
        )),
    ]


def make_report(*, errors: bool = True) -> CheckReport:
    decisions = _decisions()
    findings = [Finding(d, r, accepted=r.message == "old job, accepted") for d in decisions for r in d.violations]
    return CheckReport(
        surface="ci", decisions=decisions, findings=findings,
        errors=[InputError("manifests/broken.yaml", 4, "mapping values are not allowed here: a: b, c")] if errors
        else [],
        files=[K8S_FILE, "infra/plan.json", "logs/calls.jsonl", "docs/notes.yaml"]
        + (["manifests/broken.yaml"] if errors else []),
        skipped=["docs/notes.yaml"], started=STARTED, policies=7,
    )


@pytest.fixture
def report() -> CheckReport:
    return make_report()


# --- registry ---------------------------------------------------------------------------------------


def test_every_registered_format_renders(report: CheckReport) -> None:
    assert set(REPORTERS) == {"text", "json", "sarif", "junit", "github", "policyreport"}
    for fmt in REPORTERS:
        assert isinstance(render(fmt, report), str)


def test_an_empty_report_renders_in_every_format() -> None:
    empty = CheckReport(surface="ci")
    outputs = {fmt: render(fmt, empty) for fmt in REPORTERS}
    assert outputs["github"] == outputs["policyreport"] == ""
    assert outputs["text"].splitlines()[-1] == "no enforced failures"
    assert json.loads(outputs["json"])["results"] == []
    assert _sarif_validator().is_valid(json.loads(outputs["sarif"]))
    assert _junit(empty).get("tests") == "0"


def test_unknown_format_names_the_valid_ones(report: CheckReport) -> None:
    with pytest.raises(CostwardenError, match="unknown report format 'xml'; formats: github, json, junit"):
        render("xml", report)


def test_formats_are_imported_only_when_asked_for() -> None:
    code = ("import sys, costwarden.enforcers.reporters; "
            "print([m for m in sys.modules if m.startswith('costwarden.enforcers.reporters.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_usd_keeps_sub_dollar_digits() -> None:
    assert [usd(1250), usd(0.0042), usd(0.1), usd(0)] == ["$1,250.00", "$0.0042", "$0.1", "$0"]


# --- text -------------------------------------------------------------------------------------------


def test_text_groups_violations_by_file_and_subject(report: CheckReport) -> None:
    out = render("text", report)
    lines = out.splitlines()
    assert "\x1b[" not in out
    assert lines[0] == K8S_FILE
    assert lines.index(K8S_FILE) < lines.index("infra/plan.json") < lines.index("logs/calls.jsonl")
    assert any(line.startswith("  Deployment ml/llm-server  kubernetes, line 3 (1 passed, 1 skipped)")
               for line in lines)
    assert "gpu-spot/require-spot  deny, high" in out
    assert "uses 50% on-demand: \"a,b\" <x> & [y]" in out  # brackets are not rich markup
    assert "second line ✓ 日本" in out
    assert f"fix: {TRICKY_FIX}" in out
    assert "saves ~$1,250.00/month" in out and "saves ~$0.0042/call" in out
    assert "labels/cost-center" not in out  # passes are only counted
    accepted = next(line for line in lines if "old job" in line or "accepted by baseline" in line)
    assert "accepted by baseline" in accepted


def test_text_lists_input_errors_and_summary(report: CheckReport) -> None:
    lines = render("text", report).splitlines()
    assert "manifests/broken.yaml:4: error: mapping values are not allowed here: a: b, c" in lines
    assert lines[-2] == ("4 subjects in 4 files, 7 policies: 2 pass, 4 fail, 1 warn, 1 error, 1 skip; "
                         "1 accepted by baseline, 1 unrecognised file skipped, 1 input error")
    assert lines[-1] == (
        "input could not be read: 1 error above; 2 blocking failures; estimated savings ~$1,560.50/month"
    )


def test_text_verdict_without_enforced_failures() -> None:
    clean = CheckReport(surface="ci", decisions=[_decisions()[3]], files=["logs/calls.jsonl"])
    clean.findings = [Finding(d, r) for d in clean.decisions for r in d.violations]
    assert render("text", clean).splitlines()[-1] == "no enforced failures"


def test_text_color_adds_ansi(report: CheckReport) -> None:
    assert "\x1b[" in render("text", report, color=True)


# --- json -------------------------------------------------------------------------------------------


def test_json_schema_fields(report: CheckReport) -> None:
    data = json.loads(render("json", report))
    assert data["schema"] == REPORT_SCHEMA == "costwarden.dev/check-report/v1"
    assert data["tool"] == {"name": "costwarden", "version": costwarden.__version__}
    assert data["surface"] == "ci"
    assert data["summary"] == report.summary() == {
        "pass": 2, "fail": 4, "warn": 1, "error": 1, "skip": 1, "subjects": 4, "files": 4, "blocking": 2,
        "skipped_files": 1, "accepted": 1, "input_errors": 1,
    }
    assert [r["result"] for r in data["results"]] == ["fail", "warn", "error", "fail", "fail", "fail"]
    assert data["errors"] == [{"file": "manifests/broken.yaml", "line": 4,
                               "message": "mapping values are not allowed here: a: b, c"}]
    assert data["skipped_files"] == ["docs/notes.yaml"]


def test_json_result_shape(report: CheckReport) -> None:
    first, *_ = json.loads(render("json", report))["results"]
    assert set(first) == {"policy", "rule", "result", "effect", "severity", "message", "subject", "source", "path",
                          "expected", "actual", "exemption", "fix", "savings_usd_month", "savings_usd_per_call",
                          "fingerprint", "accepted", "blocking"}
    assert first["message"] == TRICKY
    assert first["subject"] == {"type": "resource", "provider": "kubernetes", "kind": "Deployment",
                                "name": "llm-server", "namespace": "ml"}
    assert first["source"] == {"file": K8S_FILE, "line": 3, "pointer": "/0"}
    assert first["fix"] == {"description": TRICKY_FIX, "target": "object",
                            "patch": [{"op": "add", "path": "/spec/x", "value": "spot"}]}
    assert first["fingerprint"] == report.findings[0].fingerprint
    assert (first["savings_usd_month"], first["blocking"], first["accepted"]) == (1250.0, True, False)
    accepted = next(r for r in json.loads(render("json", report))["results"] if r["accepted"])
    assert accepted["blocking"] is False


def test_json_can_include_passes(report: CheckReport) -> None:
    data = json_reporter.to_dict(report, include_passes=True)
    assert len(data["results"]) == sum(len(d.results) for d in report.decisions) == 9
    assert json.dumps(data)  # plain data all the way down


# --- sarif ------------------------------------------------------------------------------------------


def _sarif_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((DATA / "sarif-2.1.0.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_vendored_schemas_reject_what_they_should() -> None:
    assert not _sarif_validator().is_valid({"version": "2.1.0", "runs": [{"tool": {"driver": {}}}]})
    bad = {"results": [{"policy": "p", "severity": "critical"}]}
    assert not jsonschema.Draft7Validator(_crd_schema(strict=False)).is_valid(bad)


@pytest.mark.parametrize("errors", [True, False])
def test_sarif_is_valid_sarif_2_1_0(errors: bool) -> None:
    log = json.loads(render("sarif", make_report(errors=errors)))
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in _sarif_validator().iter_errors(log)]
    assert problems == []
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is not errors


def test_sarif_run_and_rules(report: CheckReport) -> None:
    log = json.loads(render("sarif", report))
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("costwarden", costwarden.__version__)
    assert driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert ids == ["gpu-spot/require-spot", "model-tier/cheap-model", "budget/daily", "idle-gpu/utilisation",
                   "prompt-cache/long-prompt"]
    spot = driver["rules"][0]
    assert spot["name"] == "GpuSpotRequireSpot"
    assert spot["defaultConfiguration"] == {"level": "error"}
    assert "gpu-spot" in spot["fullDescription"]["text"] and "cost" in spot["properties"]["tags"]
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_results(report: CheckReport) -> None:
    results = json.loads(render("sarif", report))["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("gpu-spot/require-spot", "error"), ("model-tier/cheap-model", "warning"), ("budget/daily", "error"),
        ("gpu-spot/require-spot", "error"), ("idle-gpu/utilisation", "note"), ("prompt-cache/long-prompt", "warning"),
    ]
    first = results[0]
    assert first["message"]["text"] == f"Deployment ml/llm-server: {TRICKY} Fix: {TRICKY_FIX} Saves ~$1,250.00/month."
    physical = first["locations"][0]["physicalLocation"]
    assert physical == {"artifactLocation": {"uri": "manifests/llm%20server.yaml", "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": 3}}
    assert results[4]["locations"][0]["physicalLocation"]["region"] == {"startLine": 1}  # line unknown
    assert first["partialFingerprints"] == {"costwarden/v1": report.findings[0].fingerprint}
    assert first["properties"]["savingsUsdPerMonth"] == 1250.0
    assert results[1]["properties"]["savingsUsdPerCall"] == 0.0042
    assert "suppressions" not in first
    assert results[3]["suppressions"] == [{"kind": "external", "state": "accepted",
                                           "justification": "accepted by the costwarden baseline"}]


def test_sarif_input_errors_are_notifications(report: CheckReport) -> None:
    (invocation,) = json.loads(render("sarif", report))["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["startTimeUtc"] == "2025-03-01T12:30:15.123456Z"
    (note,) = invocation["toolExecutionNotifications"]
    assert note["level"] == "error"
    assert note["message"]["text"] == "mapping values are not allowed here: a: b, c"
    assert note["locations"][0]["physicalLocation"]["region"] == {"startLine": 4}


def test_sarif_paths_are_relative_with_forward_slashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    subject = SubjectRef("resource", "kubernetes", "Job", "j", None, str(tmp_path / "k8s" / "job.yaml"), 2)
    decision = Decision("ci", subject, (RuleResult("p", "r", "fail", "deny", "high", "m"),))
    report = CheckReport("ci", [decision], [Finding(decision, decision.results[0])])
    location = json.loads(render("sarif", report))["runs"][0]["results"][0]["locations"][0]
    assert location["physicalLocation"]["artifactLocation"] == {"uri": "k8s/job.yaml", "uriBaseId": "%SRCROOT%"}


# --- junit ------------------------------------------------------------------------------------------


def _junit(report: CheckReport) -> ET.Element:
    out = render("junit", report)
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(out.encode("utf-8"))


def test_junit_suites_cases_and_totals(report: CheckReport) -> None:
    root = _junit(report)
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [K8S_FILE, "infra/plan.json", "logs/calls.jsonl", "manifests/broken.yaml"]  # not skipped
    assert [len(s.findall("testcase")) for s in suites.values()] == [6, 2, 1, 1]
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "10", "failures": "2", "errors": "1", "skipped": "2"}
    k8s = suites[K8S_FILE]
    assert {k: k8s.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6", "failures": "2", "errors": "0", "skipped": "2"}


def test_junit_stdin_is_one_suite() -> None:
    pod = SubjectRef("resource", "kubernetes", "Pod", "a", "ml", "<stdin>", 3, "")
    decision = Decision("ci", pod, (RuleResult("labels", "owner", "fail", "deny", "low", "no owner"),))
    report = CheckReport(surface="ci", decisions=[decision], findings=[Finding(decision, decision.results[0])],
                         files=["-"], started=STARTED, policies=1)
    suites = _junit(report).findall("testsuite")
    assert [(s.get("name"), s.get("tests")) for s in suites] == [("<stdin>", "1")]  # no empty "-" suite


def test_junit_testcase_content(report: CheckReport) -> None:
    cases = {(c.get("classname"), c.get("name")): c for c in _junit(report).iter("testcase")}
    spot = cases[("gpu-spot", "require-spot: Deployment/ml/llm-server")]
    failure = spot.find("failure")
    assert failure is not None and failure.get("type") == "fail"
    assert failure.get("message") == TRICKY.replace("\x1b", "\ufffd")  # attribute newlines survive escaped
    assert f"fix: {TRICKY_FIX}" in (failure.text or "")
    assert spot.get("file") == K8S_FILE and spot.get("line") == "3"
    error = cases[("budget", "daily: Job/research/train")].find("failure")
    assert error is not None and error.get("type") == "error"
    assert cases[("labels", "cost-center: Deployment/ml/llm-server")].find("*") is None  # a plain pass
    skipped = cases[("labels", "owner: Deployment/ml/llm-server")].find("skipped")
    assert skipped is not None and skipped.get("message") == "exempted by legacy-ml"
    accepted = cases[("gpu-spot", "require-spot: Job/research/train")].find("skipped")
    assert accepted is not None and (accepted.get("message") or "").startswith("accepted by baseline")
    warning = cases[("model-tier", "cheap-model: Deployment/ml/llm-server")].find("system-out")
    assert warning is not None and (warning.text or "").startswith("WARN: model-tier/cheap-model")
    audit = cases[("idle-gpu", "utilisation: aws_instance/123456789012/gpu_box")]
    assert audit.find("failure") is None and audit.find("system-out") is not None
    broken = cases[("costwarden.input", "read manifests/broken.yaml:4")].find("error")
    assert broken is not None and broken.get("message") == "mapping values are not allowed here: a: b, c"


# --- github -----------------------------------------------------------------------------------------


def test_github_escaping_is_exact() -> None:
    assert github.escape_data("50% a:b,c\r\nd") == "50%25 a:b,c%0D%0Ad"
    assert github.escape_property("50% a:b,c\r\nd") == "50%25 a%3Ab%2Cc%0D%0Ad"
    line = github.command_line("error", "a\nb", file="dir,1/a:b.yaml", line=3, title="p/r: x, y")
    assert line == "::error file=dir%2C1/a%3Ab.yaml,line=3,title=p/r%3A x%2C y::a%0Ab"


def test_github_one_line_per_finding(report: CheckReport) -> None:
    lines = render("github", report).splitlines()
    assert len(lines) == len(report.findings) + len(report.errors) == 7
    assert all(line.startswith("::") for line in lines)
    assert lines[0] == (
        "::error file=manifests/llm server.yaml,line=3,title=gpu-spot/require-spot::Deployment ml/llm-server: "
        'uses 50%25 on-demand: "a,b" <x> & [y]%0Asecond line ✓ 日本 \x1b '
        "(fix: set nodeSelector karpenter.sh/capacity-type: spot, or 100%25 spot) [saves ~$1,250.00/month]"
    )
    assert [line.split(" ", 1)[0] for line in lines] == [
        "::error", "::warning", "::error", "::notice", "::notice", "::warning", "::error"]
    assert "accepted by baseline: Job research/train" in lines[3]
    assert lines[4].startswith("::notice file=infra/plan.json,title=idle-gpu/utilisation::")  # no line known
    assert lines[6] == ("::error file=manifests/broken.yaml,line=4,title=costwarden%3A input error::"
                        "mapping values are not allowed here: a: b, c")


# --- policyreport -----------------------------------------------------------------------------------


def _crd_schema(*, strict: bool) -> dict[str, Any]:
    crd = yaml.safe_load((DATA / "wgpolicyk8s.io_clusterpolicyreports-v1alpha2.yaml").read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    schema: dict[str, Any] = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    if strict:  # the API server prunes fields its schema lacks; make that an error here
        _close(schema)
    return schema


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for value in node:
            _close(value)


def _policy_reports(report: CheckReport) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render("policyreport", report)))


def test_policyreport_validates_against_the_crd(report: CheckReport) -> None:
    for strict in (False, True):
        validator = jsonschema.Draft7Validator(_crd_schema(strict=strict))
        for doc in _policy_reports(report):
            problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
            assert problems == [], doc["metadata"]["name"]


def test_policyreport_one_report_per_namespace(report: CheckReport) -> None:
    docs = _policy_reports(report)
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs] == [
        ("wgpolicyk8s.io/v1alpha2", "PolicyReport", "costwarden-ml", "ml"),
        ("wgpolicyk8s.io/v1alpha2", "PolicyReport", "costwarden-research", "research"),
        ("wgpolicyk8s.io/v1alpha2", "ClusterPolicyReport", "costwarden-cluster", None),
    ]
    assert [d["summary"] for d in docs] == [
        {"pass": 1, "fail": 1, "warn": 1, "error": 0, "skip": 1},
        {"pass": 0, "fail": 1, "warn": 0, "error": 1, "skip": 0},
        {"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0},
    ]
    assert sum(len(d["results"]) for d in docs) == 9  # passes and skips are listed too


def test_policyreport_results(report: CheckReport) -> None:
    ml, research, cluster = _policy_reports(report)
    first = ml["results"][0]
    assert first["message"] == TRICKY  # survives YAML quoting
    assert (first["policy"], first["rule"], first["result"], first["severity"]) == (
        "gpu-spot", "require-spot", "fail", "high")
    assert (first["source"], first["scored"]) == ("costwarden", True)
    assert first["timestamp"] == {"seconds": int(STARTED.timestamp()), "nanos": 123456000}
    assert first["resources"] == [{"kind": "Deployment", "name": "llm-server", "namespace": "ml"}]
    assert first["properties"]["fix"] == TRICKY_FIX
    assert first["properties"]["savingsUsdPerMonth"] == "1250"
    assert all(isinstance(v, str) for d in (ml, research, cluster) for r in d["results"]
               for v in r["properties"].values())
    budget = research["results"][0]
    assert (budget["severity"], budget["properties"]["severity"]) == ("high", "critical")
    assert research["results"][1]["properties"]["accepted"] == "true"
    idle = cluster["results"][0]
    assert (idle["severity"], idle["properties"]["severity"]) == ("low", "info")
    assert idle["resources"] == [{"kind": "aws_instance", "name": "gpu_box"}]  # an AWS account is no namespace
    assert idle["properties"]["namespace"] == "123456789012"
