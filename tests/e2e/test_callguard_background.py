"""``CallGuard(settle_in_background=True)``: calls return before their settlement, which still
happens — the real SDKs against the local API, with a SQLite ledger file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.errors import PolicyViolation  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]


class GatedLedger:
    """A real ledger whose settle and release wait until ``gate`` opens (a slow or busy store)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.settled_in: list[str] = []

    def spent(self, keys: Any, *, now: Any) -> Any:
        return self.inner.spent(keys, now=now)

    def reserve(self, rid: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        return self.inner.reserve(rid, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, rid: str, cost: float, *, now: Any) -> Any:
        assert self.gate.wait(10)
        self.settled_in.append(threading.current_thread().name)
        return self.inner.settle(rid, cost, now=now)

    def release(self, rid: str, *, now: Any) -> None:
        assert self.gate.wait(10)
        self.inner.release(rid, now=now)


@pytest.fixture
def ledger(server: FakeLlmServer, tmp_path: Path) -> Iterator[GatedLedger]:
    inner = open_ledger(f"sqlite:///{tmp_path}/spend.db")
    yield GatedLedger(inner)
    inner.close()


@pytest.fixture
def guard(ledger: GatedLedger, sink: ListSink) -> Iterator[CallGuard]:
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink], settle_in_background=True)
    yield guard
    ledger.gate.set()
    guard.close()


def spent(ledger: GatedLedger, user: str) -> float:
    now = datetime.now(UTC)
    return float(ledger.inner.spent([f"budget:user-budget/cap:user={user}:{now:%Y-%m-%d}"], now=now)[0])


def held_then_settled(guard: CallGuard, ledger: GatedLedger, user: str) -> tuple[float, float]:
    """(spend the budget shows while the settlement waits, spend once it ran)."""
    assert guard.settler is not None and guard.settler.pending >= 1
    before = spent(ledger, user)
    ledger.gate.set()
    assert guard.flush(10)
    return before, spent(ledger, user)


def test_a_call_returns_before_its_settlement_which_then_charges_the_real_cost(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="bg-1"):
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    assert message.usage.input_tokens == 42  # the caller has its response; the ledger is still waiting
    reserved, charged = held_then_settled(guard, ledger, "bg-1")
    (event,) = sink.events
    assert reserved >= event.estimated_cost_usd > event.cost_usd > 0  # the worst case held until settled
    assert charged == pytest.approx(event.cost_usd, abs=1e-6)
    assert ledger.settled_in == ["costwarden-settler"]


def test_the_latency_is_the_calls_not_the_queues(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="bg-2"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        threading.Timer(0.5, ledger.gate.set).start()  # the settlement waits half a second
        assert guard.flush(10)
    (event,) = sink.events
    assert event.latency_ms < 400
    assert (event.finished_at - event.started_at).total_seconds() < 0.4


def test_a_stream_read_to_its_end_settles_in_the_background(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="bg-3"):
        events = list(client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI, stream=True))
    assert events[-1].type == "message_stop"
    reserved, charged = held_then_settled(guard, ledger, "bg-3")
    (event,) = sink.events
    assert event.usage_source == "stream" and reserved > charged == pytest.approx(event.cost_usd, abs=1e-6)


def test_a_refusal_is_reported_after_the_calls_that_ended_before_it(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    """A refused call's event waits its turn behind the settlements still queued, so sinks see
    events in the order the calls ended (the first call's settlement waits on the ledger here)."""
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="bg-order"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        with pytest.raises(PolicyViolation, match="no price"):  # every budget refuses an unpriced model
            client.messages.create(model="claude-unpriced-9", max_tokens=64, messages=HI)
    ledger.gate.set()
    assert guard.flush(10)
    assert [(e.model, e.outcome) for e in sink.events] == [("claude-haiku-4-5", "ok"), ("claude-unpriced-9", "denied")]


def test_an_error_status_releases_in_the_background(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    server.fail_next(400)
    with anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard]) as client, \
            attribution(user="bg-4"), pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    reserved, after = held_then_settled(guard, ledger, "bg-4")
    assert reserved > 0 and after == 0
    (event,) = sink.events
    assert (event.outcome, event.status_code, event.charged) == ("error", 400, False)


def test_the_async_client_does_not_wait_for_the_ledger(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    async def main() -> int:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            with attribution(user="bg-5"):
                message = await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        return int(message.usage.input_tokens)

    assert asyncio.run(asyncio.wait_for(main(), 5)) == 42  # the gate is closed: it never waited for the settle
    reserved, charged = held_then_settled(guard, ledger, "bg-5")
    (event,) = sink.events
    assert reserved > charged == pytest.approx(event.cost_usd, abs=1e-6) and event.cost_usd > 0


def test_the_openai_client_settles_in_the_background(
    server: FakeLlmServer, guard: CallGuard, ledger: GatedLedger, sink: ListSink
) -> None:
    openai = pytest.importorskip("openai")
    from costwarden.enforcers.openai_guard import openai_http_client

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="test", http_client=openai_http_client(guard))
    with client, attribution(user="bg-6"):
        reply = client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
    assert reply.usage is not None
    reserved, charged = held_then_settled(guard, ledger, "bg-6")
    (event,) = sink.events
    assert event.provider == "openai" and event.cost_usd > 0
    assert reserved > charged == pytest.approx(event.cost_usd, abs=1e-6)
