"""OpenAI Batch API jobs through the call-guard: the real ``openai`` SDK (``files.create``,
``batches.create`` / ``retrieve`` / ``cancel``, ``files.content``) against the fake Batch API
(``fake_openai_batches.py``), with SQLite files and the real Redis and PostgreSQL as ledgers.

A batch is judged from its input file at the batch rate and holds its worst case from creation;
reading its output file settles the real usage at the batch rate (requests that failed or never
ran cost nothing), once, however often and wherever it is read. Batches whose requests pass only
rewritten: ``test_callguard_openai_batch_rewrites.py``; batches made by creation attempts that
failed once sent: ``test_callguard_openai_batch_duplicates.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from fake_openai_batches import complete_batch, line_usage, state  # noqa: E402
from openai_guard_support import budget_guard, model_catalog, unguarded  # noqa: E402
from openai_guard_support import connect as connect_retrying  # noqa: E402

from costwarden.adapters import openai as openai_adapter  # noqa: E402
from costwarden.adapters import openai_embeddings  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_batch_reads import settle_openai_batch  # noqa: E402
from costwarden.enforcers.openai_batches import MARKER_PREFIX  # noqa: E402
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402
from costwarden.engine.rules.budget import worst_case_usage  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import AdapterError, BudgetExceeded  # noqa: E402

PRICER = GenaiPricer()
MINI, NANO, SMALL = "gpt-4.1-mini", "gpt-4.1-nano", "text-embedding-3-small"
HI = [{"role": "user", "content": "Label this ticket: my invoice is wrong"}]


def chat_lines(*models: str, max_tokens: int = 200) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": m, "max_tokens": max_tokens, "messages": HI}} for i, m in enumerate(models)]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def worst_case(lines: list[dict[str, Any]], build: Callable[..., Any] = openai_adapter.subject_from_request) -> float:
    """What the guard reserves: each request's estimated input plus its max output, at the batch rate."""
    return sum(PRICER.cost("openai", x["body"]["model"], worst_case_usage(build(x["body"], batch=True)), batch=True)
               for x in lines)


def real_cost(lines: list[dict[str, Any]], indexes: range | list[int],
              usage: Callable[[int], dict[str, int]] = line_usage) -> float:
    """What requests ``indexes`` cost when they ran with ``usage`` per line (the fake's), at the batch rate."""
    total = 0.0
    for i in indexes:
        u = usage(i)
        total += PRICER.cost("openai", lines[i]["body"]["model"],
                             TokenUsage(input_tokens=u["input_tokens"], output_tokens=u["output_tokens"]), batch=True)
    return total


def user_key(user: str) -> str:
    return f"budget:user-budget/cap:user={user}:{datetime.now(UTC):%Y-%m-%d}"


def figures(ledger: Any, key: str) -> tuple[float, float]:
    """(settled, held) of a budget key through the ledger's status API."""
    rows = {r.key: r for r in ledger.status(key, now=datetime.now(UTC))}
    return rows[key].spent_usd, rows[key].held_usd


def connect(server: FakeLlmServer, guard: CallGuard, provider: str = "openai") -> Any:
    """A guarded client that does not retry (a test that needs the SDK's retries says so)."""
    return connect_retrying(server, guard, provider=provider, max_retries=0)


def plain(server: FakeLlmServer) -> Any:
    return unguarded(server, max_retries=0)


