"""The rewritten copy of a batch's input file (``openai_batch_upload.py``) is deleted as soon as
no batch can be made from it — the creation failed, and no attempt left a batch behind — and kept
while any batch may read it: the real ``openai`` SDK against the fake Batch API
(``fake_openai_batches.py``: ``DELETE /v1/files/<id>`` there records what it deleted).

The helpers are those of ``test_callguard_openai_batches.py`` and the policy that clamps
``max_tokens`` is ``test_callguard_openai_batch_rewrites.py``'s."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink  # noqa: E402
from fake_openai_batches import complete_batch, state  # noqa: E402
from openai_guard_support import budget_guard, connect_async  # noqa: E402
from openai_guard_support import connect as connect_retrying  # noqa: E402
from test_callguard_openai_batch_rewrites import CLAMP  # noqa: E402
from test_callguard_openai_batches import NANO, chat_lines, connect, figures, jsonl, user_key  # noqa: E402

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402

LINES = chat_lines(NANO, NANO, max_tokens=500)  # each clamped by CLAMP: the guard uploads a copy
CREATE = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}


def upload(client: Any, lines: list[dict[str, Any]] = LINES) -> str:
    return str(client.files.create(file=("batch.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id)


def copies(server: FakeLlmServer) -> list[str]:
    """The input files the creation attempts named, once each: the guard's copies."""
    return list(dict.fromkeys(r.body["input_file_id"] for r in server.posts("/batches")))


def deletions(server: FakeLlmServer) -> list[Any]:
    return [r for r in server.requests if r.method == "DELETE"]


def test_a_copy_is_deleted_when_the_creation_is_refused(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    state(server).fail_creates.append(400)  # the API refuses the creation: nothing will read the copy
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="cl-400"):
            original = upload(client)
            with pytest.raises(openai.BadRequestError):
                client.batches.create(input_file_id=original, **CREATE)
        (copy,) = copies(server)
        assert copy != original and state(server).deleted == [copy]
        assert set(state(server).files) == {original}  # the caller's own file is never touched
        (delete,) = deletions(server)
        assert delete.path == f"/v1/files/{copy}" and delete.headers.get("authorization") == "Bearer test"
        assert figures(ledger, user_key("cl-400")) == (0.0, 0.0)
        (event,) = sink.events
        assert (event.outcome, event.status_code, event.cost_usd) == ("error", 400, 0.0)


def test_an_async_client_deletes_the_copy_alike(server: FakeLlmServer) -> None:
    state(server).fail_creates.append(422)

    async def run(guard: CallGuard) -> str:
        async with connect_async(server, guard, max_retries=0) as client:
            with attribution(user="cl-async"):
                uploaded = await client.files.create(file=("a.jsonl", io.BytesIO(jsonl(LINES))), purpose="batch")
                with pytest.raises(openai.UnprocessableEntityError):
                    await client.batches.create(input_file_id=uploaded.id, **CREATE)
                return uploaded.id

    original = asyncio.run(run(budget_guard(1.0, CLAMP)))
    (copy,) = copies(server)
    assert state(server).deleted == [copy] and set(state(server).files) == {original}
    assert deletions(server)[0].headers.get("authorization") == "Bearer test"


def test_a_copy_is_deleted_once_a_final_5xx_is_shown_to_have_made_nothing(server: FakeLlmServer) -> None:
    """A 5xx may come after the batch was made: the listing the guard makes then decides."""
    state(server).fail_creates.append(500)
    with connect(server, budget_guard(1.0, CLAMP)) as client, attribution(user="cl-500"):
        original = upload(client)
        with pytest.raises(openai.InternalServerError):
            client.batches.create(input_file_id=original, **CREATE)
    (copy,) = copies(server)
    assert any(r.method == "GET" and r.path.startswith("/v1/batches?") for r in server.requests)
    assert state(server).deleted == [copy]


def test_a_copy_a_timed_out_attempt_may_still_be_reading_is_kept(server: FakeLlmServer, sqlite_url: str) -> None:
    """The last attempt timed out: its batch may be made after any listing, so its copy stays."""
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger)
        with connect_retrying(server, guard, max_retries=0, timeout=0.5) as client, attribution(user="cl-slow"):
            original = upload(client)
            with pytest.raises(openai.APITimeoutError):
                client.batches.create(input_file_id=original, **CREATE, extra_headers={"x-fake-delay-ms": "1500"})
    assert deletions(server) == [] and len(copies(server)) == 1


