"""Walking a policy folder: only the library's own test data is skipped, and what is skipped is said.

A ``tests.yaml`` of test cases and the ``samples/`` folder beside it are test data; a folder a user
happens to name ``samples/`` and a ``tests.yaml`` that holds policies are policies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from costwarden.engine.loader import load_paths
from costwarden.testing import find_test_files, run_tests

ROOT = Path(__file__).resolve().parents[3]

POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata:
  name: {name}
spec:
  subject: llm_call
  rules:
  - name: cap
    maxOutputTokens: {{limit: 100}}
"""

TESTS = """\
policy: cap-small
cases:
  - name: a small call passes
    input: samples/allowed-small.json
    results: [{rule: cap, result: pass}]
  - name: a large call fails
    input: samples/denied-large.json
    results: [{rule: cap, result: fail}]
"""


def call(max_tokens: int) -> str:
    return (
        '{"type": "llm_call", "provider": "anthropic", "model": "claude-haiku-4-5", '
        f'"request": {{"max_tokens": {max_tokens}}}}}'
    )


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def library_folder(root: Path) -> Path:
    """A policy folder laid out like the built-in library: policy, tests.yaml, samples/."""
    folder = root / "cap-small"
    write(
        folder,
        {
            "cap-small.yaml": POLICY.format(name="cap-small"),
            "tests.yaml": TESTS,
            "samples/allowed-small.json": call(10),
            "samples/denied-large.json": call(1000),
            # a YAML sample: would be an error if it were read as a policy file
            "samples/denied-manifest.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n",
        },
    )
    return folder


def names(result: object) -> list[str]:
    return sorted(d.model.metadata.name for d in result.documents)  # type: ignore[attr-defined]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_a_user_folder_named_samples_is_loaded(tmp_path: Path) -> None:
    write(tmp_path, {"team/samples/sample-budget.yaml": POLICY.format(name="sample-budget")})
    result = load_paths(tmp_path)
    assert result.diagnostics == []
    assert names(result) == ["sample-budget"]
    assert result.skipped == []


def test_a_tests_yaml_holding_policies_is_skipped_but_flagged(tmp_path: Path) -> None:
    """``tests.yaml`` is the name reserved for test cases; policies written in one are not loaded,
    and the skip says so instead of passing over them in silence."""
    write(tmp_path, {"tests.yaml": POLICY.format(name="canary")})
    result = load_paths(tmp_path)
    assert result.documents == [] and result.diagnostics == []
    [skip] = result.skipped
    assert skip.holds_policies
    assert skip.path == str(tmp_path / "tests.yaml")
    assert "rename it to load them" in skip.reason


def test_library_test_data_is_skipped_and_listed(tmp_path: Path) -> None:
    folder = library_folder(tmp_path)
    result = load_paths(tmp_path)
    assert result.diagnostics == []
    assert names(result) == ["cap-small"]
    assert [(Path(s.path).relative_to(tmp_path).as_posix(), s.reason) for s in result.skipped] == [
        ("cap-small/samples", f"sample inputs for {folder / 'tests.yaml'}"),
        ("cap-small/tests.yaml", "policy test cases"),
    ]


def test_test_data_is_skipped_only_beside_its_tests_yaml(tmp_path: Path) -> None:
    library_folder(tmp_path)
    write(tmp_path, {"shared/samples/sample-cap.yaml": POLICY.format(name="sample-cap")})
    result = load_paths(tmp_path)
    assert names(result) == ["cap-small", "sample-cap"]
    assert not any(s.holds_policies for s in result.skipped)


def test_a_named_samples_folder_is_loaded_even_in_the_library_layout(tmp_path: Path) -> None:
    folder = library_folder(tmp_path)
    result = load_paths(folder / "samples")
    codes = [d.code for d in result.diagnostics]
    assert codes == ["unknown-api-version", "unknown-kind"]  # the Job manifest, read as asked


def test_costwarden_test_still_runs_library_cases(tmp_path: Path) -> None:
    folder = library_folder(tmp_path)
    report = run_tests(tmp_path)
    assert report.errors == []
    assert [(c.case, c.passed) for c in report.cases] == [("a small call passes", True), ("a large call fails", True)]
    assert list(find_test_files(tmp_path)) == [folder / "tests.yaml"]


