"""Message Batches through the call-guard, settled from their results: the real ``anthropic`` SDK
(``messages.batches.create`` / ``messages.batches.results``) against the local fake server, with
SQLite files and the real Redis and PostgreSQL as ledgers.

A batch holds its worst case at the batch rate from creation; reading its results settles the
real usage at the batch rate (errored, canceled and expired requests cost nothing), once, even
when the results are read twice or by a restarted process.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402
from ledger_backends import REDIS_URL  # noqa: E402

from costwarden.adapters.anthropic import estimate_input_tokens  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.batch_settle import marker_key, reservation_id, settle_batch  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.ledger import Alert, Hold  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded  # noqa: E402

PRICER = GenaiPricer()
HI = [{"role": "user", "content": "Label this ticket: my invoice is wrong"}]
CACHED_USAGE = {
    "input_tokens": 300,
    "output_tokens": 40,
    "cache_read_input_tokens": 1200,
    "cache_creation_input_tokens": 800,
}


def requests(*models: str, max_tokens: int = 200) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"r{i}", "params": {"model": m, "max_tokens": max_tokens, "messages": HI}}
        for i, m in enumerate(models)
    ]


def worst_case(reqs: list[dict[str, Any]]) -> float:
    """What the guard reserves: estimated input plus max_tokens of output, per request, at the batch rate."""
    return sum(
        PRICER.cost(
            "anthropic",
            r["params"]["model"],
            TokenUsage(input_tokens=estimate_input_tokens(r["params"]), output_tokens=r["params"]["max_tokens"]),
            batch=True,
        )
        for r in reqs
    )


def real_cost(model: str, usage: dict[str, int], *, batch: bool = True) -> float:
    return PRICER.cost(
        "anthropic",
        model,
        TokenUsage(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_read_tokens=usage.get("cache_read_input_tokens", 0),
            cache_write_5m_tokens=usage.get("cache_creation_input_tokens", 0),
        ),
        batch=batch,
    )


def user_key(user: str, policy: str = "user-budget") -> str:
    return f"budget:{policy}/cap:user={user}:{datetime.now(UTC):%Y-%m-%d}"


def figures(ledger: Any, key: str) -> tuple[float, float]:
    """(settled, held) of a budget key through the ledger's status API."""
    rows = {r.key: r for r in ledger.status(key, now=datetime.now(UTC))}
    row = rows[key]
    return row.spent_usd, row.held_usd


def connect(server: FakeLlmServer, guard: CallGuard) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=0)


def test_results_settle_the_real_usage_at_the_batch_rate(server: FakeLlmServer, sqlite_url: str) -> None:
    sink, alerts = ListSink(), []
    reqs = requests(
        "claude-haiku-4-5", "claude-sonnet-4-6", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-haiku-4-5"
    )
    outcomes = {"r1": "errored", "r3": "expired", "r4": "canceled"}
    policy = budget_policy(0.02).replace("window: day}", "window: day, alertAt: [0.05]}")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(policy), ledger=ledger, sinks=[sink], on_alert=alerts.append)
        with connect(server, guard) as client:
            with attribution(user="b-1", feature="labels"):
                batch = client.messages.batches.create(
                    requests=reqs,
                    extra_headers={
                        "x-fake-usage": json.dumps(CACHED_USAGE),
                        "x-fake-batch-results": json.dumps(outcomes),
                    },
                )
            held = worst_case(reqs)
            # pending: the worst case at the batch rate is held, nothing is settled yet
            assert figures(ledger, user_key("b-1")) == (0.0, pytest.approx(held, abs=2e-6))
            (created,) = sink.events
            assert (created.api, created.batch, created.batch_requests) == ("batch", True, 5)
            assert created.cost_usd == 0.0 and not created.charged and created.usage_source == "none"
            assert created.estimated_cost_usd == pytest.approx(held)
            assert created.reservation_id == reservation_id(batch.id)

            lines = list(client.messages.batches.results(batch.id))

        assert sorted((r.custom_id, r.result.type) for r in lines) == [
            ("r0", "succeeded"),
            ("r1", "errored"),
            ("r2", "succeeded"),
            ("r3", "expired"),
            ("r4", "canceled"),
        ]
        expected = real_cost("claude-haiku-4-5", CACHED_USAGE) + real_cost("claude-sonnet-4-6", CACHED_USAGE)
        standard = real_cost("claude-haiku-4-5", CACHED_USAGE, batch=False) + real_cost(
            "claude-sonnet-4-6", CACHED_USAGE, batch=False
        )
        assert expected == pytest.approx(standard / 2)  # the batch rate, cache reads and writes included
        assert figures(ledger, user_key("b-1")) == (pytest.approx(expected, abs=2e-6), 0.0)

        created, settled = sink.events
        assert settled.api == "batch" and settled.outcome == "ok" and settled.usage_source == "response"
        assert settled.cost_usd == pytest.approx(expected) and settled.charged
        assert settled.estimated_cost_usd == pytest.approx(held)
        assert (settled.input_tokens, settled.output_tokens, settled.cache_read_tokens, settled.cache_write_tokens) == (
            600,
            80,
            2400,
            1600,
        )
        assert settled.batch_requests == 5 and settled.model == "mixed" and settled.model_served == "mixed"
        assert (settled.user, settled.feature) == ("b-1", "labels")
        assert settled.reservation_id == reservation_id(batch.id)
        assert "1 errored" in (settled.error or "") and "1 expired" in (settled.error or "")
        # the events add up to the ledger, and the budget's alert fired on the settlement
        assert sum(e.cost_usd for e in sink.events) == pytest.approx(figures(ledger, user_key("b-1"))[0], abs=2e-6)
        assert [(a.key, a.threshold) for a in alerts] == [(user_key("b-1"), 0.05)]
        assert settled.alerts and "crossed 5%" in settled.alerts[0]


