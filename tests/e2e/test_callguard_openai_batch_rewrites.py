"""OpenAI batches whose requests pass the policies only rewritten: the guard uploads a rewritten
copy of the input file and creates the batch from it — the real ``openai`` SDK against the fake
Batch API (``fake_openai_batches.py``), SQLite files and the real Redis and PostgreSQL as ledgers.

The helpers (lines, worst cases, real costs, ledger figures) are the ones of
``test_callguard_openai_batches.py``."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from fake_openai_batches import complete_batch, state  # noqa: E402
from openai_guard_support import budget_guard, connect_async  # noqa: E402
from openai_guard_support import connect as connect_retrying  # noqa: E402
from test_callguard_openai_batches import (  # noqa: E402
    HI,
    MINI,
    NANO,
    chat_lines,
    connect,
    figures,
    jsonl,
    real_cost,
    submit,
    user_key,
    worst_case,
)

import costwarden  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.errors import PolicyViolation  # noqa: E402

CLAMP = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: short}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: clamp
      maxOutputTokens: {limit: 100}
"""


def clamped(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``lines`` as the clamp policy rewrites them (``max_tokens`` at most 100)."""
    return [{**x, "body": {**x["body"], "max_tokens": min(x["body"]["max_tokens"], 100)}} for x in lines]


def uploaded_by_guard(server: FakeLlmServer, file_id: str) -> tuple[dict[str, Any], bytes]:
    """The file object and bytes of file ``file_id``, once checked that the guard uploaded it."""
    found = state(server).files[file_id]
    assert found[0]["filename"].endswith(".costwarden.jsonl")
    return found


def test_a_batch_that_passes_only_rewritten_is_created_from_a_rewritten_copy(
    server: FakeLlmServer, store_url: str
) -> None:
    sink = ListSink()
    lines = chat_lines(NANO, MINI, NANO, max_tokens=500)
    lines[1]["body"]["max_tokens"] = 50  # within the limit: its line is uploaded as it came
    sent = clamped(lines)
    with open_ledger(store_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="rw-1", feature="labels"):
            original = client.files.create(file=("batch.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
            batch = client.batches.create(input_file_id=original.id, endpoint="/v1/chat/completions",
                                          completion_window="24h", metadata={"run": "nightly"})
            copy, content = uploaded_by_guard(server, batch.input_file_id)
            # the batch names the rewritten copy, every other field of the creation as the caller sent it
            assert batch.input_file_id == copy["id"] != original.id
            (creation,) = server.posts("/batches")
            assert creation.body == {"input_file_id": copy["id"], "endpoint": "/v1/chat/completions",
                                     "completion_window": "24h", "metadata": {"run": "nightly"}}
            assert creation.headers["authorization"] == "Bearer test"
            upload = server.posts("/files")[-1]
            assert upload.body == {"purpose": "batch", "filename": "batch.costwarden.jsonl"}
            assert upload.headers["authorization"] == "Bearer test"
            assert (copy["purpose"], copy["filename"]) == ("batch", "batch.costwarden.jsonl")
            assert [json.loads(raw) for raw in content.splitlines()] == sent
            assert content.splitlines()[1] == jsonl(lines).splitlines()[1]  # not rewritten: byte for byte
            # the reservation holds the rewritten requests' worst case, not the caller's
            held = worst_case(sent)
            assert held < worst_case(lines)
            assert figures(ledger, user_key("rw-1")) == (0.0, pytest.approx(held, abs=2e-6))
            (created,) = sink.events
            assert created.rewrites == ("/requests/0/params: clamp max_tokens to 100",
                                        "/requests/2/params: clamp max_tokens to 100")
            assert created.estimated_cost_usd == pytest.approx(held)
            assert created.reservation_id == f"cw-oai-batch-{batch.id}"

            done = complete_batch(server, batch.id)
            client.batches.retrieve(batch.id)
            client.files.content(done["output_file_id"]).read()
        cost = real_cost(sent, range(3))
        assert figures(ledger, user_key("rw-1")) == (pytest.approx(cost, abs=2e-6), 0.0)
        created, settled = sink.events
        assert settled.cost_usd == pytest.approx(cost) and settled.charged
        assert (settled.user, settled.feature, settled.batch_requests) == ("rw-1", "labels", 3)
        assert settled.rewrites == created.rewrites


def test_a_retried_creation_reuses_the_rewritten_copy(server: FakeLlmServer, sqlite_url: str) -> None:
    """A creation that timed out is retried by the SDK naming the same rewritten copy: one upload,
    so that the batch the timed-out attempt made is found among the copy's (``…_batch_duplicates``)."""
    lines, sink = chat_lines(NANO, max_tokens=500), ListSink()
    state(server).late_creates.append(1.5)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="rw-retry"):
            batch = submit(client, lines)
        copy, _ = uploaded_by_guard(server, batch.input_file_id)
        assert [r.body["input_file_id"] for r in server.posts("/batches")] == [copy["id"]] * 2
        assert len(server.posts("/files")) == 2  # the caller's upload, and the guard's copy once
        # the batch the timed-out attempt made has a creation event of its own, rewrites and all
        (other,) = [b for b in state(server).batches if b != batch.id]
        events = {e.reservation_id: e for e in sink.events}
        assert set(events) == {f"cw-oai-batch-{batch.id}", f"cw-oai-batch-{other}"}
        mine, made = events[f"cw-oai-batch-{batch.id}"], events[f"cw-oai-batch-{other}"]
        assert made.rewrites == mine.rewrites == ("/requests/0/params: clamp max_tokens to 100",)
        assert made.estimated_cost_usd == mine.estimated_cost_usd == pytest.approx(worst_case(clamped(lines)))
        assert (made.verdict, made.model_requested, made.user) == (mine.verdict, mine.model_requested, "rw-retry")


