"""`costwarden budget status | settle-batches | settle-responses` end to end, in a subprocess, as a
user runs them from a scheduled job: a SQLite ledger file, and the local fake Anthropic and OpenAI
APIs in place of the real ones."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "Label this ticket: my invoice is wrong"}]


def budget(*args: str, server: FakeLlmServer | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true"}
    if server is not None:
        env |= {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "test",
                "OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": "test"}
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", "budget", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=env,
    )


def user_key(user: str) -> str:
    return f"budget:user-budget/cap:user={user}:{datetime.now(UTC):%Y-%m-%d}"


def create_batch(server: FakeLlmServer, ledger_url: str, user: str, **headers: str) -> Any:
    with open_ledger(ledger_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger)
        client = anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0)
        with client, attribution(user=user, feature="nightly-labels", team="data", env="prod"):
            return client.messages.batches.create(
                requests=[{"custom_id": "r0", "params": {"model": "claude-haiku-4-5", "max_tokens": 200,
                                                          "messages": HI}}],
                extra_headers=headers,
            )


def status(ledger_url: str, prefix: str = "budget:") -> dict[str, dict[str, Any]]:
    out = budget("status", "--ledger", ledger_url, "--prefix", prefix, "--format", "json")
    assert out.returncode == 0, out.stderr
    return {row["key"]: row for row in json.loads(out.stdout)}


def test_settle_batches_reads_and_settles_what_nobody_read(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger_url, events = f"sqlite:///{tmp_path}/ledger.db", tmp_path / "events.jsonl"
    ended = create_batch(server, ledger_url, "cli-1")
    running = create_batch(server, ledger_url, "cli-1", **{"x-fake-batch-status": "in_progress"})
    before = status(ledger_url)[user_key("cli-1")]
    assert before["spent_usd"] == 0.0 and before["held_usd"] > 0

    out = budget("settle-batches", "--ledger", ledger_url, "--events", str(events), "--format", "json", server=server)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"settled": [ended.id], "processing": [running.id], "failed": []}
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["charged"] is True and event["api"] == "batch" and event["batch_requests"] == 1
    assert event["reservation_id"] == f"cw-batch-{ended.id}"
    who = (event["user"], event["feature"], event["team"], event["tags"], event["model_requested"])
    assert who == ("cli-1", "nightly-labels", "data", {"env": "prod"}, "claude-haiku-4-5")  # the creator's
    after = status(ledger_url)[user_key("cli-1")]
    assert after["spent_usd"] == pytest.approx(event["cost_usd"], abs=2e-6)
    assert 0 < after["held_usd"] < before["held_usd"]  # the running batch still holds its worst case
    assert set(status(ledger_url, "costwarden-batch:")) == {f"costwarden-batch:{ended.id}",
                                                           f"costwarden-batch:{running.id}"}

    server.processing.discard(running.id)
    text = budget("settle-batches", "--ledger", ledger_url, server=server)
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["settled", running.id]
    assert status(ledger_url)[user_key("cli-1")]["held_usd"] == 0.0
    nothing = budget("settle-batches", "--ledger", ledger_url, server=server)
    assert (nothing.returncode, nothing.stdout.strip()) == (0, f"no pending batches in {ledger_url}")


def create_background_response(server: FakeLlmServer, ledger_url: str, user: str, *, running: bool) -> Any:
    with open_ledger(ledger_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger)
        client = guard_openai(openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0), guard)
        with client, attribution(user=user, feature="research", team="data"):
            created = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64,
                                              background=True)
        if running:
            server.processing.add(created.id)
        guard.close()
        return created


def test_settle_responses_reads_and_settles_the_background_responses_nobody_read(
    server: FakeLlmServer, tmp_path: Path
) -> None:
    ledger_url, events = f"sqlite:///{tmp_path}/ledger.db", tmp_path / "events.jsonl"
    ended = create_background_response(server, ledger_url, "cli-r1", running=False)
    running = create_background_response(server, ledger_url, "cli-r1", running=True)
    before = status(ledger_url)[user_key("cli-r1")]
    assert before["spent_usd"] == 0.0 and before["held_usd"] > 0

    out = budget("settle-responses", "--ledger", ledger_url, "--events", str(events), "--format", "json",
                 server=server)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"settled": [ended.id], "processing": [running.id], "failed": []}
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["charged"] is True and event["reservation_id"] == f"cw-bg-{ended.id}"
    assert (event["user"], event["feature"], event["team"]) == ("cli-r1", "research", "data")  # the creator's
    after = status(ledger_url)[user_key("cli-r1")]
    assert after["spent_usd"] == pytest.approx(event["cost_usd"], abs=2e-6) and event["cost_usd"] > 0
    assert 0 < after["held_usd"] < before["held_usd"]  # the running one still holds its worst case

    server.processing.discard(running.id)
    text = budget("settle-responses", "--ledger", ledger_url, server=server)
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["settled", running.id]
    assert status(ledger_url)[user_key("cli-r1")]["held_usd"] == 0.0
    nothing = budget("settle-responses", "--ledger", ledger_url, server=server)
    assert (nothing.returncode, nothing.stdout.strip()) == (0, f"no pending responses in {ledger_url}")


def test_a_response_that_cannot_be_read_fails_the_run(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    created = create_background_response(server, ledger_url, "cli-r2", running=False)
    server.responses.pop(created.id)
    out = budget("settle-responses", "--ledger", ledger_url, "--format", "json", server=server)
    assert out.returncode == 1
    [failed] = json.loads(out.stdout)["failed"]
    assert failed["response"] == created.id and failed["error"]
    assert status(ledger_url)[user_key("cli-r2")]["held_usd"] > 0  # kept until its TTL, not dropped


def test_a_sweep_without_an_api_key_is_a_clear_error(tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path}/l.db"
    open_ledger(ledger_url).close()
    out = budget("settle-responses", "--ledger", ledger_url)
    assert out.returncode == 2 and "error: no OpenAI client" in out.stderr and "OPENAI_API_KEY" in out.stderr
    assert "Traceback" not in out.stderr
    # the anthropic SDK asks for its key only when it sends a request: the sweep asks before
    out = budget("settle-batches", "--ledger", ledger_url)
    assert out.returncode == 2 and "error: no Anthropic client: set ANTHROPIC_API_KEY" in out.stderr
    assert "Traceback" not in out.stderr


def test_status_text_is_one_aligned_line_per_window(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    create_batch(server, ledger_url, "org:42|cli-3")  # a user id with a colon and a pipe
    out = budget("status", "--ledger", ledger_url)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["BUDGET", "FOR", "WINDOW", "SPENT", "HELD", "LIMIT", "USED", "ENDS"]
    (row,) = rows
    assert row.split()[:4] == ["user-budget/cap", "user=org:42|cli-3", f"{datetime.now(UTC):%Y-%m-%d}", "$0.0000"]
    assert float(row.split()[4].lstrip("$")) > 0  # the batch holds its worst case
    assert row.split()[5] == "$5.00" and row.split()[6].endswith("%") and row.endswith(" UTC")
    assert header.index("SPENT") + len("SPENT") == row.index("$0.0000") + len("$0.0000")  # numbers right-aligned
    empty = budget("status", "--ledger", ledger_url, "--prefix", "budget:nothing/")
    assert empty.stdout.strip() == f"no budget windows under 'budget:nothing/' in {ledger_url}"


def test_a_batch_that_cannot_be_read_fails_the_run(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    batch = create_batch(server, ledger_url, "cli-2")
    server.batches.pop(batch.id)
    out = budget("settle-batches", "--ledger", ledger_url, server=server)
    assert out.returncode == 1
    assert out.stdout.startswith(f"failed      {batch.id}: ")
    assert status(ledger_url)[user_key("cli-2")]["held_usd"] > 0  # kept until its TTL, not dropped


def test_a_ledger_file_that_does_not_exist_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    for command in (["status"], ["settle-batches"], ["settle-responses"]):
        out = budget(*command, "--ledger", f"sqlite:///{missing}")
        assert out.returncode == 2 and f"no ledger file {missing}" in out.stderr and "COSTWARDEN_LEDGER" in out.stderr
    assert not missing.exists()


def test_bad_input_is_a_clear_error(server: FakeLlmServer, tmp_path: Path) -> None:
    out = budget("status", "--ledger", "nope://x")
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr
    nowhere = str(tmp_path / "no" / "such" / "events.jsonl")
    open_ledger(f"sqlite:///{tmp_path}/l.db").close()  # a ledger the guard made
    events = budget("settle-batches", "--ledger", f"sqlite:///{tmp_path}/l.db", "--events", nowhere, server=server)
    assert events.returncode == 2 and "error: cannot write cost events to" in events.stderr
    assert "Traceback" not in events.stderr


def test_an_unknown_format_is_refused_before_anything_is_settled(server: FakeLlmServer, tmp_path: Path) -> None:
    """``--format yaml`` (or a typo) must not fall back to text with exit 0 — a script parsing the
    output would read the table as garbage — and a sweep must not settle anything first."""
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    create_batch(server, ledger_url, "cli-f1")
    for command in (["status"], ["settle-batches"], ["settle-responses"]):
        out = budget(*command, "--ledger", ledger_url, "--format", "yaml", server=server)
        assert out.returncode == 2, (command, out.stdout)
        assert "unknown format 'yaml'" in out.stderr and "text, json" in out.stderr
        assert out.stdout == "" and "Traceback" not in out.stderr
    assert status(ledger_url)[user_key("cli-f1")]["held_usd"] > 0  # the batch was not swept


def test_a_ledger_password_is_never_printed(server: FakeLlmServer, redis_run: str) -> None:
    """The messages naming the ledger (an empty ledger, nothing pending) go to a scheduled job's
    log: the password in the ledger URL is masked there as in the error messages."""
    ledger_url = f"redis://default:s3cret-pw@127.0.0.1:6379/0?prefix={redis_run}-pw"
    shown = f"redis://default:***@127.0.0.1:6379/0?prefix={redis_run}-pw"
    outs = {
        "status": budget("status", "--ledger", ledger_url),
        "batches": budget("settle-batches", "--ledger", ledger_url, server=server),
        "responses": budget("settle-responses", "--ledger", ledger_url, server=server),
    }
    for name, out in outs.items():
        assert out.returncode == 0, (name, out.stderr)
        assert "s3cret-pw" not in out.stdout + out.stderr, name
    assert outs["status"].stdout.strip() == f"no budget windows under 'budget:' in {shown}"
    assert outs["batches"].stdout.strip() == f"no pending batches in {shown}"
    assert outs["responses"].stdout.strip() == f"no pending responses in {shown}"


def test_the_used_column_never_shows_spend_as_none() -> None:
    from costwarden.adapters.ledger.status import BudgetStatus
    from costwarden.budget_cli import status_table

    def used(spent: float) -> str:
        row = BudgetStatus("budget:p/r:user=u:2026-11-30", spent, 0.0, 100.0, None)
        return status_table([row]).splitlines()[1].split()[6]

    spends = (0.0, 0.01, 0.04, 0.05, 0.5, 1.0, 55.0)
    assert [used(s) for s in spends] == ["0%", "<0.1%", "<0.1%", "0.1%", "0.5%", "1%", "55%"]