def test_reading_results_twice_settles_once(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client:
            with attribution(user="b-2"):
                batch = client.messages.batches.create(requests=reqs)
            first = list(client.messages.batches.results(batch.id))
            once = figures(ledger, user_key("b-2"))
            second = list(client.messages.batches.results(batch.id))
        assert len(first) == len(second) == 2
        assert once == (
            pytest.approx(2 * real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10})),
            0.0,
        )
        assert figures(ledger, user_key("b-2")) == once
        assert [e.usage_source for e in sink.events] == ["none", "response"]
        # results handed in some other way are just as idempotent
        assert not settle_batch(guard, batch.id, [json.loads(json.dumps(r.to_dict())) for r in first])
        assert figures(ledger, user_key("b-2")) == once and len(sink.events) == 2
    requests_seen = [(r.method, r.path.split("?")[0]) for r in server.requests]
    assert requests_seen.count(("GET", f"/v1/messages/batches/{batch.id}/results")) == 2


@pytest.mark.parametrize("encoding", ["UTF-8", "gzip, identity"])
def test_results_whose_content_encoding_the_client_passes_over_settle(
    server: FakeLlmServer, sqlite_url: str, encoding: str
) -> None:
    """The application reads a results download with a Content-Encoding httpx passes over (a charset
    sent by mistake; ``identity`` in a list); the guard reads it the same way and settles the batch."""
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client:
            with attribution(user="b-enc"):
                batch = client.messages.batches.create(requests=reqs)
            lines = list(client.messages.batches.results(batch.id,
                                                         extra_headers={"x-fake-content-encoding": encoding}))
        assert [r.result.type for r in lines] == ["succeeded", "succeeded"]
        expected = 2 * real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10})
        assert figures(ledger, user_key("b-enc")) == (pytest.approx(expected, abs=2e-6), 0.0)
        assert [e.usage_source for e in sink.events] == ["none", "response"]


