"""One reservation per logical call across the SDKs' retries, and none left to its TTL when the SDK
stops retrying: a per-request ``with_options(max_retries=N)`` on an OpenAI client (its transport only
knows the client's count), a ``Retry-After`` the ``openai`` SDK refuses to wait for, and an asyncio
task cancelled or timed out while the SDK sleeps between attempts. Real SDKs, real ledgers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402

import costwarden.enforcers.attempt as attempt_mod  # noqa: E402
import costwarden.enforcers.callguard as callguard_mod  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.ledger.sqlite import SqliteLedger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]


class InProcessCounting(CountingLedger):
    """A counted in-process ledger: the async edges then finish calls inline, on the event loop."""

    in_process = True


def make(kind: str, tmp_path: Path) -> tuple[CallGuard, CountingLedger, ListSink]:
    """A guard over the in-process ledger, or over SQLite (whose I/O the async edges run in threads)."""
    ledger = InProcessCounting(MemoryLedger()) if kind == "memory" else CountingLedger(SqliteLedger(tmp_path / "l.db"))
    sink = ListSink()
    return CallGuard(compile_policies(budget_policy(100.0)), ledger=ledger, sinks=[sink]), ledger, sink


def unfinished(ledger: CountingLedger) -> set[str]:
    """Reservations neither settled nor released (they would hold their worst case until the TTL)."""
    calls = ledger.calls
    return {r for op, r, _ in calls if op == "reserve"} - {r for op, r, _ in calls if op in ("settle", "release")}


# --- per-request max_retries on an OpenAI client ------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_with_fewer_retries_than_the_client_releases_the_hold_at_once(
    server: FakeLlmServer, tmp_path: Path, mode: str, kind: str
) -> None:
    guard, ledger, sink = make(kind, tmp_path)
    server.fail_next(500)
    with attribution(user="u-fewer"), pytest.raises(openai.InternalServerError):
        if mode == "sync":
            with openai.OpenAI(base_url=server.url + "/v1", api_key="t", max_retries=2) as base, \
                    guard_openai(base, guard) as client:
                client.with_options(max_retries=0).chat.completions.create(model="gpt-4.1-mini", max_tokens=16,
                                                                           messages=HI)
        else:
            async def call() -> None:
                async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=2) as base, \
                        guard_openai(base, guard) as client:
                    await client.with_options(max_retries=0).chat.completions.create(
                        model="gpt-4.1-mini", max_tokens=16, messages=HI)

            asyncio.run(call())
    assert len(server.requests) == 1  # the SDK did not retry
    assert ledger.count("reserve") == 1 and unfinished(ledger) == set()
    (event,) = sink.events
    assert event.outcome == "error" and event.status_code == 500 and not event.charged


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_with_more_retries_than_the_client_keeps_one_reservation(
    server: FakeLlmServer, tmp_path: Path, mode: str
) -> None:
    guard, ledger, sink = make("sqlite", tmp_path)
    server.fail_next(500, 529, 500)
    with attribution(user="u-more"):
        if mode == "sync":
            with openai.OpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0) as base, \
                    guard_openai(base, guard) as client:
                client.with_options(max_retries=3).chat.completions.create(model="gpt-4.1-mini", max_tokens=16,
                                                                           messages=HI)
        else:
            async def call() -> None:
                async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0) as base, \
                        guard_openai(base, guard) as client:
                    await client.with_options(max_retries=3).chat.completions.create(
                        model="gpt-4.1-mini", max_tokens=16, messages=HI)

            asyncio.run(call())
    assert len(server.requests) == 4
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1 and ledger.count("release") == 0
    (event,) = sink.events
    assert event.outcome == "ok" and event.charged and event.cost_usd > 0


def test_openai_with_more_retries_than_the_client_all_failing_releases_once(
    server: FakeLlmServer, tmp_path: Path
) -> None:
    guard, ledger, sink = make("sqlite", tmp_path)
    server.fail_next(500, 500, 500, 500)

    async def call() -> None:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=1) as base, \
                guard_openai(base, guard) as client:
            await client.with_options(max_retries=3).chat.completions.create(
                model="gpt-4.1-mini", max_tokens=16, messages=HI)

    with attribution(user="u-more-fail"), pytest.raises(openai.InternalServerError):
        asyncio.run(call())
    assert len(server.requests) == 4
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1 and unfinished(ledger) == set()
    (event,) = sink.events
    assert event.outcome == "error" and event.status_code == 500


# --- a Retry-After the openai SDK will not wait for ------------------------------------------------


class _RateLimited(BaseHTTPRequestHandler):
    """Answers every request 429 with ``retry-after: 3600`` (an exhausted daily limit)."""

    hits = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "3600")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rate_limited() -> Iterator[str]:
    _RateLimited.hits = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_429_with_a_retry_after_the_sdk_will_not_wait_for_releases_the_hold(
    rate_limited: str, tmp_path: Path, mode: str
) -> None:
    guard, ledger, sink = make("sqlite", tmp_path)
    with attribution(user="u-429"), pytest.raises(openai.RateLimitError):
        if mode == "sync":
            with openai.OpenAI(base_url=rate_limited, api_key="t") as base, guard_openai(base, guard) as client:
                client.chat.completions.create(model="gpt-4.1-mini", max_tokens=16, messages=HI)
        else:
            async def call() -> None:
                async with openai.AsyncOpenAI(base_url=rate_limited, api_key="t") as base, \
                        guard_openai(base, guard) as client:
                    await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=16, messages=HI)

            asyncio.run(call())
    assert _RateLimited.hits == 1  # openai refuses to wait over two minutes: no retry
    assert ledger.count("reserve") == 1 and unfinished(ledger) == set()
    (event,) = sink.events
    assert event.outcome == "error" and event.status_code == 429


# --- a task cancelled while the SDK sleeps between attempts -----------------------------------------


@pytest.fixture
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> float:
    """The guard's wait for a retry shortened (the SDK's first back-off is at most 0.5 s); the seconds to wait."""
    monkeypatch.setattr(attempt_mod, "MAX_BACKOFF_S", 0.6, raising=False)
    monkeypatch.setattr(callguard_mod, "RETRY_GRACE_S", 0.3, raising=False)
    return 0.6 + 0.3 + 0.5


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_a_task_timed_out_between_attempts_releases_its_hold(
    tmp_path: Path, short_backoff: float, sdk: str, kind: str
) -> None:
    """A connection refused (nothing sent) is retried after a back-off; ``asyncio.wait_for`` ends the
    task during it. No attempt and no later call in that task will ever end the call."""
    guard, ledger, sink = make(kind, tmp_path)
    dead = "http://127.0.0.1:1"

    async def call() -> None:
        with attribution(user="u-timeout"):
            if sdk == "anthropic":
                async with anthropic.AsyncAnthropic(base_url=dead, api_key="t", middleware=[guard],
                                                    max_retries=2) as client:
                    await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)
            else:
                async with openai.AsyncOpenAI(base_url=dead + "/v1", api_key="t", max_retries=2) as base, \
                        guard_openai(base, guard) as oclient:
                    await oclient.chat.completions.create(model="gpt-4.1-mini", max_tokens=16, messages=HI)

    async def reserved_then_backing_off() -> None:
        await call()  # never returns before the timeout: its retries back off for >= 0.375 s each

    async def main() -> None:
        # The timeout must end the task in the SDK's back-off, after the first attempt: a fixed 0.2 s
        # fell before the attempt on a loaded machine (the first SQLite reserve opens the file).
        # So wait for the reservation, then give the refused attempt 0.1 s to fail.
        task = asyncio.ensure_future(reserved_then_backing_off())
        for _ in range(2000):
            if ledger.count("reserve") or task.done():
                break
            await asyncio.sleep(0.005)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, 0.1)
        await asyncio.sleep(short_backoff)  # the application carries on; the loop keeps running

    asyncio.run(main())
    assert ledger.count("reserve") == 1 and ledger.count("release") == 1 and unfinished(ledger) == set()
    (event,) = sink.events
    assert event.outcome == "error" and not event.charged and "no retry" in (event.error or "")


def test_a_retry_after_the_status_is_still_one_reservation(server: FakeLlmServer, tmp_path: Path,
                                                           short_backoff: float) -> None:
    """The watch for a missing retry never ends a call whose retry did come."""
    guard, ledger, sink = make("sqlite", tmp_path)
    server.fail_next(529, 500)

    async def main() -> None:
        with attribution(user="u-retried"):
            async with anthropic.AsyncAnthropic(base_url=server.url, api_key="t", middleware=[guard],
                                                max_retries=2) as client:
                await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)
        await asyncio.sleep(short_backoff)

    asyncio.run(main())
    assert len(server.requests) == 3
    assert ledger.count("reserve") == 1 and ledger.count("settle") == 1 and ledger.count("release") == 0
    (event,) = sink.events
    assert event.outcome == "ok" and event.charged


# --- an exception the openai SDK does not retry -----------------------------------------------------


class _Unsigned(httpx2.BaseTransport):
    """An application's own transport (request signing) that fails before sending: the SDK retries
    only network errors, so this reaches the caller on the first attempt."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        raise PermissionError("no credentials to sign the request")


class _AsyncUnsigned(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise PermissionError("no credentials to sign the request")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_error_the_sdk_does_not_retry_ends_the_call_at_once(
    server: FakeLlmServer, tmp_path: Path, mode: str
) -> None:
    guard, ledger, sink = make("sqlite", tmp_path)
    with attribution(user="u-unsigned"), pytest.raises(PermissionError):
        if mode == "sync":
            with openai.OpenAI(base_url=server.url + "/v1", api_key="t", max_retries=2,
                               http_client=httpx2.Client(transport=_Unsigned())) as base, \
                    guard_openai(base, guard) as client:
                client.chat.completions.create(model="gpt-4.1-mini", max_tokens=16, messages=HI)
        else:
            async def call() -> None:
                async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=2,
                                              http_client=httpx2.AsyncClient(transport=_AsyncUnsigned())) as base, \
                        guard_openai(base, guard) as client:
                    await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=16, messages=HI)

            asyncio.run(call())
    assert ledger.count("reserve") == 1 and unfinished(ledger) == set()  # not left to the TTL
    (event,) = sink.events
    assert event.outcome == "error" and "PermissionError" in (event.error or "")