def test_a_copy_an_earlier_attempt_made_a_batch_from_is_kept(server: FakeLlmServer, sqlite_url: str) -> None:
    """The first attempt makes its batch and times out; the retry is refused (400): the batch
    found among the copy's still reads it, so the copy is kept (and that batch held)."""
    state(server).late_creates.append(1.5)
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger)
        with connect_retrying(server, guard, max_retries=1, timeout=0.5) as client, attribution(user="cl-dup"):
            original = upload(client)
            refuse_retry = threading.Timer(0.3, state(server).fail_creates.append, (400,))
            refuse_retry.start()
            with pytest.raises(openai.BadRequestError):
                client.batches.create(input_file_id=original, **CREATE)
            refuse_retry.join()
    (copy,) = copies(server)
    (made,) = [b for b in state(server).batches.values() if b["input_file_id"] == copy]
    assert deletions(server) == [] and copy in state(server).files
    complete_batch(server, made["id"])  # the batch can still read its input


def test_a_copy_is_deleted_when_the_last_retry_cannot_read_the_input_file(server: FakeLlmServer) -> None:
    """The first attempt is answered 429 (nothing made) and the SDK's retry finds the input file
    unreadable (503): the call ends there, and the copy the first attempt sent is deleted."""
    state(server).fail_creates.append(429)

    def after(response: Any) -> None:  # the 429 reached the SDK: its retry's read of the input file fails
        if response.request.method == "POST" and response.status_code == 429:
            server.fail_next(503)

    guard = budget_guard(1.0, CLAMP)
    http = openai_http_client(guard, max_retries=1, event_hooks={"response": [after]})
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=1, http_client=http) as client, \
            attribution(user="cl-unread"):
        original = upload(client)
        with pytest.raises(openai.InternalServerError):
            client.batches.create(input_file_id=original, **CREATE)
    (copy,) = copies(server)
    assert len(server.posts("/batches")) == 1 and state(server).deleted == [copy]
    assert set(state(server).files) == {original}


def test_a_failed_delete_only_warns(server: FakeLlmServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    sink = ListSink()
    state(server).fail_creates.append(400)
    state(server).fail_deletes.append(503)
    with open_ledger(sqlite_url) as ledger, caplog.at_level(logging.WARNING, "costwarden.callguard"):
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="cl-nodelete"):
            original = upload(client)
            with pytest.raises(openai.BadRequestError):  # what the API answered, nothing of the delete
                client.batches.create(input_file_id=original, **CREATE)
        (copy,) = copies(server)
        assert len(deletions(server)) == 1 and state(server).deleted == [] and copy in state(server).files
        (warning,) = [r for r in caplog.records if "could not delete" in r.getMessage()]
        assert warning.levelno == logging.WARNING and copy in warning.getMessage() and "503" in warning.getMessage()
        (event,) = sink.events
        assert (event.outcome, event.cost_usd, event.error) == ("error", 0.0, "HTTP 400")
        assert figures(ledger, user_key("cl-nodelete")) == (0.0, 0.0)


def test_the_callers_own_file_is_never_deleted(server: FakeLlmServer) -> None:
    state(server).fail_creates.append(400)
    with connect(server, budget_guard(1.0)) as client, attribution(user="cl-own"):
        original = upload(client, chat_lines(NANO, max_tokens=50))
        with pytest.raises(openai.BadRequestError):
            client.batches.create(input_file_id=original, **CREATE)
    assert copies(server) == [original] and deletions(server) == []


def test_the_copy_of_a_created_batch_is_kept_after_it_settles(server: FakeLlmServer, sqlite_url: str) -> None:
    """The batch object names the copy as its ``input_file_id``: the application may read it
    later (OpenAI expires batch files after 30 days on its own), so settling does not delete it."""
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = budget_guard(1.0, CLAMP, ledger=ledger, sink=sink)
        with connect(server, guard) as client, attribution(user="cl-kept"):
            batch = client.batches.create(input_file_id=upload(client), **CREATE)
            done = complete_batch(server, batch.id)
            client.batches.retrieve(batch.id)
            client.files.content(done["output_file_id"]).read()
            assert [e.usage_source for e in sink.events] == ["none", "response"]  # settled
            assert client.files.content(batch.input_file_id).read().count(b"\n") == 2
    assert deletions(server) == []


def test_the_fake_forgets_its_files_and_batches_on_reset(server: FakeLlmServer) -> None:
    """Each test starts with an empty account (``FakeLlmServer.reset``, run by the ``server`` fixture)."""
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0) as client:
        batch = client.batches.create(input_file_id=upload(client), **CREATE)
        state(server).fail_deletes.append(500)
        server.reset()
        assert (state(server).files, state(server).batches, state(server).fail_deletes) == ({}, {}, [])
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(batch.input_file_id)