def test_a_restarted_process_settles_the_batch_once(server: FakeLlmServer, store_url: str) -> None:
    """Created by one guard and ledger connection, read by another (as after a restart or in another
    worker): the hold is found by the batch id in the ledger alone and settled once, and the event
    has the creator's attribution, which only the ledger still knows."""
    reqs = requests("claude-haiku-4-5", "claude-sonnet-4-6", max_tokens=300)
    policy = compile_policies(budget_policy(1.0))
    before = ListSink()
    with open_ledger(store_url) as ledger:
        guard = CallGuard(policy, ledger=ledger, sinks=[before])
        with connect(server, guard) as client, attribution(user="b-3", team="ops"):
            batch = client.messages.batches.create(
                requests=reqs, extra_headers={"x-fake-usage": json.dumps({"input_tokens": 50, "output_tokens": 120})}
            )
        assert figures(ledger, user_key("b-3")) == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))
    del guard, client

    readers = [ListSink(), ListSink()]
    for sink in readers:  # two more "processes" read the results
        with open_ledger(store_url) as ledger:
            guard = CallGuard(policy, ledger=ledger, sinks=[sink])
            with connect(server, guard) as client, attribution(user="reader", team="ops"):
                assert len(list(client.messages.batches.results(batch.id))) == 2
            spent, held = figures(ledger, user_key("b-3"))
    usage = {"input_tokens": 50, "output_tokens": 120}
    assert spent == pytest.approx(
        real_cost("claude-haiku-4-5", usage) + real_cost("claude-sonnet-4-6", usage), abs=2e-6
    )
    assert held == 0.0
    (settled,) = readers[0].events
    assert readers[1].events == []  # settled before: nothing charged or reported again
    assert settled.cost_usd == pytest.approx(spent, abs=2e-6) and settled.charged
    assert settled.reservation_id == reservation_id(batch.id)
    # the creator's attribution and worst case, from the record its reservation wrote to the ledger
    assert (settled.user, settled.team, settled.feature) == ("b-3", "ops", None)
    assert settled.estimated_cost_usd == pytest.approx(worst_case(reqs), abs=1e-9)
    assert settled.model_requested == "mixed" and settled.model_served == "mixed"
    assert settled.started_at == before.events[0].started_at  # when the batch was created


def test_results_read_partly_do_not_settle_until_read_in_full(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    reqs = requests(*["claude-haiku-4-5"] * 6)
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client:
            with attribution(user="b-4"):
                batch = client.messages.batches.create(requests=reqs)
            results = client.messages.batches.results(batch.id)
            next(iter(results))
            results.close()
            assert figures(ledger, user_key("b-4")) == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))
            assert len(sink.events) == 1
            assert len(list(client.messages.batches.results(batch.id))) == 6
        one = real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10})
        assert figures(ledger, user_key("b-4")) == (pytest.approx(6 * one, abs=2e-6), 0.0)
        assert [e.usage_source for e in sink.events] == ["none", "response"]


def test_a_pending_batch_counts_against_the_budget_until_settled(server: FakeLlmServer, sqlite_url: str) -> None:
    reqs = requests(*["claude-sonnet-4-6"] * 4, max_tokens=2000)
    held = worst_case(reqs)
    message = PRICER.cost(
        "anthropic",
        "claude-haiku-4-5",
        TokenUsage(
            input_tokens=estimate_input_tokens({"model": "claude-haiku-4-5", "messages": HI}), output_tokens=500
        ),
    )
    limit = held + message / 2  # the held batch leaves less than one message call's worst case
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(round(limit, 6))), ledger=ledger)
        with connect(server, guard) as client, attribution(user="b-5"):
            batch = client.messages.batches.create(requests=reqs)
            with pytest.raises(BudgetExceeded):
                client.messages.create(model="claude-haiku-4-5", max_tokens=500, messages=HI)
            list(client.messages.batches.results(batch.id))  # settles far below the worst case
            client.messages.create(model="claude-haiku-4-5", max_tokens=500, messages=HI)
    assert len(server.posts("/v1/messages")) == 1


def test_a_batch_never_read_is_released_after_its_ttl(server: FakeLlmServer, sqlite_url: str) -> None:
    reqs = requests("claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, batch_reservation_ttl_s=0.5)
        with connect(server, guard) as client, attribution(user="b-6"):
            client.messages.batches.create(requests=reqs)
        assert figures(ledger, user_key("b-6")) == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))
        time.sleep(0.6)
        assert figures(ledger, user_key("b-6")) == (0.0, 0.0)


