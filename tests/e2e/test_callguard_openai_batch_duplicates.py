"""Batches made by a creation attempt that failed once sent: the ``openai`` SDK sends no idempotency
key, so an attempt that timed out (or was answered 5xx) may have made a batch, and its retry
another. The guard lists the batches made from the same input file since the creation began and
holds each one it finds as a created batch — the real SDK against the fake Batch API
(``fake_openai_batches.py``), SQLite files and the real Redis and PostgreSQL as ledgers.

The helpers are those of ``test_callguard_openai_batches.py``."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink  # noqa: E402
from fake_openai_batches import complete_batch, state  # noqa: E402
from openai_guard_support import budget_guard, connect_async  # noqa: E402
from openai_guard_support import connect as connect_retrying  # noqa: E402
from test_callguard_openai_batches import (  # noqa: E402
    NANO,
    chat_lines,
    figures,
    jsonl,
    real_cost,
    submit,
    user_key,
    worst_case,
)

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_batches import MARKER_PREFIX  # noqa: E402

LINES = chat_lines(NANO, NANO)
SLOW = {"x-fake-delay-ms": "1500"}  # every attempt makes its batch, then times out (timeout=0.5)


def markers(ledger: Any) -> set[str]:
    """The batch ids the ledger holds a worst case for."""
    rows = ledger.status(MARKER_PREFIX, now=datetime.now(UTC))
    return {r.key[len(MARKER_PREFIX):] for r in rows if r.held_usd > 0}


def made_from(server: FakeLlmServer, file_id: str) -> list[str]:
    """The ids of the batches the fake made from input file ``file_id``, oldest first."""
    return [b["id"] for b in state(server).batches.values() if b["input_file_id"] == file_id]


def read_outputs(client: Any, server: FakeLlmServer, batch_ids: list[str]) -> None:
    """End every batch and read its output file through the guarded ``client``."""
    for batch_id in batch_ids:
        done = complete_batch(server, batch_id)
        client.batches.retrieve(batch_id)
        client.files.content(done["output_file_id"]).read()


def charged_total(sink: ListSink) -> float:
    return sum(e.cost_usd for e in sink.events if e.charged)


def test_a_timed_out_creation_whose_retry_succeeds_holds_and_settles_both_batches(
    server: FakeLlmServer, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    state(server).late_creates.append(1.5)  # the first attempt makes its batch, then times out
    with open_ledger(store_url) as ledger, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-1"):
            batch = submit(client, LINES)
            assert [r.headers.get("x-stainless-retry-count") for r in server.posts("/batches")] == ["0", "1"]
            (other,) = set(made_from(server, batch.input_file_id)) - {batch.id}
            assert markers(ledger) == {batch.id, other}
            assert figures(ledger, user_key("dup-1")) == (0.0, pytest.approx(2 * worst_case(LINES), abs=2e-6))
            (listing,) = [r for r in server.requests if r.method == "GET" and r.path.startswith("/v1/batches?")]
            assert "limit=100" in listing.path and listing.headers.get("authorization") == "Bearer test"
            assert other in caplog.text and batch.input_file_id in caplog.text
            # a creation event for the batch returned, and one for the batch the timed-out attempt made
            created = sink.events
            assert sorted(e.reservation_id or "" for e in created) == sorted(f"cw-oai-batch-{b}" for b in (batch.id,
                                                                                                          other))
            assert all((e.outcome, e.cost_usd, e.charged, e.usage_source, e.batch_requests, e.user) ==
                       ("ok", 0.0, False, "none", 2, "dup-1") for e in created)
            assert [e.estimated_cost_usd for e in created] == [pytest.approx(worst_case(LINES))] * 2

            read_outputs(client, server, [batch.id, other])
        cost = 2 * real_cost(LINES, range(2))
        assert figures(ledger, user_key("dup-1")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert markers(ledger) == set()
        settled = [e for e in sink.events if e.usage_source == "response"]
        assert sorted(e.reservation_id or "" for e in settled) == sorted(f"cw-oai-batch-{b}" for b in (batch.id, other))
        assert all(e.user == "dup-1" for e in settled)
        assert charged_total(sink) == pytest.approx(cost)  # nothing counted twice


def test_an_async_timed_out_creation_holds_both_batches(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    state(server).late_creates.append(1.5)

    async def run(guard: CallGuard) -> list[str]:
        async with connect_async(server, guard, max_retries=1, timeout=0.5) as client:
            with attribution(user="dup-async"):
                uploaded = await client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
                batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h")
            ids = [batch.id, *(set(made_from(server, uploaded.id)) - {batch.id})]
            assert markers(ledger) == set(ids)
            for batch_id in ids:
                done = complete_batch(server, batch_id)
                await client.batches.retrieve(batch_id)
                await (await client.files.content(done["output_file_id"])).aread()
            return ids

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        assert len(asyncio.run(run(guard))) == 2
        cost = 2 * real_cost(LINES, range(2))
        assert figures(ledger, user_key("dup-async")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert charged_total(sink) == pytest.approx(cost)


def test_every_attempt_timed_out_but_each_made_a_batch(server: FakeLlmServer, store_url: str) -> None:
    """The SDK gives up (``APITimeoutError``), yet both attempts made a batch: each is held and
    settled from its own output, and the failed call itself is charged nothing."""
    sink = ListSink()
    with open_ledger(store_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-all"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
            with pytest.raises(openai.APITimeoutError):
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", extra_headers=SLOW)
            made = made_from(server, uploaded.id)
            assert len(made) == 2 and markers(ledger) == set(made)
            assert figures(ledger, user_key("dup-all")) == (0.0, pytest.approx(2 * worst_case(LINES), abs=2e-6))
            (failed,) = [e for e in sink.events if e.outcome == "error"]
            assert (failed.cost_usd, failed.charged) == (0.0, False)
            held = [e for e in sink.events if e is not failed]  # a creation event for each batch held
            assert sorted(e.reservation_id or "" for e in held) == sorted(f"cw-oai-batch-{b}" for b in made)
            assert all(e.cost_usd == 0.0 and e.estimated_cost_usd == pytest.approx(worst_case(LINES)) for e in held)
            read_outputs(client, server, made)
        cost = 2 * real_cost(LINES, range(2))
        assert figures(ledger, user_key("dup-all")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert charged_total(sink) == pytest.approx(cost)


def test_an_async_creation_whose_every_attempt_timed_out_holds_its_batches(
    server: FakeLlmServer, sqlite_url: str
) -> None:
    sink = ListSink()

    async def run(guard: CallGuard) -> str:
        async with connect_async(server, guard, max_retries=1, timeout=0.5) as client:
            with attribution(user="dup-aall"):
                uploaded = await client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
                with pytest.raises(openai.APITimeoutError):
                    await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                completion_window="24h", extra_headers=SLOW)
                return uploaded.id

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        made = made_from(server, asyncio.run(run(guard)))
        assert len(made) == 2 and markers(ledger) == set(made)
        assert figures(ledger, user_key("dup-aall")) == (0.0, pytest.approx(2 * worst_case(LINES), abs=2e-6))
        held = [e for e in sink.events if e.outcome == "ok"]
        assert sorted(e.reservation_id or "" for e in held) == sorted(f"cw-oai-batch-{b}" for b in made)
        assert len(sink.events) == 3


def test_a_creation_retried_after_a_500_that_made_nothing_holds_once(server: FakeLlmServer, sqlite_url: str) -> None:
    """A 5xx answer may come from a proxy after the batch was made, so the guard looks — and finds
    only the batch the application got."""
    state(server).fail_creates.append(500)  # answered without making a batch
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger)
        with connect_retrying(server, guard, max_retries=1) as client, attribution(user="dup-500"):
            batch = submit(client, LINES)
        assert len(server.posts("/batches")) == 2 and made_from(server, batch.input_file_id) == [batch.id]
        assert [r for r in server.requests if r.method == "GET" and r.path.startswith("/v1/batches?")]
        assert markers(ledger) == {batch.id}
        assert figures(ledger, user_key("dup-500")) == (0.0, pytest.approx(worst_case(LINES), abs=2e-6))


def test_a_failed_listing_keeps_the_worst_case_held_and_warns(
    server: FakeLlmServer, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    state(server).late_creates.append(1.5)
    state(server).fail_lists.append(500)
    with open_ledger(store_url) as ledger, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        guard = budget_guard(1.0, ledger=ledger)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-nolist"):
            batch = submit(client, LINES)
            assert markers(ledger) == {batch.id}  # the other batch is unknown ...
            # ... but its worst case stays held, under a reservation of the call's own, until its TTL
            assert figures(ledger, user_key("dup-nolist")) == (0.0, pytest.approx(2 * worst_case(LINES), abs=2e-6))
            warning = [r.getMessage() for r in caplog.records if "could not list" in r.getMessage()]
            assert len(warning) == 1 and batch.input_file_id in warning[0]
            read_outputs(client, server, [batch.id])
        assert figures(ledger, user_key("dup-nolist")) == (pytest.approx(real_cost(LINES, range(2)), abs=2e-6),
                                                           pytest.approx(worst_case(LINES), abs=2e-6))


def test_a_timed_out_creation_whose_retry_cannot_read_the_file_holds_the_batch_it_made(
    server: FakeLlmServer, sqlite_url: str
) -> None:
    """The first attempt makes its batch and times out; the SDK's last retry finds the input file
    unreadable (503) and gives up. The batch that was made is found and held as a created batch
    (settled from its output), and the failed call is charged nothing."""
    state(server).late_creates.append(1.5)
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-lost"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
            # once the first attempt has read the file and is waiting on its creation, the next read fails
            retry_read_fails = threading.Timer(0.3, server.fail_next, (503,))
            retry_read_fails.start()
            with pytest.raises(openai.InternalServerError):
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            retry_read_fails.join()
            (made,) = made_from(server, uploaded.id)
            assert markers(ledger) == {made}
            assert figures(ledger, user_key("dup-lost")) == (0.0, pytest.approx(worst_case(LINES), abs=2e-6))
            event, held = sorted(sink.events, key=lambda e: e.outcome)
            assert (event.outcome, event.cost_usd) == ("error", 0.0)
            assert (held.outcome, held.cost_usd, held.reservation_id) == ("ok", 0.0, f"cw-oai-batch-{made}")
            read_outputs(client, server, [made])
        assert figures(ledger, user_key("dup-lost")) == (pytest.approx(real_cost(LINES, range(2)), abs=2e-6), 0.0)


def test_when_the_sdk_gives_up_and_the_listing_fails_each_sent_attempt_is_charged(
    server: FakeLlmServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    state(server).fail_lists.append(500)
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        guard = budget_guard(1.0, ledger=ledger, sink=sink)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-charged"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
            with pytest.raises(openai.APITimeoutError):
                client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", extra_headers=SLOW)
        assert markers(ledger) == set()
        assert figures(ledger, user_key("dup-charged")) == (pytest.approx(2 * worst_case(LINES), abs=2e-6), 0.0)
        (event,) = sink.events
        assert event.outcome == "error" and event.cost_usd == pytest.approx(2 * worst_case(LINES))
        assert uploaded.id in caplog.text and "could not list" in caplog.text


def test_an_async_timed_out_creation_whose_retry_cannot_read_the_file_holds_the_batch_it_made(
    server: FakeLlmServer, sqlite_url: str
) -> None:
    state(server).late_creates.append(1.5)

    async def run(guard: CallGuard) -> str:
        async with connect_async(server, guard, max_retries=1, timeout=0.5) as client:
            with attribution(user="dup-alost"):
                uploaded = await client.files.create(file=("b.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
                asyncio.get_running_loop().call_later(0.3, server.fail_next, 503)
                with pytest.raises(openai.InternalServerError):
                    await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                completion_window="24h")
                return uploaded.id

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger)
        (made,) = made_from(server, asyncio.run(run(guard)))
        assert len(server.posts("/batches")) == 1 and markers(ledger) == {made}
        assert figures(ledger, user_key("dup-alost")) == (0.0, pytest.approx(worst_case(LINES), abs=2e-6))


def test_the_listing_reads_on_while_the_batches_are_recent(server: FakeLlmServer, sqlite_url: str) -> None:
    """150 other batches made while the first attempt waited push its batch to the listing's
    second page (``after`` the first page's last): it is found there all the same."""
    state(server).late_creates.append(1.5)

    def others() -> None:
        for i in range(150):
            batch = {"id": f"batch_other{i:03d}", "object": "batch", "endpoint": "/v1/chat/completions",
                     "input_file_id": "file-someone-else", "status": "in_progress", "created_at": int(time.time())}
            with state(server).lock:
                state(server).batches[batch["id"]] = batch

    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, ledger=ledger)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="dup-pages"):
            threading.Timer(0.3, others).start()
            batch = submit(client, LINES)
        (other,) = set(made_from(server, batch.input_file_id)) - {batch.id}
        assert markers(ledger) >= {batch.id, other}
        listings = [r.path for r in server.requests if r.method == "GET" and r.path.startswith("/v1/batches?")]
        assert len(listings) == 2 and "after=batch_other" in listings[1]
