"""`costwarden check` end to end: examples, formats, stdin, baselines and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import yaml

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


# --- odd but legal input: encodings, pipes, folders of other YAML, unwritable outputs ----------

GPU_PLAN = {
    "format_version": "1.2",
    "resource_changes": [{
        "address": "aws_instance.trainer", "mode": "managed", "type": "aws_instance", "name": "trainer",
        "change": {"actions": ["create"], "after": {"instance_type": "p5.48xlarge", "tags_all": {}},
                   "after_unknown": {}},
    }],
}


def test_non_utf8_stdin_is_an_input_error_not_a_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "costwarden.cli", "check", "-", "--format", "json"],
        capture_output=True, input=b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: caf\xe9\n", cwd=ROOT, timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "LC_ALL": "C.UTF-8"},
    )
    assert b"Traceback" not in out.stderr, out.stderr.decode()
    assert out.returncode == 2
    [error] = json.loads(out.stdout)["errors"]
    assert error["file"] == "<stdin>" and "UTF-8" in error["message"]


def test_a_plan_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # PowerShell 5's `terraform show -json plan | Out-File -Encoding utf8 plan.json` writes a BOM
    plan = tmp_path / "plan.json"
    plan.write_bytes(b"\xef\xbb\xbf" + json.dumps(GPU_PLAN).encode())
    for args, stdin in (((str(plan),), None), (("-",), plan.read_text(encoding="utf-8"))):
        out = check(*args, "--format", "json", stdin=stdin)
        report = json.loads(out.stdout)
        assert report["errors"] == [] and out.returncode == 1, out.stdout
        assert {r["subject"]["name"] for r in report["results"]} == {"aws_instance.trainer"}


def test_a_named_pipe_argument_is_read(tmp_path: Path) -> None:
    # `costwarden check <(terraform show -json plan.out)`: the argument is a pipe, not a regular file
    text = (ROOT / "examples" / "kubernetes" / "training-jobs.yaml").read_text()
    out = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m costwarden.cli check --format json <(cat)'],
        capture_output=True, text=True, input=text, cwd=ROOT, timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true"},
    )
    report = json.loads(out.stdout)
    assert report["summary"]["files"] == 1 and report["summary"]["subjects"] > 0
    assert out.returncode == 1


def test_a_fifo_in_a_walked_folder_is_not_opened(tmp_path: Path) -> None:
    import os

    from costwarden.enforcers.ci import iter_inputs

    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it would block until a writer comes: forever
    assert list(iter_inputs([str(tmp_path)])) == [str(tmp_path / "pod.yaml")]


def test_yaml_with_application_tags_is_skipped_when_walking(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: x\nmarkdown_extensions:\n  - pymdownx.emoji:\n"
        "      emoji_index: !!python/name:material.extensions.emoji.twemoji\n")
    (tmp_path / "stack.yaml").write_text(
        "Resources:\n  B:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: !Sub '${AWS::StackName}-b'\n")
    shutil.copy(ROOT / "policies" / "infrastructure" / "spot-only-batch" / "samples" / "allowed-spot-pinned-job.yaml",
                tmp_path / "job.yaml")
    out = check(str(tmp_path), "--format", "json")
    report = json.loads(out.stdout)
    assert report["errors"] == [], report["errors"]
    assert sorted(report["skipped_files"]) == [str(tmp_path / "mkdocs.yml"), str(tmp_path / "stack.yaml")]
    assert out.returncode == 0
    named = check(str(tmp_path / "stack.yaml"), "--format", "json")  # named explicitly: still an error
    assert named.returncode == 2
    [error] = json.loads(named.stdout)["errors"]
    assert error["line"] == 5 and "!Sub" in error["message"]


def test_unwritable_outputs_are_usage_errors(tmp_path: Path) -> None:
    sample = str(ROOT / "policies" / "infrastructure" / "spot-only-batch" / "samples" / "allowed-spot-pinned-job.yaml")
    missing = tmp_path / "no-such-folder"
    for args in (("--output", f"sarif={missing / 'out.sarif'}"), ("--write-baseline", str(missing / "b.json"))):
        out = check(sample, *args)
        assert "Traceback" not in out.stderr, out.stderr
        assert out.returncode == 2 and str(missing) in out.stderr


def test_an_unreadable_file_error_names_the_file_once(tmp_path: Path) -> None:
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    out = check(str(tmp_path), "--format", "json")
    [error] = json.loads(out.stdout)["errors"]
    assert error["file"] == str(tmp_path / "gone.yaml")
    assert not error["message"].startswith(str(tmp_path)), error["message"]  # no "file:" prefix in the message
    assert out.returncode == 2


def test_a_baseline_matches_however_the_folder_is_named() -> None:
    # written on a laptop as ./examples/kubernetes, checked in CI as examples/kubernetes or an absolute path
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        baseline = str(Path(tmp) / "baseline.json")
        assert check("./examples/kubernetes", "--write-baseline", baseline).returncode == 1
        for name in ("examples/kubernetes", "examples/kubernetes/", str(ROOT / "examples" / "kubernetes")):
            out = check(name, "--baseline", baseline)
            assert out.returncode == 0, (name, out.stdout)


def test_kubectl_json_list_items_are_each_judged(tmp_path: Path) -> None:
    # `kubectl get jobs -A -o json > jobs.json`: a List whose items are the objects
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ml"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    items = [{**pod, "metadata": {**pod["metadata"], "name": name}} for name in ("a", "b")]
    listed = tmp_path / "pods.json"
    listed.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}, indent=2))
    out = check(str(listed), "--format", "json")
    report = json.loads(out.stdout)
    tags = {(r["subject"]["kind"], r["subject"]["name"], r["source"]["pointer"])
            for r in report["results"] if r["policy"] == "require-cost-tags"}
    assert tags == {("Pod", "a", "/items/0"), ("Pod", "b", "/items/1")}
    assert report["summary"]["subjects"] == 2 and out.returncode == 1
    none = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": []}
    for name, text in (("none.json", json.dumps(none)), ("none.yaml", yaml.safe_dump(none))):
        (tmp_path / name).write_text(text)  # `kubectl get jobs -o json|yaml` where there are none
        out = check(str(tmp_path / name), "--format", "json")
        assert json.loads(out.stdout)["errors"] == [] and out.returncode == 0, name


def test_json_that_is_no_input_is_skipped_when_walking_like_yaml(tmp_path: Path) -> None:
    (tmp_path / "words.json").write_text('["kubectl", "vllm"]\n')  # a spell-checker word list
    (tmp_path / "words.yaml").write_text("- kubectl\n- vllm\n")
    out = check(str(tmp_path), "--format", "json")
    report = json.loads(out.stdout)
    assert report["errors"] == [] and out.returncode == 0, report["errors"]
    assert sorted(report["skipped_files"]) == [str(tmp_path / "words.json"), str(tmp_path / "words.yaml")]
    named = check(str(tmp_path / "words.json"))  # named explicitly: an error
    assert named.returncode == 2 and "expected a JSON object" in named.stdout
    both = check(str(tmp_path), f"{tmp_path}/./words.json")  # named as well as walked: still named
    assert both.returncode == 2 and "expected a JSON object" in both.stdout


def test_a_file_named_twice_is_judged_once() -> None:
    once = json.loads(check("examples/kubernetes", "--format", "json").stdout)
    twice = json.loads(check("examples/kubernetes", "./examples/kubernetes/training-jobs.yaml", "--format",
                             "json").stdout)
    assert twice["summary"] == once["summary"]
    assert len(twice["results"]) == len(once["results"])


def test_a_utf16_plan_from_windows_powershell_is_read(tmp_path: Path) -> None:
    # Windows PowerShell 5: `terraform show -json tfplan > plan.json` writes UTF-16 with a BOM
    plan = tmp_path / "plan.json"
    plan.write_bytes(b"\xff\xfe" + json.dumps(GPU_PLAN, indent=2).encode("utf-16-le"))
    out = check(str(plan), "--format", "json")
    report = json.loads(out.stdout)
    assert report["errors"] == [] and out.returncode == 1, out.stdout
    assert {(r["subject"]["name"], r["source"]["line"]) for r in report["results"]} == {("aws_instance.trainer", 5)}


def test_a_binary_file_is_skipped_when_walking_and_an_error_when_named(tmp_path: Path) -> None:
    secret = tmp_path / "secrets.yaml"
    secret.write_bytes(b"\x00GITCRYPT\x00\x9f\xa3\x01\xfe\x00")  # git-crypt, checked out without the key
    out = check(str(tmp_path), "--format", "json")
    report = json.loads(out.stdout)
    assert report["errors"] == [] and report["skipped_files"] == [str(secret)] and out.returncode == 0
    named = check(str(secret), "--format", "json")
    assert named.returncode == 2 and json.loads(named.stdout)["errors"][0]["message"] == "a binary file, not text"
