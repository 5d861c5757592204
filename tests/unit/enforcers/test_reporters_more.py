"""Report formats of ``costwarden check`` where CI systems and terminals are strict: checks run in
a subdirectory of the repository, very large reports, hostile text in the inputs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from costwarden.enforcers.ci import CheckReport, Finding
from costwarden.enforcers.reporters import render, sarif
from costwarden.engine.decision import Decision, Fix, RuleResult, SubjectRef

DATA = Path(__file__).resolve().parents[2] / "data"


def _report(file: str, message: str = "GPU job does not require spot", *, line: int | None = 3) -> CheckReport:
    subject = SubjectRef("resource", "kubernetes", "Job", "train", "ml", file, line, "/0")
    decision = Decision("ci", subject, (RuleResult("gpu-spot", "require-spot", "fail", "deny", "high", message,
                                                   fix=Fix("require spot capacity")),))
    return CheckReport("ci", [decision], [Finding(decision, decision.results[0])], files=[file], policies=1)


# --- paths as GitHub resolves them ------------------------------------------------------------------


@pytest.fixture
def in_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workflow step with ``working-directory: infra`` in a checkout at ``$GITHUB_WORKSPACE``."""
    (tmp_path / "infra" / "k8s").mkdir(parents=True)
    (tmp_path / "infra" / "k8s" / "job.yaml").write_text("kind: Job\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    monkeypatch.chdir(tmp_path / "infra")
    return tmp_path


def test_github_annotations_name_files_from_the_repository_root(in_subdirectory: Path) -> None:
    """The runner reads a relative ``file=`` against the repository root: before, a check run in
    ``infra/`` annotated ``k8s/job.yaml``, a file that does not exist, and the PR showed nothing."""
    line = render("github", _report("k8s/job.yaml"))
    assert line.startswith("::error file=infra/k8s/job.yaml,line=3,")
    absolute = render("github", _report(str(in_subdirectory / "infra" / "k8s" / "job.yaml")))
    assert absolute.startswith("::error file=infra/k8s/job.yaml,line=3,")


def test_github_paths_outside_the_workspace_stay_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert render("github", _report("k8s/job.yaml")).startswith("::error file=k8s/job.yaml,line=3,")


def test_sarif_uris_are_relative_to_the_repository_root(in_subdirectory: Path) -> None:
    """upload-sarif resolves ``%SRCROOT%``-relative URIs against the checkout: before, results of a
    check run in ``infra/`` pointed at ``k8s/job.yaml`` and code scanning could not place them."""
    log = json.loads(render("sarif", _report("k8s/job.yaml")))
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "infra/k8s/job.yaml", "uriBaseId": "%SRCROOT%"}


# --- SARIF size limits ------------------------------------------------------------------------------


def _sarif_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((DATA / "sarif-2.1.0.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def test_sarif_keeps_a_run_within_githubs_result_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """GitHub code scanning rejects the whole upload when a run has more than 25,000 results; a
    large monorepo's report (baseline-accepted findings included) produced exactly that."""
    monkeypatch.setattr(sarif, "MAX_RESULTS", 5)
    decisions, findings = [], []
    for i, (effect, accepted) in enumerate([("audit", False), ("deny", True), ("warn", False), ("deny", False),
                                            ("audit", False), ("deny", False), ("deny", True), ("warn", False)]):
        subject = SubjectRef("resource", "kubernetes", "Job", f"job-{i}", "ml", "k8s/jobs.yaml", i + 1)
        result = RuleResult("gpu-spot", "require-spot", "fail", effect, "high", f"finding {i}")
        decisions.append(Decision("ci", subject, (result,)))
        findings.append(Finding(decisions[-1], result, accepted=accepted))
    report = CheckReport("ci", decisions, findings, files=["k8s/jobs.yaml"], policies=1)
    log = json.loads(render("sarif", report))
    (run,) = log["runs"]
    # not accepted first (errors, warnings, then notes), accepted last; kept in report order
    assert [r["message"]["text"].rsplit(" ", 1)[-1] for r in run["results"]] == ["0", "2", "3", "5", "7"]
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "warning" and note["message"]["text"].startswith("3 more results left out")
    assert run["invocations"][0]["executionSuccessful"] is True
    assert [e.message for e in _sarif_validator().iter_errors(log)] == []


def test_sarif_default_limit_is_githubs() -> None:
    assert sarif.MAX_RESULTS == 25_000


# --- text -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("color", [False, True])
def test_text_never_sends_control_characters_from_inputs_to_the_terminal(color: bool) -> None:
    """A tag value or file name from a pull request reached the terminal as it was: an ESC
    sequence in it could erase or hide report lines in a CI log (``\\x1b[2K``, ``\\x1b[8m``)."""
    out = render("text", _report("k8s/evil\x1b[8m.yaml", "tag 'team' is 'a\x1b[2K\rb\x9b0m'"), color=color)
    for raw in ("\x1b[2K", "\x1b[8m", "\r", "\x9b"):
        assert raw not in out
    assert "tag 'team' is 'a\\x1b[2K" in out and "b\\x9b0m'" in out  # a CR in a message breaks its line
    assert "k8s/evil\\x1b[8m.yaml" in out


def test_text_keeps_a_long_word_whole() -> None:
    """A URL or path longer than a line was cut in two, and could not be copied or clicked."""
    url = "https://example.com/" + "runbooks/" * 14 + "spot.html"
    out = render("text", _report("k8s/job.yaml", f"see {url} for how to move this job to spot capacity"))
    assert any(line.strip() == url or url in line for line in out.splitlines())