def test_async_client_settles_from_results(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5", "claude-haiku-4-5")

    async def main(guard: CallGuard) -> int:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard]) as client:
            with attribution(user="b-7"):
                batch = await client.messages.batches.create(
                    requests=reqs, extra_headers={"x-fake-batch-results": json.dumps({"r2": "errored"})}
                )
            return len([r async for r in await client.messages.batches.results(batch.id)])

    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        assert asyncio.run(main(guard)) == 3
        one = real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10})
        assert figures(ledger, user_key("b-7")) == (pytest.approx(2 * one, abs=2e-6), 0.0)
    assert [(e.usage_source, e.charged) for e in sink.events] == [("none", False), ("response", True)]


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_a_batch_created_with_streaming_response_is_kept_and_settled(
    server: FakeLlmServer, sqlite_url: str, client_kind: str
) -> None:
    """``.with_streaming_response.create`` hands the middleware an unread body: the guard still reads
    the batch id, so the batch holds its worst case until its results settle the real cost."""
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")

    def sync(guard: CallGuard, ledger: Any) -> tuple[Any, Any]:
        with connect(server, guard) as client:
            with attribution(user="b-raw"), client.messages.batches.with_streaming_response.create(
                requests=reqs
            ) as raw:
                batch = raw.parse()
            pending = figures(ledger, user_key("b-raw"))
            list(client.messages.batches.results(batch.id))
        return batch, pending

    async def main(guard: CallGuard, ledger: Any) -> tuple[Any, Any]:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", middleware=[guard],
                                            max_retries=0) as client:
            with attribution(user="b-raw"):
                async with client.messages.batches.with_streaming_response.create(requests=reqs) as raw:
                    batch = await raw.parse()
            pending = figures(ledger, user_key("b-raw"))
            [r async for r in await client.messages.batches.results(batch.id)]
        return batch, pending

    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        batch, pending = sync(guard, ledger) if client_kind == "sync" else asyncio.run(main(guard, ledger))
        assert batch.id.startswith("msgbatch_")
        assert pending == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))
        expected = 2 * real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10})
        assert figures(ledger, user_key("b-raw")) == (pytest.approx(expected, abs=2e-6), 0.0)
    assert [(e.usage_source, e.charged, e.error) for e in sink.events] == [("none", False, None),
                                                                          ("response", True, None)]


def test_a_served_model_without_a_price_is_never_settled_at_zero(server: FakeLlmServer, sqlite_url: str) -> None:
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    usage = {"input_tokens": 42, "output_tokens": 10}
    headers = {"x-fake-model": "acme-private-llm-7"}
    with open_ledger(sqlite_url) as ledger:
        # the creating process knows the requested model and prices the results with it
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger)
        with connect(server, guard) as client, attribution(user="b-8"):
            batch = client.messages.batches.create(requests=reqs, extra_headers=headers)
            list(client.messages.batches.results(batch.id))
        assert figures(ledger, user_key("b-8"))[0] == pytest.approx(2 * real_cost("claude-haiku-4-5", usage), abs=2e-6)
        # another process reads the requested model from the batch's record in the ledger
        with connect(server, guard) as client, attribution(user="b-9"):
            batch = client.messages.batches.create(requests=reqs, extra_headers=headers)
        other = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger)
        with connect(server, other) as client:
            list(client.messages.batches.results(batch.id))
        assert figures(ledger, user_key("b-9")) == (pytest.approx(2 * real_cost("claude-haiku-4-5", usage), abs=2e-6),
                                                    0.0)
        # requests for two models: no one model to price them with, so the record's worst case
        mixed = requests("claude-haiku-4-5", "claude-sonnet-4-6")
        with connect(server, guard) as client, attribution(user="b-10"):
            batch = client.messages.batches.create(requests=mixed, extra_headers=headers)
        with connect(server, other) as client:
            list(client.messages.batches.results(batch.id))
        assert figures(ledger, user_key("b-10")) == (pytest.approx(worst_case(mixed), abs=2e-6), 0.0)
        # no record (its attribution too long to keep): the worst case the batch's marker held
        with connect(server, guard) as client, attribution(user="b-11", feature="f" * 2000):
            batch = client.messages.batches.create(requests=reqs, extra_headers=headers)
        with connect(server, other) as client:
            list(client.messages.batches.results(batch.id))
        assert figures(ledger, user_key("b-11")) == (pytest.approx(worst_case(reqs), abs=2e-6), 0.0)
        assert figures(ledger, marker_key(batch.id)) == (pytest.approx(worst_case(reqs), abs=2e-6), 0.0)


