"""The `costwarden` command end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "policies"


def run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true"},
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("costwarden ")


def test_validate_builtin_library() -> None:
    out = run("validate")
    assert out.returncode == 0, out.stderr
    assert "ok: 10 policies" in out.stdout


def test_validate_misspelt_key_is_positioned_with_did_you_mean(tmp_path: Path) -> None:
    source = (LIBRARY / "llm" / "user-daily-budget" / "user-daily-budget.yaml").read_text()
    bad = tmp_path / "user-daily-budget.yaml"
    bad.write_text(source.replace("limitUsd: 25", "limtUsd: 25"))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "limtUsd" in text)
    column = bad.read_text().splitlines()[line - 1].index("limtUsd") + 1
    out = run("validate", str(bad))
    assert out.returncode == 2
    assert f"{bad}:{line}:{column}: error[unknown-field]: 'limtUsd'" in out.stderr
    assert "did you mean 'limitUsd'?" in out.stderr
    assert "^^^^^^^" in out.stderr
    assert "no policy was loaded" in out.stderr


def test_validate_reports_every_problem_in_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: a}\n"
        "spec:\n  subject: resource\n  rules:\n    - name: r\n      requireTag: {keys: [team]}\n"
    )
    (tmp_path / "b.yaml").write_text("apiVersion: costwarden.dev/v1\nkind: Polcy\nmetadata: {name: b}\nspec: {}\n")
    out = run("validate", str(tmp_path))
    assert out.returncode == 2
    assert "error[unknown-rule-kind]" in out.stderr and "did you mean 'requireTags'?" in out.stderr
    assert "error[unknown-kind]" in out.stderr and "did you mean 'Policy'?" in out.stderr


def test_library_tests_pass() -> None:
    out = run("test", "policies/")
    assert out.returncode == 0, out.stdout
    assert ", 0 failed" in out.stdout


def test_test_command_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    folder = tmp_path / "cap-output-tokens"
    source = LIBRARY / "llm" / "cap-output-tokens"
    (folder / "samples").mkdir(parents=True)
    (folder / "cap-output-tokens.yaml").write_text((source / "cap-output-tokens.yaml").read_text())
    for sample in (source / "samples").iterdir():
        (folder / "samples" / sample.name).write_text(sample.read_text())
    spec = yaml.safe_load((source / "tests.yaml").read_text())
    spec["cases"][0]["results"][0]["result"] = "fail"
    (folder / "tests.yaml").write_text(yaml.safe_dump(spec))
    out = run("test", str(folder))
    assert out.returncode == 1
    assert "FAIL" in out.stdout and "expected fail" in out.stdout


def test_test_command_reports_an_unreadable_test_file(tmp_path: Path) -> None:
    folder = tmp_path / "cap-output-tokens"
    folder.mkdir()
    source = LIBRARY / "llm" / "cap-output-tokens"
    (folder / "cap-output-tokens.yaml").write_text((source / "cap-output-tokens.yaml").read_text())
    (folder / "tests.yaml").write_bytes(b"policy: cap-output-tokens\ncases: \xff\xfe\x00\n")
    out = run("test", str(folder))
    assert "Traceback" not in out.stderr + out.stdout
    assert out.returncode != 0 and "not UTF-8 text (byte 0xff" in out.stdout + out.stderr


def test_explain() -> None:
    out = run("explain", "spot-only-batch")
    assert out.returncode == 0
    assert "admission: warn" in out.stdout and "spotOnly" in out.stdout
    missing = run("explain", "spot-only-batc")
    assert missing.returncode == 2 and "did you mean 'spot-only-batch'?" in missing.stderr


def test_tiers_show_the_layered_catalog_and_where_models_land(tmp_path: Path) -> None:
    """A catalog document that adds a self-hosted model to the built-in ``simple`` tier: the tier
    keeps its place and its models, and ``costwarden tiers`` shows that and where models land."""
    (tmp_path / "catalog.yaml").write_text(
        "apiVersion: costwarden.dev/v1\nkind: ModelCatalog\nmetadata: {name: in-house}\nspec:\n"
        "  tiers:\n    - {name: simple, models: ['meta-llama/*-8B*'], downgradeTo: {vllm: meta-llama/Llama-3.1-8B}}\n"
    )
    models = ["meta-llama/Llama-3.1-8B-Instruct", "claude-haiku-4-5", "gpt-5-pro", "ft:gpt-4o-mini:acme::x"]
    out = run("tiers", *models, "-p", str(tmp_path), "--format", "json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert [t["name"] for t in shown["tiers"]] == ["simple", "standard", "complex"]
    simple = shown["tiers"][0]
    assert simple["models"][0] == "claude-haiku-*" and simple["models"][-1] == "meta-llama/*-8B*"
    assert simple["downgradeTo"]["vllm"] == "meta-llama/Llama-3.1-8B"
    assert simple["downgradeTo"]["anthropic"] == "claude-haiku-4-5"
    assert shown["models"] == {models[0]: "simple", models[1]: "simple", models[2]: "complex", models[3]: None}
    text = run("tiers", "ft:gpt-4o-mini:acme::x")
    assert text.returncode == 0 and text.stdout.splitlines()[0].startswith("simple  claude-haiku-*")
    assert text.stdout.rstrip().endswith("ft:gpt-4o-mini:acme::x: in no tier")


def test_vllm_resolve_reads_a_command_line_after_the_double_dash() -> None:
    out = run("vllm", "resolve", "--", "vllm", "serve", "meta-llama/Llama-3.1-8B", "--tensor-parallel-size", "2")
    assert out.returncode == 0, out.stderr
    [result] = json.loads(out.stdout)["results"]
    assert (result["ok"], result["entrypoint"], result["args"]["tensor_parallel_size"]) == (True, "vllm serve", 2)
    assert "tensor_parallel_size" in result["explicit"]
    bad = run("vllm", "resolve", "--", "vllm", "serve", "m", "--tensor-parallel-size", "two")
    assert bad.returncode == 1 and json.loads(bad.stdout)["results"][0]["diagnostics"]
    nothing = run("vllm", "resolve")
    assert nothing.returncode == 2 and "give files, --config FILE, or --" in nothing.stderr


def test_schema_validates_the_library() -> None:
    out = run("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    documents = [
        d
        for p in LIBRARY.rglob("*.yaml")
        if p.name != "tests.yaml" and "samples" not in p.parts
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    assert len(documents) >= 10
    for doc in documents:
        validator.validate(doc)
    bad = dict(documents[0], spec={"subject": "resource", "rules": [{"name": "x", "requireTag": {}}]})
    assert list(validator.iter_errors(bad))


def test_eval_json_and_exit_codes() -> None:
    sample = LIBRARY / "llm" / "cap-output-tokens" / "samples" / "denied-huge-max-tokens-classify.json"
    out = run("eval", "--subject", str(sample), "--format", "json")
    assert out.returncode == 1
    decision = json.loads(out.stdout)
    assert decision["verdict"] == "deny"
    cap = next(r for r in decision["results"] if r["policy"] == "cap-output-tokens")
    assert cap["fix"]["patch"] == [{"op": "replace", "path": "/max_tokens", "value": 256}]
    ok = run(
        "eval",
        "--subject",
        str(LIBRARY / "llm" / "cap-output-tokens" / "samples" / "allowed-small-classify.json"),
        "--surface",
        "runtime",
    )
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--subject", "nope.json"],
        ["eval", "--subject", "README.md"],
        ["eval", "--subject", "policies/README.md", "--surface", "moon"],
    ],
)
def test_bad_input_exits_2_with_a_message(args: list[str]) -> None:
    out = run(*args)
    assert out.returncode == 2
    assert "error" in out.stderr and "Traceback" not in out.stderr


def test_python_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "evaluate_call.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"model": "claude-haiku-4-5"' in out.stdout and "-> allow" in out.stdout


def test_guard_calls_example_runs_offline() -> None:
    """The call-guard example, as a user runs it first: real SDKs, an in-process stand-in API."""
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__",  # no deprecated models in the example
         str(ROOT / "examples" / "python" / "guard_calls.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "served by claude-haiku-4-5" in lines[0]  # rewritten before it left, despite the trial budget
    assert lines[1].startswith("2. streamed 6 chunks")  # the usage chunk the guard asked for is hidden
    assert lines[2].startswith("3. refused, 0 requests sent") and "would exceed the $0.02 day budget" in lines[2]
    trial = next(line for line in lines if "trial-user-budget/daily-cap:user=u-123" in line)
    spent = float(trial.split("$")[1].split(" ")[0])
    assert 0 < spent < 0.001  # two small calls settled from their usage, nothing held
    events = [line for line in lines if line.startswith("   anthropic/") or line.startswith("   openai/")]
    assert [e.split(":")[0].strip() for e in events] == [
        "anthropic/claude-haiku-4-5 ok", "openai/gpt-4.1-mini ok", "anthropic/claude-sonnet-4-6 denied"]
    assert "(stream usage)" in events[1] and "add stream_options.include_usage" in events[1]


def test_tiers_refuses_an_unknown_format() -> None:
    out = run("tiers", "--format", "yaml")
    assert out.returncode == 2 and "unknown format 'yaml'" in out.stderr and out.stdout == ""