def test_async_clients_upload_the_rewritten_copy_alike(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, lines = ListSink(), chat_lines(NANO, NANO, max_tokens=400)

    async def run(guard: CallGuard) -> Any:
        async with connect_async(server, guard, max_retries=0) as client:
            with attribution(user="rw-async"):
                uploaded = await client.files.create(file=("a.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
                batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h")
            done = complete_batch(server, batch.id)
            await client.batches.retrieve(batch.id)
            await (await client.files.content(done["output_file_id"])).aread()
            return batch

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        batch = asyncio.run(run(guard))
        copy, content = uploaded_by_guard(server, batch.input_file_id)
        assert copy["filename"] == "a.costwarden.jsonl"
        assert [json.loads(raw) for raw in content.splitlines()] == clamped(lines)
        cost = real_cost(clamped(lines), range(2))
        assert figures(ledger, user_key("rw-async")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert [e.usage_source for e in sink.events] == ["none", "response"]
        assert len(sink.events[0].rewrites) == 2


def test_a_downgraded_reasoning_line_loses_its_reasoning_parameters(server: FakeLlmServer) -> None:
    """The built-in library downgrades o3 for classification to gpt-4.1-mini, which refuses
    ``reasoning_effort``: the copy drops it from that line, as a single call's request would."""
    sink = ListSink()
    guard = CallGuard(costwarden.load_policies(), ledger=MemoryLedger(), sinks=[sink])
    lines = [{"custom_id": "c0", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "o3", "max_completion_tokens": 200, "reasoning_effort": "high", "messages": HI}},
             {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4.1-mini", "max_completion_tokens": 200, "messages": HI}}]
    with connect(server, guard) as client, attribution(user="rw-reason", feature="classify"):
        batch = submit(client, lines)
    _, content = uploaded_by_guard(server, batch.input_file_id)
    first, second = (json.loads(raw) for raw in content.splitlines())
    assert first["body"]["model"] == "gpt-4.1-mini" and "reasoning_effort" not in first["body"]
    assert second == lines[1]
    (created,) = sink.events
    assert "/requests/0/params: drop reasoning_effort: gpt-4.1-mini does not reason" in created.rewrites
    assert "/requests/0/params: downgrade model to gpt-4.1-mini" in created.rewrites


def test_without_fixes_a_batch_that_needs_rewriting_is_refused(server: FakeLlmServer, sqlite_url: str) -> None:
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0) + "\n---\n" + CLAMP), ledger=ledger, apply_fixes=False)
        with connect(server, guard) as client, attribution(user="rw-nofix"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(chat_lines(NANO, max_tokens=500)))),
                                           purpose="batch")
            with pytest.raises(PolicyViolation):
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert server.posts("/batches") == [] and len(server.posts("/files")) == 1  # the caller's own upload
        assert ledger.spent([user_key("rw-nofix")], now=datetime.now(UTC)) == [0.0]


def test_a_failed_upload_of_the_rewritten_copy_refuses_the_batch(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="rw-fail"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(chat_lines(NANO, max_tokens=500)))),
                                           purpose="batch")
            state(server).fail_uploads.append(500)
            with pytest.raises(PolicyViolation, match=f"rewritten copy of input file {uploaded.id} could not be "
                                                      "uploaded \\(HTTP 500"):
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert server.posts("/batches") == []  # nothing was created
        assert len(server.posts("/files")) == 2  # the caller's upload and the guard's, refused
        assert ledger.spent([user_key("rw-fail")], now=datetime.now(UTC)) == [0.0]  # nothing held or spent
        (event,) = sink.events
        assert (event.outcome, event.cost_usd, event.charged) == ("error", 0.0, False)
        assert "could not be uploaded" in (event.error or "")