def test_without_a_ledger_the_results_are_reported_once(server: FakeLlmServer) -> None:
    sink = ListSink()
    guard = CallGuard(compile_policies(budget_policy(1.0)), sinks=[sink])
    with connect(server, guard) as client, attribution(user="b-10"):
        batch = client.messages.batches.create(requests=requests("claude-haiku-4-5"))
        list(client.messages.batches.results(batch.id))
        list(client.messages.batches.results(batch.id))
    created, settled = sink.events
    assert created.cost_usd == 0.0 and created.usage_source == "none"
    assert settled.cost_usd == pytest.approx(real_cost("claude-haiku-4-5", {"input_tokens": 42, "output_tokens": 10}))
    assert settled.usage_source == "response" and not settled.charged and settled.reservation_id is None


def test_marker_alerts_never_reach_the_application(server: FakeLlmServer, sqlite_url: str) -> None:
    seen: list[Alert] = []
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, on_alert=seen.append, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-11"):
            batch = client.messages.batches.create(requests=requests("claude-haiku-4-5"))
            list(client.messages.batches.results(batch.id))
        assert figures(ledger, user_key("b-11"))[0] > 0
    # the ledger raised the marker's 0 % alert to the settlement; the guard keeps it to itself
    assert seen == [] and sink.events[-1].charged and sink.events[-1].alerts == ()


class RefusingBatchHolds:
    """A ledger on which the batch's named reservation is refused: its id was refused before (the
    only way a reservation whose holds are unchecked can be refused)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reserve(self, reservation_id: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        if reservation_id.startswith("cw-batch-"):
            holds = [Hold("budget:taken", 1.0, 0.5)]  # refused, and the refusal recorded, by the real store
        return self.inner.reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)


def test_a_hold_that_cannot_move_is_charged_its_worst_case_at_creation(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    with open_ledger(sqlite_url) as inner:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=RefusingBatchHolds(inner), sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-12"):
            batch = client.messages.batches.create(requests=reqs)
            assert figures(inner, user_key("b-12")) == (pytest.approx(worst_case(reqs), abs=2e-6), 0.0)
            list(client.messages.batches.results(batch.id))
        assert figures(inner, user_key("b-12")) == (pytest.approx(worst_case(reqs), abs=2e-6), 0.0)
    (created,) = sink.events  # the results add nothing: the batch was charged when it was created
    assert created.charged and created.cost_usd == pytest.approx(worst_case(reqs))
    assert created.usage_source == "estimate" and "was refused before" in (created.error or "")


class RacingCall:
    """A ledger on which another call reserves everything the budget has left at the very moment
    the batch's hold moves to its name (just before the named reservation is made)."""

    def __init__(self, inner: Any, key: str, limit: float) -> None:
        self.inner, self.key, self.limit = inner, key, limit
        self.rival: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reserve(self, reservation_id: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        if reservation_id.startswith("cw-batch-") and self.rival is None:
            settled, held = figures(self.inner, self.key)
            left = round(self.limit - settled - held, 6)
            self.rival = self.inner.reserve("rival", [Hold(self.key, left, self.limit)], ttl_s=600, now=now)
        return self.inner.reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)


