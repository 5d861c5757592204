"""An exemption that has expired, or soon will, is a warning at ``validate`` time — at the
``expires`` value's file:line:col — and never an error: it loads, and (as before) it is inert."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policy_support import REQUIRE_TEAM, compile_text, exemption_of_p

from costwarden.engine.exemptions import expiry_warnings
from costwarden.engine.loader import load_text
from costwarden.engine.subjects import subject_from_dict

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def warnings_for(*expires: str, soon: timedelta = timedelta(days=14)) -> list[Any]:
    docs = [exemption_of_p(e, name=f"ex-{i}") for i, e in enumerate(expires)]
    result = load_text("---\n".join([REQUIRE_TEAM, *docs]), "exemptions.yaml")
    assert result.diagnostics == []
    return expiry_warnings(result.documents, NOW, soon=soon)


def test_an_expired_exemption_is_a_positioned_warning() -> None:
    [w] = warnings_for("2026-01-31")
    assert w.level == "warning"
    assert (w.file, w.line, w.column, w.code) == ("exemptions.yaml", 15, 12, "exemption-expired")
    assert "'ex-0' expired at the end of 2026-01-31 (UTC), 134 days ago" in w.message
    assert w.hint is not None and "later 'expires'" in w.hint
    assert w.render().startswith("exemptions.yaml:15:12: warning[exemption-expired]")


def test_a_time_that_has_passed_is_expired_even_the_same_day() -> None:
    [w] = warnings_for('"2026-06-15T09:00:00+02:00"')
    assert w.code == "exemption-expired"
    assert "2026-06-15 07:00 UTC" in w.message


def test_an_exemption_expiring_soon_is_a_note() -> None:
    [w] = warnings_for("2026-06-20")
    assert w.code == "exemption-expiring"
    assert "'ex-0' expires at the end of 2026-06-20 (UTC), in 5 days" in w.message
    [w] = warnings_for('"2026-06-15T15:30:00Z"')
    assert "in 3 hours" in w.message


def test_far_or_disabled_horizons_warn_about_nothing_unexpired() -> None:
    assert warnings_for("2026-12-31") == []
    assert warnings_for("2026-06-20", soon=timedelta(0)) == []
    assert [w.code for w in warnings_for("2026-06-20", "2020-01-01", soon=timedelta(0))] == ["exemption-expired"]


def test_every_exemption_gets_its_own_warning() -> None:
    found = warnings_for("2026-01-31", "2026-12-31", "2026-06-16")
    assert [(w.code, w.line) for w in found] == [("exemption-expired", 15), ("exemption-expiring", 33)]


def test_runtime_behaviour_is_unchanged_the_expired_exemption_is_inert() -> None:
    ps = compile_text(REQUIRE_TEAM, exemption_of_p("2026-01-31"))
    subject = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"})
    assert ps.evaluate(subject, now=NOW).verdict == "deny"
    assert ps.evaluate(subject, now=datetime(2026, 1, 31, 23, 0, tzinfo=UTC)).verdict == "allow"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_validate_warns_and_still_passes(tmp_path: Path) -> None:
    file = tmp_path / "ex.yaml"
    file.write_text(REQUIRE_TEAM + "---\n" + exemption_of_p("2026-01-31"))
    out = cli("validate", "--now", "2026-06-15T12:00:00Z", str(file), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{file}:15:12: warning[exemption-expired]: exemption 'ex' expired" in out.stderr
    assert "  expires: 2026-01-31" in out.stderr and "^^^^^^^^^^" in out.stderr
    assert "ok: 1 policies, 1 rules, 1 exemptions in 1 files; 1 warning" in out.stdout


def test_validate_expiring_within_sets_the_horizon(tmp_path: Path) -> None:
    file = tmp_path / "ex.yaml"
    file.write_text(REQUIRE_TEAM + "---\n" + exemption_of_p("2026-07-05"))
    near = cli("validate", "--now", "2026-06-15T12:00:00Z", str(file), cwd=tmp_path)
    assert "note[exemption-expiring]" not in near.stderr  # 20 days out; the default horizon is 14
    wide = cli("validate", "--now", "2026-06-15T12:00:00Z", "--expiring-within", "30", str(file), cwd=tmp_path)
    assert wide.returncode == 0
    assert f"{file}:15:12: note[exemption-expiring]" in wide.stderr


def test_validate_rejects_a_bad_now(tmp_path: Path) -> None:
    out = cli("validate", "--now", "yesterday", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    assert "--now: 'yesterday' is not an ISO 8601 time" in out.stderr
    assert "Traceback" not in out.stderr