def test_validate_names_what_it_skipped_and_how_to_load_it(tmp_path: Path) -> None:
    library_folder(tmp_path)
    out = cli("validate", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok: 1 policies" in out.stdout
    assert "skipped 1 tests.yaml and 1 samples/ folder" in out.stderr
    assert "costwarden test" in out.stderr
    verbose = cli("validate", "--verbose", str(tmp_path), cwd=tmp_path)
    assert f"{tmp_path / 'cap-small' / 'samples'}{os.sep}: sample inputs for" in verbose.stderr
    assert f"{tmp_path / 'cap-small' / 'tests.yaml'}: policy test cases" in verbose.stderr


def test_validate_warns_about_policies_written_in_a_tests_yaml(tmp_path: Path) -> None:
    write(tmp_path, {"team/tests.yaml": POLICY.format(name="canary")})
    out = cli("validate", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0
    assert f"warning: {tmp_path / 'team' / 'tests.yaml'} was not loaded: holds policy documents" in out.stderr


def test_validate_of_a_user_samples_folder_reports_its_policies(tmp_path: Path) -> None:
    write(tmp_path, {"samples/sample-budget.yaml": POLICY.format(name="sample-budget")})
    out = cli("validate", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok: 1 policies" in out.stdout
    assert "skipped" not in out.stderr


def test_validate_warns_when_a_folder_holds_no_policy(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "policies go here\n"})
    out = cli("validate", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0
    assert f"warning: no policy documents found in {tmp_path}" in out.stderr


# ---- the tests.yaml beside a policy: bad cases are positioned, never a traceback ----------------


def bad_tests(tmp_path: Path, text: str) -> list[str]:
    folder = library_folder(tmp_path)
    (folder / "tests.yaml").write_text(text)
    report = run_tests(folder)
    assert report.cases == [] and not report.passed
    return report.errors


def test_an_invalid_message_regex_is_a_positioned_error(tmp_path: Path) -> None:
    bad = TESTS.replace("{rule: cap, result: pass}", '{rule: cap, result: pass, message: "(("}')
    [error] = bad_tests(tmp_path, bad)
    file = tmp_path / "cap-small" / "tests.yaml"
    assert error.startswith(f"{file}:5:50: error[invalid-regex]: 'message' is not a valid regular expression")
    assert "   5 |     results: [{rule: cap, result: pass, message: \"((\"}]" in error
    assert "hint:" in error


def test_an_invalid_fix_regex_is_a_positioned_error(tmp_path: Path) -> None:
    [error] = bad_tests(tmp_path, TESTS.replace("{rule: cap, result: fail}", '{rule: cap, result: fail, fix: "a["}'))
    assert ":8:46: error[invalid-regex]: 'fix' is not a valid regular expression" in error


def test_a_misspelt_case_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    [error] = bad_tests(tmp_path, TESTS.replace("    results: [{rule: cap, result: pass}]", "    reslts: []"))
    assert ":5:5: error[unknown-field]: 'reslts' is not a field of a case" in error
    assert "did you mean 'results'?" in error


def test_an_unknown_result_lists_the_valid_ones(tmp_path: Path) -> None:
    [error] = bad_tests(tmp_path, TESTS.replace("result: pass}", "result: pas}"))
    assert ":5:35: error[invalid-value]: 'pas' is not a valid value for 'result'" in error
    assert "did you mean 'pass'?" in error


def test_yaml_syntax_in_tests_yaml_is_positioned(tmp_path: Path) -> None:
    [error] = bad_tests(tmp_path, "policy: cap-small\ncases:\n  - name: a\n    input: [\n")
    assert f"{tmp_path / 'cap-small' / 'tests.yaml'}:5:1: error[yaml-syntax]" in error


def test_an_unknown_policy_is_positioned_with_a_did_you_mean(tmp_path: Path) -> None:
    [error] = bad_tests(tmp_path, TESTS.replace("policy: cap-small", "policy: cap-smal"))
    assert ":1:9: error[unknown-policy]: unknown policy 'cap-smal'" in error
    assert "did you mean 'cap-small'?" in error


def test_every_problem_in_a_policy_folder_is_shown_with_its_source(tmp_path: Path) -> None:
    folder = library_folder(tmp_path)
    (folder / "cap-small.yaml").write_text(POLICY.format(name="cap-small").replace("limit:", "limt:"))
    [error] = run_tests(folder).errors
    assert f"{folder / 'cap-small.yaml'}:9:23: error[unknown-field]: 'limt'" in error
    assert "did you mean 'limit'?" in error


def test_the_test_command_prints_errors_verbatim(tmp_path: Path) -> None:
    library_folder(tmp_path)
    (tmp_path / "cap-small" / "tests.yaml").write_text(TESTS.replace("result: pass}", "result: pas}"))
    out = cli("test", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    assert "   5 |     results: [{rule: cap, result: pas}]" in out.stdout
