"""A call that outlives its reservation is still charged: a stream that ends after the hold's TTL
(a long reasoning run, a slow consumer) settles against the record while the store keeps it, and
is charged directly (the store's ``charge``, under the call's reservation id) once the record is
purged — on every store, under the real SDK against the local API, with the guard's clock moved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from ledger_backends import REDIS_URL  # noqa: E402

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

MODEL = "claude-haiku-4-5"
HI = [{"role": "user", "content": "Hello there"}]
BILLED = GenaiPricer().cost("anthropic", MODEL, TokenUsage(input_tokens=42, output_tokens=10))
"""What each of the fake server's answers costs."""


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres", "leased-sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store; its URL takes more options after ``&``."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "memory":
        return "memory://?"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db?timeout=5"
    if request.param == "leased-sqlite":  # calls reserved in memory from budget slices, charged to the store
        return f"sqlite:///{tmp_path}/ledger.db?timeout=5&lease_calls=16"
    if request.param == "redis":
        return f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=2"
    return f"{request.getfixturevalue('postgres_db')}?table_prefix=l{unique}_&timeout=5"


class Clock:
    """The guard's clock, moved by the test. It starts ten minutes ago (the same day), so that
    Redis — which expires records by its own clock — has dropped a record kept for a second."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.start = max(now - timedelta(minutes=10), now.replace(hour=0, minute=0, second=1, microsecond=0))
        self.now = self.start

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = self.start + timedelta(seconds=seconds)


@pytest.mark.parametrize("purged", [False, True], ids=["record-kept", "record-purged"])
def test_a_stream_that_ends_after_its_reservation_expired_is_still_charged(
    server: FakeLlmServer, store_url: str, purged: bool
) -> None:
    """The stream's hold lives one second; another call two minutes later sweeps expired holds
    (and, with a one-second record grace, the stream's record); the stream then ends."""
    ledger = open_ledger(store_url + ("&record_grace=1" if purged else ""))
    clock, sink = Clock(), ListSink()
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink], clock=clock,
                      reservation_ttl_s=1)
    key = f"budget:user-budget/cap:user=u-late:{clock.start:%Y-%m-%d}"
    try:
        with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client, \
                attribution(user="u-late"):
            stream = client.messages.create(model=MODEL, max_tokens=50, messages=HI, stream=True)  # reserved now
            clock.at(120)
            client.messages.create(model=MODEL, max_tokens=50, messages=HI)  # reserves: sweeps what lapsed
            clock.at(130)
            assert "".join(e.delta.text for e in stream if e.type == "content_block_delta")  # the stream ends
        guard.flush(10)
        slow, quick = sorted(sink.events, key=lambda e: e.started_at)
        assert (slow.stream, slow.usage_source, quick.charged) == (True, "stream", True)
        assert slow.cost_usd == pytest.approx(BILLED) and quick.cost_usd == pytest.approx(BILLED)
        assert slow.charged, slow.error  # charged, not lost
        if purged and "lease_calls" not in store_url:
            assert "expired" in (slow.error or "") and "charged" in (slow.error or "")
        else:  # the store's record still settled it (a leased call is always charged to the store)
            assert slow.error is None
        assert ledger.spent([key], now=clock()) == [pytest.approx(2 * BILLED, abs=2e-6)]
        if purged and store_url.startswith("redis"):
            return  # Redis expires the charge's record by its own clock: this one, ten minutes ago, is gone
        # the call's id now has a settled record: settling or charging it again counts nothing more
        assert slow.reservation_id
        assert ledger.settle(slow.reservation_id, BILLED, now=clock()) == []
        assert ledger.charge(slow.reservation_id, [], BILLED, ttl_s=1, now=clock()) == []
        assert ledger.spent([key], now=clock()) == [pytest.approx(2 * BILLED, abs=2e-6)]
    finally:
        guard.close()
        ledger.close()


def test_a_ledger_down_at_a_late_settle_is_reported_uncharged_not_charged_twice(server: FakeLlmServer) -> None:
    """A settle that fails for any other reason than an unknown record (the store unreachable) is
    the configured error path: reported uncharged, nothing charged directly."""

    class Down:
        def __init__(self, inner: Any) -> None:
            self.inner, self.charges = inner, 0

        def spent(self, keys: Any, *, now: Any) -> Any:
            return self.inner.spent(keys, now=now)

        def reserve(self, rid: str, holds: Any, *, ttl_s: float, now: Any, keep_s: float | None = None) -> Any:
            return self.inner.reserve(rid, holds, ttl_s=ttl_s, now=now, keep_s=keep_s)

        def settle(self, rid: str, cost: float, *, now: Any) -> Any:
            from costwarden.errors import LedgerError

            raise LedgerError("Redis ledger redis://127.0.0.1:1/0: settle failed: Connection refused")

        def release(self, rid: str, *, now: Any) -> None:
            self.inner.release(rid, now=now)

        def charge(self, *args: Any, **kw: Any) -> Any:
            self.charges += 1
            return self.inner.charge(*args, **kw)

    ledger = Down(open_ledger("memory://"))
    sink = ListSink()
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0) as client, \
            attribution(user="u-down"):
        client.messages.create(model=MODEL, max_tokens=50, messages=HI)
    guard.close()
    (event,) = sink.events
    assert not event.charged and "Connection refused" in (event.error or "")
    assert ledger.charges == 0
