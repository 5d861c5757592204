"""`costwarden check` end to end: examples, formats, stdin, baselines and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif-2.1.0.json"


def check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", "check", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true"},
    )


def test_examples_show_real_violations_with_fixes_and_savings() -> None:
    out = check("examples/", "--format", "json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["schema"] == "costwarden.dev/check-report/v1"
    assert report["summary"]["blocking"] > 0 and report["summary"]["input_errors"] == 0
    spot = [r for r in report["results"] if r["policy"] == "spot-only-batch" and r["result"] == "fail"]
    job = next(r for r in spot if r["subject"]["name"] == "distill-summarizer")
    assert job["source"] == {"file": "examples/kubernetes/training-jobs.yaml", "line": 23, "pointer": ""}
    assert job["fix"]["patch"] and job["savings_usd_month"] > 0
    files = {r["source"]["file"] for r in report["results"]}
    assert {"examples/terraform/gpu-plan.json", "examples/llm-calls/recorded-calls.jsonl"} <= files
    assert "examples/ci/github-actions.yml" not in files  # not a manifest: skipped when walking


def test_several_outputs_in_one_run(tmp_path: Path) -> None:
    sarif, junit = tmp_path / "out.sarif", tmp_path / "out.xml"
    out = check("examples/kubernetes", "--format", "github", "--output", f"sarif={sarif}", "--output", f"junit={junit}")
    assert out.returncode == 1
    assert any(
        line.startswith("::error file=examples/kubernetes/training-jobs.yaml,line=23,")
        for line in out.stdout.splitlines()
    )
    document = json.loads(sarif.read_text())
    jsonschema.Draft7Validator(json.loads(SARIF_SCHEMA.read_text())).validate(document)
    assert document["runs"][0]["results"]
    suites = ET.parse(junit).getroot()
    assert int(suites.get("failures", "0")) > 0


def test_policyreport_output() -> None:
    out = check("examples/kubernetes", "--format", "policyreport")
    assert "apiVersion: wgpolicyk8s.io/v1alpha2" in out.stdout and "kind: PolicyReport" in out.stdout


def test_stdin_like_helm_template() -> None:
    text = (ROOT / "examples" / "kubernetes" / "training-jobs.yaml").read_text()
    out = check("-", "--format", "json", stdin=text)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert {r["source"]["file"] for r in report["results"]} == {"<stdin>"}


def test_baseline_accepts_recorded_violations_and_fails_on_new_ones(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "kubernetes", repo)
    baseline = tmp_path / "baseline.json"
    first = check(str(repo), "--write-baseline", str(baseline))
    assert first.returncode == 1 and baseline.is_file()
    assert check(str(repo), "--baseline", str(baseline)).returncode == 0
    job = (repo / "training-jobs.yaml").read_text()
    (repo / "new-job.yaml").write_text(job.replace("distill-summarizer", "another-job"))
    again = check(str(repo), "--baseline", str(baseline), "--format", "json")
    assert again.returncode == 1
    blocking = [r for r in json.loads(again.stdout)["results"] if r["blocking"]]
    assert blocking and {r["subject"]["name"] for r in blocking} == {"another-job"}


def test_bad_input_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n")
    out = check(str(bad))
    assert out.returncode == 2
    assert str(bad) in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_bad_policy_exits_2(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: P}\n")
    out = check("examples/kubernetes", "--policies", str(tmp_path))
    assert out.returncode == 2 and "p.yaml:3:" in out.stderr


def test_clean_input_exits_0() -> None:
    sample = ROOT / "policies" / "infrastructure" / "spot-only-batch" / "samples" / "allowed-spot-pinned-job.yaml"
    out = check(str(sample))
    assert out.returncode == 0, out.stdout