def submit(client: Any, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions") -> Any:
    uploaded = client.files.create(file=("batch.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")


def settle_batches_command(server: FakeLlmServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``costwarden budget settle-batches`` with ``args``, its OpenAI client on the fake API."""
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "OPENAI_BASE_URL": server.url + "/v1",
           "OPENAI_API_KEY": "test"}
    return subprocess.run([sys.executable, "-m", "costwarden.cli", "budget", "settle-batches", *args],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120, env=env)


def test_a_batch_holds_its_worst_case_and_its_output_settles_the_real_cost(
    server: FakeLlmServer, store_url: str
) -> None:
    sink, lines = ListSink(), chat_lines(MINI, NANO, MINI, MINI)
    with open_ledger(store_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client:
            with attribution(user="ob-1", feature="labels"):
                batch = submit(client, lines)
            held = worst_case(lines)
            assert figures(ledger, user_key("ob-1")) == (0.0, pytest.approx(held, abs=2e-6))
            (created,) = sink.events
            assert (created.provider, created.api, created.batch_requests) == ("openai", "batch", 4) and created.batch
            assert created.cost_usd == 0.0 and not created.charged and created.usage_source == "none"
            assert created.estimated_cost_usd == pytest.approx(held)
            assert created.reservation_id == f"cw-oai-batch-{batch.id}"
            # the guard read the input file once, before the batch was created, with the same key
            reads = [r for r in server.requests if r.path.endswith(f"/files/{batch.input_file_id}/content")]
            assert len(reads) == 1 and reads[0].headers.get("authorization") == "Bearer test"

            complete_batch(server, batch.id, errored=("r2",))
            done = client.batches.retrieve(batch.id)
            assert figures(ledger, user_key("ob-1"))[0] == 0.0  # a retrieve alone settles nothing
            output = client.files.content(done.output_file_id).content

        assert len(output.splitlines()) == 3
        expected = real_cost(lines, [0, 1, 3])
        standard = sum(PRICER.cost("openai", lines[i]["body"]["model"], TokenUsage(**line_usage(i))) for i in (0, 1, 3))
        assert expected == pytest.approx(standard / 2)  # the batch rate
        assert figures(ledger, user_key("ob-1")) == (pytest.approx(expected, abs=2e-6), 0.0)
        created, settled = sink.events
        assert (settled.provider, settled.api, settled.usage_source, settled.outcome) == ("openai", "batch", "response",
                                                                                           "ok")
        assert settled.cost_usd == pytest.approx(expected) and settled.charged
        assert (settled.input_tokens, settled.output_tokens) == (40 + 41 + 43, 10 + 11 + 13)
        assert (settled.user, settled.feature, settled.batch_requests) == ("ob-1", "labels", 4)
        assert settled.model == "mixed" and "1 errored of 4 requests" in (settled.error or "")
        assert settled.reservation_id == f"cw-oai-batch-{batch.id}"


def test_an_output_file_read_twice_settles_once(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO, NANO)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-2"):
            batch = submit(client, lines)
            done = complete_batch(server, batch.id)
            client.batches.retrieve(batch.id)
            first = client.files.content(done["output_file_id"]).content
            once = figures(ledger, user_key("ob-2"))
            second = client.files.content(done["output_file_id"]).content
            client.batches.retrieve(batch.id)
        assert first == second and once == (pytest.approx(real_cost(lines, range(2)), abs=2e-6), 0.0)
        assert figures(ledger, user_key("ob-2")) == once
        assert [e.usage_source for e in sink.events] == ["none", "response"]
        # handed in by hand (as read by another client), it is just as idempotent
        assert not settle_openai_batch(guard, state(server).batches[batch.id], first)
        assert figures(ledger, user_key("ob-2")) == once and len(sink.events) == 2


def test_a_batch_over_budget_is_refused_before_it_is_created(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(*[MINI] * 50, max_tokens=4000)
    assert worst_case(lines) > 0.01
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(0.01, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-3"), pytest.raises(BudgetExceeded):
            submit(client, lines)
        assert server.posts("/batches") == []  # nothing was created
        assert ledger.spent([user_key("ob-3")], now=datetime.now(UTC)) == [0.0]  # nothing held or spent
        (denied,) = sink.events
        assert (denied.outcome, denied.verdict, denied.api, denied.batch) == ("denied", "deny", "batch", True)


@pytest.mark.parametrize("content", [None, b"not json\n", b'{"custom_id": "r0", "method": "POST"}\n', b"\n"])
def test_an_input_file_that_cannot_be_judged_refuses_the_batch(
    server: FakeLlmServer, sqlite_url: str, content: bytes | None
) -> None:
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger)
        with connect(server, guard) as client:
            file_id = "file-missing"
            if content is not None:
                file_id = client.files.create(file=("b.jsonl", io.BytesIO(content)), purpose="batch").id
            with pytest.raises(AdapterError, match=f"input file {file_id} .*enforced budgets fail closed"):
                client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
    assert server.posts("/batches") == []


def test_without_an_enforced_budget_an_unreadable_file_goes_ahead_with_a_warning(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    guard = budget_guard(1.0)  # no ledger: no budget can refuse
    with connect(server, guard) as client, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        uploaded = client.files.create(file=("b.jsonl", io.BytesIO(b"nope\n")), purpose="batch")
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert len(server.posts("/batches")) == 1
    assert "goes ahead unjudged" in caplog.text and uploaded.id in caplog.text


def test_a_sweep_settles_the_batches_nobody_read(server: FakeLlmServer, store_url: str) -> None:
    sink = ListSink()
    ended_lines, running_lines = chat_lines(NANO, MINI), chat_lines(MINI)
    with open_ledger(store_url) as ledger:
        guard = budget_guard(5.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-sweep"):
            ended = submit(client, ended_lines)
            running = submit(client, running_lines)
        complete_batch(server, ended.id)
        with plain(server) as other:  # not guarded: the sweep reads through any client
            swept = guard.settle_pending_batches(other)
            assert (swept.settled, swept.processing, swept.failed) == ((ended.id,), (running.id,), ())
            cost = real_cost(ended_lines, range(2))
            assert figures(ledger, user_key("ob-sweep")) == (pytest.approx(cost, abs=2e-6),
                                                             pytest.approx(worst_case(running_lines), abs=2e-6))
            again = guard.settle_pending_batches(other)
            assert (again.settled, again.processing) == ((), (running.id,))
            complete_batch(server, running.id, status="expired", ran=0)  # nothing ran: nothing billed
            last = guard.settle_pending_batches(other)
            assert last.settled == (running.id,)
            assert guard.settle_pending_batches(other) == type(last)()  # nothing pending
        assert figures(ledger, user_key("ob-sweep")) == (pytest.approx(cost, abs=2e-6), 0.0)
        charged = [e for e in sink.events if e.reservation_id and e.usage_source == "response"]
        assert [(e.reservation_id, e.charged) for e in charged] == [(f"cw-oai-batch-{ended.id}", True),
                                                                   (f"cw-oai-batch-{running.id}", False)]
        assert "1 expired of 1 requests" in (charged[1].error or "")
        # Message Batches' sweep never sees OpenAI's: each provider's markers are its own
        assert ledger.status("costwarden-batch:", now=datetime.now(UTC)) == []
        assert {r.key for r in ledger.status(MARKER_PREFIX, now=datetime.now(UTC))} == {
            MARKER_PREFIX + ended.id, MARKER_PREFIX + running.id}


def test_a_sweep_through_the_guarded_client_settles_once(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(5.0, ledger=ledger, sink=sink)
        with guard_openai(plain(server), guard) as client, attribution(user="ob-sweep2"):
            batch = submit(client, lines)
            complete_batch(server, batch.id)
            assert guard.settle_pending_batches(client).settled == (batch.id,)
        assert figures(ledger, user_key("ob-sweep2")) == (pytest.approx(real_cost(lines, [0]), abs=2e-6), 0.0)
        assert len([e for e in sink.events if e.charged]) == 1


@pytest.mark.parametrize("status", ["cancelled", "expired"])
def test_a_batch_that_ended_early_is_charged_what_ran(server: FakeLlmServer, sqlite_url: str, status: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO, NANO, NANO)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user=f"ob-{status}"):
            batch = submit(client, lines)
            if status == "cancelled":
                assert client.batches.cancel(batch.id).status == "cancelling"
            complete_batch(server, batch.id, status=status, ran=2)
            done = client.batches.retrieve(batch.id)
            client.files.content(done.output_file_id).read()
        assert figures(ledger, user_key(f"ob-{status}")) == (pytest.approx(real_cost(lines, range(2)), abs=2e-6), 0.0)
        word = "canceled" if status == "cancelled" else "expired"
        assert f"1 {word} of 3 requests" in (sink.events[-1].error or "")


def test_a_batch_that_failed_validation_is_released_when_read(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(MINI, MINI)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-failed"):
            batch = submit(client, lines)
            complete_batch(server, batch.id, status="failed")
            assert client.batches.retrieve(batch.id).output_file_id is None
            client.batches.retrieve(batch.id)
        assert figures(ledger, user_key("ob-failed")) == (0.0, 0.0)
        settled = [e for e in sink.events if e.usage_source == "response"]
        assert len(settled) == 1 and settled[0].cost_usd == 0.0 and not settled[0].charged


def test_embeddings_batches_reserve_their_input_and_settle_it(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": SMALL, "input": "one two three four " * 1500}} for i in range(3)]

    def usage(index: int) -> dict[str, int]:
        return {"input_tokens": 6000 + index, "output_tokens": 0}

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-emb"):
            batch = submit(client, lines, endpoint="/v1/embeddings")
            assert figures(ledger, user_key("ob-emb"))[1] == pytest.approx(
                worst_case(lines, openai_embeddings.subject_from_request), abs=2e-6)
            done = complete_batch(server, batch.id, usage=usage)
            client.batches.retrieve(batch.id)
            client.files.content(done["output_file_id"]).read()
        cost = real_cost(lines, range(3), usage)
        assert cost > 1e-4 and figures(ledger, user_key("ob-emb")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert sink.events[-1].cost_usd == pytest.approx(cost) and sink.events[-1].input_tokens == 18003


def test_a_restarted_process_settles_from_the_ledger(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO)
    with open_ledger(sqlite_url) as ledger:
        creator = budget_guard(1.0, ledger=ledger)
        with connect(server, creator) as client, attribution(user="ob-restart", feature="nightly"):
            batch = submit(client, lines)
    done = complete_batch(server, batch.id)
    with open_ledger(sqlite_url) as ledger:
        reader = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, reader) as client:
            client.batches.retrieve(batch.id)
            client.files.content(done["output_file_id"]).read()
        assert figures(ledger, user_key("ob-restart")) == (pytest.approx(real_cost(lines, [0]), abs=2e-6), 0.0)
        (event,) = sink.events
        assert (event.user, event.feature, event.model_requested) == ("ob-restart", "nightly", NANO)  # the creator's


def test_async_clients_are_guarded_alike(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO, NANO)

    async def run(guard: CallGuard) -> None:
        client = guard_openai(openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0), guard)
        async with client:
            with attribution(user="ob-async"):
                uploaded = await client.files.create(file=("b.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
                batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h")
            assert figures(ledger, user_key("ob-async"))[1] == pytest.approx(worst_case(lines), abs=2e-6)
            done = complete_batch(server, batch.id)
            await client.batches.retrieve(batch.id)
            await (await client.files.content(done["output_file_id"])).aread()

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        asyncio.run(run(guard))
        assert figures(ledger, user_key("ob-async")) == (pytest.approx(real_cost(lines, range(2)), abs=2e-6), 0.0)
        assert [e.usage_source for e in sink.events] == ["none", "response"]


def test_the_settle_batches_command_sweeps_openai_batches(server: FakeLlmServer, tmp_path: Path) -> None:
    ledger_url, events = f"sqlite:///{tmp_path}/ledger.db", tmp_path / "events.jsonl"
    lines = chat_lines(NANO, NANO)
    with open_ledger(ledger_url) as ledger:
        guard = budget_guard(5.0, ledger=ledger)
        with connect(server, guard) as client, attribution(user="ob-cli", team="data"):
            batch = submit(client, lines)
    complete_batch(server, batch.id)
    out = settle_batches_command(server, "--provider", "openai", "--ledger", ledger_url, "--format", "json",
                                 "--events", str(events))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"settled": [batch.id], "processing": [], "failed": []}
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert (event["provider"], event["api"], event["user"], event["team"]) == ("openai", "batch", "ob-cli", "data")
    assert event["cost_usd"] == pytest.approx(real_cost(lines, range(2))) and event["charged"] is True
    with open_ledger(ledger_url) as ledger:
        assert figures(ledger, user_key("ob-cli")) == (pytest.approx(real_cost(lines, range(2)), abs=2e-6), 0.0)


def test_a_failed_read_of_the_input_file_is_retried_as_the_creation(server: FakeLlmServer, sqlite_url: str) -> None:
    lines = chat_lines(NANO)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger)
        client = connect_retrying(server, guard, max_retries=1)
        with client, attribution(user="ob-retry"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
            server.fail_next(503)  # the guard's read of the input file
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
        reads = [r for r in server.requests if r.path.endswith(f"/files/{uploaded.id}/content")]
        assert len(reads) == 2 and len(server.posts("/batches")) == 1  # read again, created once
        assert [r.headers.get("x-stainless-retry-count") for r in reads] == ["0", "1"]
        assert figures(ledger, user_key("ob-retry")) == (0.0, pytest.approx(worst_case(lines), abs=2e-6))
        assert {r.key for r in ledger.status(MARKER_PREFIX, now=datetime.now(UTC))} == {MARKER_PREFIX + batch.id}


@pytest.mark.parametrize("endpoint", ["/chat/completions", "/v1/chat/completions/"])
def test_an_azure_batch_endpoint_without_v1_is_judged_and_settled(
    server: FakeLlmServer, sqlite_url: str, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Azure OpenAI's batches name their endpoint ``/chat/completions`` (no ``/v1``): such a batch
    is held and settled like OpenAI's, not passed through unguarded."""
    sink, lines = ListSink(), chat_lines(NANO, MINI)
    with open_ledger(sqlite_url) as ledger, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="ob-azure"):
            batch = submit(client, lines, endpoint=endpoint)
            assert figures(ledger, user_key("ob-azure")) == (0.0, pytest.approx(worst_case(lines), abs=2e-6))
            done = complete_batch(server, batch.id)
            client.batches.retrieve(batch.id)
            client.files.content(done["output_file_id"]).read()
        assert figures(ledger, user_key("ob-azure")) == (pytest.approx(real_cost(lines, range(2)), abs=2e-6), 0.0)
        assert [e.usage_source for e in sink.events] == ["none", "response"]
    assert "not guarded" not in caplog.text


def test_an_azure_moderations_batch_passes_without_a_warning(
    server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    guard = budget_guard(1.0, ledger=open_ledger("memory://"))
    lines = [{"custom_id": "m0", "method": "POST", "url": "/moderations", "body": {"input": "hello"}}]
    with connect(server, guard) as client, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        submit(client, lines, endpoint="/moderations")
    assert len(server.posts("/batches")) == 1 and "not guarded" not in caplog.text


CATALOG = model_catalog("in-house",
                        '{model: "meta-llama/*", provider: together, inputPerMTok: 200, outputPerMTok: 600}')


def test_the_settle_batches_command_prices_with_the_model_catalog_it_is_given(
    server: FakeLlmServer, tmp_path: Path
) -> None:
    """A batch of a model only a ``ModelCatalog`` prices (an OpenAI-compatible provider's) is
    settled by the command at its real usage when the command is given the policies holding that
    catalog, not at the worst case it reserved (the built-in library has no such price)."""
    ledger_url, events, policies = f"sqlite:///{tmp_path}/ledger.db", tmp_path / "events.jsonl", tmp_path / "p.yaml"
    policies.write_text(budget_policy(50.0) + "---" + CATALOG)
    lines = chat_lines("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct")
    with open_ledger(ledger_url) as ledger:
        guard = CallGuard(compile_policies(policies.read_text()), ledger=ledger)
        client = connect(server, guard, provider="together")
        with client, attribution(user="ob-cat"):
            batch = submit(client, lines)
    complete_batch(server, batch.id)
    out = settle_batches_command(server, "--provider", "together", "--policies", str(policies), "--ledger", ledger_url,
                                 "--format", "json", "--events", str(events))
    assert out.returncode == 0, out.stderr
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    real = sum((line_usage(i)["input_tokens"] * 200 + line_usage(i)["output_tokens"] * 600) / 1e6 / 2 for i in (0, 1))
    assert (event["provider"], event["error"]) == ("together", None)
    assert event["cost_usd"] == pytest.approx(real)
    with open_ledger(ledger_url) as ledger:
        assert figures(ledger, user_key("ob-cat")) == (pytest.approx(real, abs=2e-6), 0.0)


def test_a_sweep_for_one_provider_leaves_another_providers_batches_alone(
    server: FakeLlmServer, sqlite_url: str
) -> None:
    """Batches of two OpenAI-compatible providers on one ledger: each sweep reads and prices only
    its own provider's (the other's ids mean nothing to its API, and its prices are not the other's)."""
    sink = ListSink()
    ours, theirs = chat_lines("meta-llama/Llama-3.1-8B-Instruct"), chat_lines(NANO)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(50.0, CATALOG, ledger=ledger, sink=sink)
        together = connect(server, guard, provider="together")
        with together, connect(server, guard) as client, attribution(user="ob-two"):
            mine = submit(together, ours)
            other = submit(client, theirs)
        complete_batch(server, mine.id)
        complete_batch(server, other.id)
        from costwarden.enforcers.pending_batches import settle_pending_openai_batches

        with plain(server) as reader:
            swept = settle_pending_openai_batches(guard, reader, provider="together")
            assert (swept.settled, swept.failed) == ((mine.id,), ())
            assert figures(ledger, user_key("ob-two"))[1] == pytest.approx(worst_case(theirs), abs=2e-6)
            assert guard.settle_pending_batches(reader).settled == (other.id,)
        real = (line_usage(0)["input_tokens"] * 200 + line_usage(0)["output_tokens"] * 600) / 1e6 / 2
        assert figures(ledger, user_key("ob-two")) == (pytest.approx(real + real_cost(theirs, [0]), abs=2e-6), 0.0)
        assert [(e.provider, e.error) for e in sink.events if e.usage_source == "response"] == [
            ("together", None), ("openai", None)]
