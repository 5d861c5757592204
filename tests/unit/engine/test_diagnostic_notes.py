"""A ``note`` is the mildest diagnostic level: news the author should hear (an exemption ends
soon) that is nothing wrong yet. It is shown as a note wherever diagnostics are printed, counted
apart from warnings and errors, and never fails a load, a ``validate`` run or a policy reload."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from policy_support import REQUIRE_TEAM, exemption_of_p

from costwarden.engine.compile import compile_documents
from costwarden.engine.diagnostics import Diagnostic, tally
from costwarden.engine.exemptions import expiry_warnings
from costwarden.engine.loader import load_text
from costwarden.errors import PolicyError
from costwarden.webhook.reload import PolicyReloader

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def note(code: str = "exemption-expiring", line: int = 3) -> Diagnostic:
    return Diagnostic("p.yaml", line, 12, code, "exemption 'ex' expires soon", level="note")


def error(line: int = 1) -> Diagnostic:
    return Diagnostic("p.yaml", line, 1, "unknown-field", "'x' is not a field")


# ---- the level itself ------------------------------------------------------------------------


def test_an_exemption_expiring_soon_is_a_note_and_an_expired_one_a_warning() -> None:
    result = load_text("---\n".join([REQUIRE_TEAM, exemption_of_p("2026-06-20", "soon"),
                                  exemption_of_p("2026-01-31", "gone")]))
    found = expiry_warnings(result.documents, NOW)
    assert [(d.code, d.level) for d in found] == [("exemption-expiring", "note"), ("exemption-expired", "warning")]
    assert found[0].headline().startswith("<string>:15:12: note[exemption-expiring]: exemption 'soon' expires")


def test_each_level_has_its_own_colour() -> None:
    warning = Diagnostic("f", 1, 1, "c", "m", level="warning")
    coloured = {d.level: d.render(color=True) for d in (error(), warning, note())}
    assert "\x1b[1;31merror\x1b[0m[" in coloured["error"]
    assert "\x1b[1;33mwarning\x1b[0m[" in coloured["warning"]
    assert "\x1b[1;36mnote\x1b[0m[" in coloured["note"]
    assert "\x1b[1;31m" not in coloured["note"] + coloured["warning"]  # red is for errors only


def test_tally_counts_each_level_most_severe_first() -> None:
    warning = Diagnostic("f", 1, 1, "c", "m", level="warning")
    assert tally([note(), error(), note(), warning, error(2)]) == "2 errors, 1 warning, 2 notes"
    assert tally([note()]) == "1 note"
    assert tally([]) == "no problems"


# ---- api: a note never fails a load ---------------------------------------------------------


def test_a_note_alone_does_not_stop_a_policy_set_from_compiling() -> None:
    loaded = load_text(REQUIRE_TEAM, "p.yaml")
    policies = compile_documents(loaded.documents, diagnostics=[note()])
    assert policies.names == ["p"]


def test_a_failed_load_keeps_its_notes_but_counts_errors_only() -> None:
    loaded = load_text(REQUIRE_TEAM, "p.yaml")
    with pytest.raises(PolicyError) as info:
        compile_documents(loaded.documents, diagnostics=[note(), error()])
    assert [d.level for d in info.value.diagnostics] == ["error", "note"]
    assert "note[exemption-expiring]" in info.value.render()


# ---- webhook reload: a note is not logged as an error nor counted as a problem --------------


def test_reload_logs_a_note_below_error_and_counts_only_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "p.yaml").write_text(REQUIRE_TEAM)
    seen = []

    def failing(directory: str):  # type: ignore[no-untyped-def]
        raise PolicyError([error(), note()])

    reloader = PolicyReloader(tmp_path, loader=failing, on_result=seen.append)
    with caplog.at_level(logging.INFO, logger="costwarden.webhook.reload"):
        assert reloader.poll() is False
    [result] = seen
    assert result.diagnostics == 1
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, text in logged if ": error[" in text] == [logging.ERROR]
    assert [level for level, text in logged if ": note[" in text] == [logging.INFO]
    assert any("failed with 1 problem" in r.getMessage() for r in caplog.records)


# ---- costwarden validate --------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_validate_shows_a_note_as_a_note_counts_it_apart_and_passes(tmp_path: Path) -> None:
    file = tmp_path / "ex.yaml"
    file.write_text("---\n".join([REQUIRE_TEAM, exemption_of_p("2026-06-20", "soon")]))
    out = cli("validate", "--now", "2026-06-15T12:00:00Z", str(file), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{file}:15:12: note[exemption-expiring]: exemption 'soon' expires" in out.stderr
    assert "warning" not in out.stderr + out.stdout
    assert out.stdout.strip() == "ok: 1 policies, 1 rules, 1 exemptions in 1 files; 1 note"


def test_validate_counts_warnings_and_notes_apart(tmp_path: Path) -> None:
    file = tmp_path / "ex.yaml"
    file.write_text("---\n".join([REQUIRE_TEAM, exemption_of_p("2026-06-20", "soon"),
                                  exemption_of_p("2026-01-31", "gone")]))
    out = cli("validate", "--now", "2026-06-15T12:00:00Z", str(file), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "note[exemption-expiring]" in out.stderr and "warning[exemption-expired]" in out.stderr
    assert out.stdout.strip().endswith("; 1 warning, 1 note")


def test_validate_counts_only_errors_when_it_fails(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(REQUIRE_TEAM.replace("keys:", "kyes:"))
    out = cli("validate", str(file), cwd=tmp_path)
    assert out.returncode == 2
    assert "1 error; no policy was loaded" in out.stderr


# ---- what the commands print is the author's text, never read as console markup ---------------


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "--now", "[/bold]"],
        ["explain", "[/x]"],
        ["eval", "--subject", "x.json", "--surface", "[/x]"],
        ["check", "x.yaml", "--format", "[/x]"],
    ],
)
def test_bad_input_with_brackets_is_an_error_message_not_a_traceback(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "p.yaml").write_text(REQUIRE_TEAM)
    policies = [] if args[0] == "validate" else ["-p", str(tmp_path / "p.yaml")]
    out = cli(*args, *policies, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "[/" in out.stderr  # shown as written


def test_explain_shows_a_title_and_description_as_written(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    titled = "metadata:\n  name: p\n  title: GPU jobs [/batch] need a [bold]team[/bold] tag\n"
    titled += "  description: see [link]\n"
    file.write_text(REQUIRE_TEAM.replace("metadata: {name: p}\n", titled))
    out = cli("explain", "p", "-p", str(file), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "p — GPU jobs [/batch] need a [bold]team[/bold] tag" in out.stdout
    assert "see [link]" in out.stdout


@pytest.mark.parametrize("name", ["web[/a]", "web[a]"])
def test_eval_shows_a_subject_name_as_written(tmp_path: Path, name: str) -> None:
    (tmp_path / "p.yaml").write_text(REQUIRE_TEAM)
    subject = tmp_path / "s.json"
    subject.write_text(f'{{"type": "resource", "provider": "aws", "kind": "x", "name": "{name}"}}')
    out = cli("eval", "--subject", str(subject), "-p", str(tmp_path / "p.yaml"), cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith(f"aws/x {name} {subject} → deny (ci)")