@pytest.mark.parametrize("store", ["sqlite", "redis", "postgres"])
def test_no_other_call_can_take_a_batch_budget_while_its_hold_moves(
    server: FakeLlmServer, store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The named reservation is made (unchecked: the pre-send one admitted the spend) before the
    pre-send one is released, so a call racing the move only gets what the budget has left beside
    the batch; the batch keeps its hold and is settled from its results, and nothing passes the limit."""
    unique = uuid.uuid4().hex[:8]
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path}/ledger.db",
        "redis": lambda: f"{REDIS_URL}?prefix={request.getfixturevalue('redis_run')}-{unique}&timeout=2",
        "postgres": lambda: f"{request.getfixturevalue('postgres_db')}?table_prefix=r{unique}_",
    }[store]()
    sink, limit = ListSink(), 0.01
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    key = user_key("b-13")
    with open_ledger(url) as inner:
        racing = RacingCall(inner, key, limit)
        guard = CallGuard(compile_policies(budget_policy(limit)), ledger=racing, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-13"):
            batch = client.messages.batches.create(requests=reqs)
            assert racing.rival is not None and racing.rival.granted
            settled, held = figures(inner, key)
            assert settled == 0.0 and held == pytest.approx(limit, abs=2e-6)  # the batch's hold and the rival's
            (created,) = sink.events
            assert created.reservation_id == reservation_id(batch.id) and not created.charged and created.error is None
            list(client.messages.batches.results(batch.id))
        inner.release("rival", now=datetime.now(UTC))
        settled, held = figures(inner, key)
    assert held == 0.0 and 0 < settled < worst_case(reqs)  # settled from the results, not at its worst case
    assert sink.events[-1].charged and sink.events[-1].usage_source == "response"


def test_results_read_after_the_hold_expired_still_settle(server: FakeLlmServer, sqlite_url: str) -> None:
    """Results can be downloaded for 29 days: the batch's record outlives its 26 h hold (and the
    store's record grace), so reading them days later still charges the window the hold was taken in.
    (Every store keeps a record ``keep_s``: ``test_retention.py``, ``test_redis.py``.)"""
    sink = ListSink()
    created = datetime.now(UTC)
    clock = [created]
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink], clock=lambda: clock[0])
        with connect(server, guard) as client, attribution(user="b-14"):
            batch = client.messages.batches.create(requests=requests("claude-haiku-4-5", "claude-haiku-4-5"))
            clock[0] = created + timedelta(days=3)
            assert ledger.spent([user_key("b-14")], now=clock[0]) == [0.0]  # the hold has lapsed
            ledger.reserve("another-call", [Hold("budget:other", 0.01)], ttl_s=60, now=clock[0])  # sweeps
            list(client.messages.batches.results(batch.id))
        (spent,) = ledger.spent([user_key("b-14")], now=created)
    settled = sink.events[-1]
    assert settled.charged and settled.error is None and settled.usage_source == "response"
    assert settled.cost_usd > 0 and spent == pytest.approx(settled.cost_usd, abs=2e-6)


# --- the sweep of batches nobody read (enforcers/pending_batches.py) ---------------------------------


def test_a_sweep_settles_the_ended_batches_nobody_read(server: FakeLlmServer, store_url: str) -> None:
    sink = ListSink()
    ended_reqs, running_reqs = requests("claude-haiku-4-5", "claude-haiku-4-5"), requests("claude-sonnet-4-6")
    with open_ledger(store_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-sweep"):
            ended = client.messages.batches.create(
                requests=ended_reqs, extra_headers={"x-fake-usage": json.dumps(CACHED_USAGE)}
            )
            running = client.messages.batches.create(
                requests=running_reqs, extra_headers={"x-fake-batch-status": "in_progress"}
            )
        held = worst_case(ended_reqs) + worst_case(running_reqs)
        assert figures(ledger, user_key("b-sweep")) == (0.0, pytest.approx(held, abs=2e-6))

        plain = anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0)  # not guarded
        swept = guard.settle_pending_batches(plain)
        assert (swept.settled, swept.processing, swept.failed) == ((ended.id,), (running.id,), ())
        cost = 2 * real_cost("claude-haiku-4-5", CACHED_USAGE)
        assert figures(ledger, user_key("b-sweep")) == (
            pytest.approx(cost, abs=2e-6),
            pytest.approx(worst_case(running_reqs), abs=2e-6),
        )
        settled = [e for e in sink.events if e.charged]
        assert [(e.reservation_id, e.cost_usd) for e in settled] == [(reservation_id(ended.id), pytest.approx(cost))]

        again = guard.settle_pending_batches(plain)  # nothing charged twice; the running one waits
        assert (again.settled, again.processing) == ((), (running.id,))
        server.processing.discard(running.id)
        last = guard.settle_pending_batches(plain)
        assert last.settled == (running.id,)
        assert figures(ledger, user_key("b-sweep")) == (
            pytest.approx(cost + real_cost("claude-sonnet-4-6", {"input_tokens": 42, "output_tokens": 10}), abs=2e-6),
            0.0,
        )
        assert guard.settle_pending_batches(plain) == type(last)()  # nothing pending
        assert len([e for e in sink.events if e.charged]) == 2
        plain.close()


def test_a_sweep_through_the_guarded_client_settles_once(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-sweep2"):
            batch = client.messages.batches.create(requests=requests("claude-haiku-4-5"))
            swept = guard.settle_pending_batches(client)
        assert swept.settled == (batch.id,)
        assert figures(ledger, user_key("b-sweep2")) == (pytest.approx(real_cost("claude-haiku-4-5", {
            "input_tokens": 42, "output_tokens": 10}), abs=2e-6), 0.0)
        assert len([e for e in sink.events if e.charged]) == 1


def test_a_batch_the_api_cannot_find_keeps_its_hold(server: FakeLlmServer, sqlite_url: str) -> None:
    reqs = requests("claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger)
        with connect(server, guard) as client, attribution(user="b-sweep3"):
            batch = client.messages.batches.create(requests=reqs)
        server.batches.pop(batch.id)  # deleted, or another account's
        plain = anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0)
        swept = guard.settle_pending_batches(plain)
        plain.close()
        assert swept.settled == () and [b for b, _ in swept.failed] == [batch.id]
        assert "404" in swept.failed[0][1] or "not_found" in swept.failed[0][1]
        assert figures(ledger, user_key("b-sweep3")) == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))


def test_a_sweep_needs_a_ledger_that_lists_its_holds(server: FakeLlmServer) -> None:
    class Bare:  # a Ledger without status()
        def spent(self, keys: Any, *, now: Any) -> list[float]:
            return [0.0 for _ in keys]

    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=Bare())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ledger that lists its holds"):
        guard.settle_pending_batches(object())


@pytest.mark.parametrize("form", ["sdk objects", "jsonl file"])
def test_results_handed_in_as_read_settle_their_real_cost(
    server: FakeLlmServer, sqlite_url: str, tmp_path: Path, form: str
) -> None:
    # a plain (unguarded) client reads SDK objects, a download is JSONL text: priced, never settled at $0
    sink = ListSink()
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-sdk"):
            batch = client.messages.batches.create(
                requests=reqs, extra_headers={"x-fake-usage": json.dumps(CACHED_USAGE)}
            )
        with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as plain:
            lines = list(plain.messages.batches.results(batch.id))
        if form == "jsonl file":
            (tmp_path / "results.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\r\n" for r in lines))
            with (tmp_path / "results.jsonl").open() as text:
                assert settle_batch(guard, batch.id, text)
        else:
            assert settle_batch(guard, batch.id, lines)
        cost = 2 * real_cost("claude-haiku-4-5", CACHED_USAGE)
        assert figures(ledger, user_key("b-sdk")) == (pytest.approx(cost, abs=2e-6), 0.0)
        assert sink.events[-1].cost_usd == pytest.approx(cost) and sink.events[-1].charged


def test_results_not_understood_are_not_settled_at_zero(server: FakeLlmServer, sqlite_url: str) -> None:
    sink = ListSink()
    reqs = requests("claude-haiku-4-5")
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(1.0)), ledger=ledger, sinks=[sink])
        with connect(server, guard) as client, attribution(user="b-odd"):
            batch = client.messages.batches.create(requests=reqs)
        assert not settle_batch(guard, batch.id, [{"custom_id": "r0", "result": "succeeded"}])
        assert figures(ledger, user_key("b-odd")) == (0.0, pytest.approx(worst_case(reqs), abs=2e-6))
        assert len(sink.events) == 1


def test_a_batch_create_sent_but_unanswered_is_charged_its_worst_case(server: FakeLlmServer, sqlite_url: str) -> None:
    """The API may have created the batch (here it did, twice: the SDK retried the timed-out
    create), so each sent attempt is charged the batch's worst case, not only its input."""
    reqs = requests("claude-haiku-4-5", "claude-haiku-4-5")
    sink = ListSink()
    with open_ledger(sqlite_url) as ledger:
        guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
        client = anthropic.Anthropic(base_url=server.url, api_key="test", middleware=[guard], max_retries=1,
                                     timeout=0.5)
        with client, attribution(user="b-lost"), pytest.raises(anthropic.APITimeoutError):
            client.messages.batches.create(requests=reqs, extra_headers={"x-fake-delay-ms": "800"})
        settled, held = figures(ledger, user_key("b-lost"))
    assert len(server.posts("/v1/messages/batches")) == 2  # both attempts reached the API
    (event,) = sink.events
    assert event.cost_usd == pytest.approx(2 * worst_case(reqs), rel=1e-6) and event.charged
    assert (settled, held) == (pytest.approx(2 * worst_case(reqs), abs=2e-6), 0.0)
