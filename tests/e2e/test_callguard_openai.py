"""The call-guard as an ``httpx2`` transport under the real ``openai`` SDK, against a local API."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    budget_policy,
    compile_policies,
    proof_total,
    run_load,
)
from fake_llm_server import (  # noqa: E402
    spent_today as user_spent,
)
from guard_support import calls_holding  # noqa: E402

from costwarden.adapters.events.jsonl import read_events  # noqa: E402
from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import INCLUDE_USAGE, guard_openai, openai_http_client  # noqa: E402
from costwarden.enforcers.settler import flush_all  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded, PolicyViolation  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]
PRICER = GenaiPricer()
NO_COMPLEX = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: no-complex}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: standard-or-below
      allowedModels: {default: ["tier:standard", "tier:simple"], onViolation: deny}
"""


def cost(model: str, **usage: int) -> float:
    return PRICER.cost("openai", model, TokenUsage(**usage))



@pytest.fixture(params=["inline", "background"])
def guard(ledger: CountingLedger, sink: ListSink, request: pytest.FixtureRequest) -> Iterator[CallGuard]:
    """The guard, settling inline and on its settler thread (the helpers read after a flush)."""
    guard = CallGuard(compile_policies(budget_policy(5.0) + "---" + NO_COMPLEX), ledger=ledger, sinks=[sink],
                      settle_in_background=request.param == "background")
    yield guard
    guard.close()


def connect(server: FakeLlmServer, guard: CallGuard, **options: Any) -> Any:
    retries = options.pop("max_retries", 2)
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=retries,
                         http_client=openai_http_client(guard, max_retries=retries), **options)


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with connect(server, guard) as c:
        yield c


def test_denied_call_sends_nothing(client: Any, server: FakeLlmServer, sink: ListSink) -> None:
    with attribution(user="u-1"), pytest.raises(PolicyViolation) as caught:
        client.chat.completions.create(model="o3", max_tokens=64, messages=HI)
    assert server.posts() == []
    assert caught.value.decision.blocking[0].policy == "no-complex"
    assert [e.outcome for e in sink.events] == ["denied"]


def test_builtin_library_rewrites_reach_the_server(server: FakeLlmServer, builtin_policies: Any) -> None:
    sink = ListSink()
    guard = CallGuard(builtin_policies, ledger=MemoryLedger(), sinks=[sink])
    with connect(server, guard) as client, attribution(feature="classify", user="u-2"):
        client.chat.completions.create(model="gpt-4.1", max_tokens=8192, messages=HI)
    sent = server.posts("/v1/chat/completions")[-1].body
    assert (sent["model"], sent["max_tokens"]) == ("gpt-4.1-mini", 256)
    (event,) = sink.events
    assert set(event.rewrites) == {"downgrade model to gpt-4.1-mini", "clamp max_tokens to 256"}


def test_settles_the_genai_prices_cost_with_cached_tokens(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    from genai_prices import Usage, calc_price

    with attribution(user="u-3"):
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, extra_headers={
            "x-fake-usage": json.dumps({"input_tokens": 200, "cached_tokens": 1800, "output_tokens": 40})})
    expected = float(calc_price(Usage(input_tokens=2000, output_tokens=40, cache_read_tokens=1800),
                                model_ref="gpt-4.1-mini", provider_id="openai").total_price)
    (event,) = sink.events
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (200, 1800, 40)
    assert event.cost_usd == pytest.approx(expected, rel=1e-9)
    assert user_spent(ledger, "u-3") == pytest.approx(expected, abs=1e-6)


def test_streams_get_include_usage_and_the_extra_chunk_is_hidden(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    with attribution(user="u-4"):
        chunks = list(client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True))
        own = list(client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True,
                                                  stream_options={"include_usage": True}))
    first, second = server.posts("/v1/chat/completions")
    assert first.body["stream_options"] == {"include_usage": True}
    assert first.headers["accept-encoding"] == "identity"
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk did not reach the caller
    assert own[-1].choices == [] and own[-1].usage is not None  # the caller asked for it: kept
    assert second.body["stream_options"] == {"include_usage": True}
    expected = cost("gpt-4.1-mini", input_tokens=42, output_tokens=10)
    assert [(e.usage_source, e.cost_usd) for e in sink.events] == [("stream", pytest.approx(expected))] * 2
    assert sink.events[0].rewrites == (INCLUDE_USAGE,) and sink.events[1].rewrites == ()


def test_responses_api_plain_and_streamed(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    with attribution(user="u-5"):
        client.responses.create(model="gpt-4.1-mini", input="Hello there", max_output_tokens=64)
        list(client.responses.create(model="gpt-4.1-mini", input="Hello there", max_output_tokens=64, stream=True))
    expected = cost("gpt-4.1-mini", input_tokens=42, output_tokens=10)
    assert [(e.api, e.usage_source) for e in sink.events] == [("responses", "response"), ("responses", "stream")]
    assert [e.cost_usd for e in sink.events] == [pytest.approx(expected)] * 2
    assert user_spent(ledger, "u-5") == pytest.approx(2 * expected, abs=2e-6)


CAP_OUTPUT = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: cap-output}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: cap
      maxOutputTokens: {limit: 32}
"""


def test_a_responses_call_from_a_stored_prompt_is_judged_as_responses(server: FakeLlmServer, sink: ListSink) -> None:
    # No `input`: the prompt template holds it. It must not get Chat Completions fields.
    guard = CallGuard(compile_policies(CAP_OUTPUT), ledger=MemoryLedger(), sinks=[sink])
    with connect(server, guard) as client, attribution(user="u-prompt"):
        list(client.responses.create(model="gpt-4.1-mini", prompt={"id": "pmpt_abc", "variables": {"x": "y"}},
                                     max_output_tokens=64, stream=True))
    guard.close()
    sent = server.posts("/v1/responses")[-1].body
    assert "stream_options" not in sent and "max_completion_tokens" not in sent
    assert sent["max_output_tokens"] == 32
    (event,) = sink.events
    assert (event.api, event.usage_source) == ("responses", "stream")
    assert event.rewrites == ("clamp max_output_tokens to 32",)


def test_n_completions_reserve_n_times_the_output(server: FakeLlmServer) -> None:
    """Each of ``n`` choices may use ``max_completion_tokens``: a budget that holds one such call's
    worst case but not three refuses ``n=3`` before sending; ``n=1`` goes ahead."""
    one_choice = cost("gpt-4.1", input_tokens=10, output_tokens=4000)
    guard = CallGuard(compile_policies(budget_policy(round(2.5 * one_choice, 6))), ledger=MemoryLedger())
    with connect(server, guard) as client, attribution(user="u-n"):
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(model="gpt-4.1", max_completion_tokens=4000, n=3, messages=HI)
        assert server.posts() == []
        client.chat.completions.create(model="gpt-4.1", max_completion_tokens=4000, n=1, messages=HI)
    assert len(server.posts("/v1/chat/completions")) == 1
    guard.close()


def test_retries_reserve_once(client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink) -> None:
    server.fail_next(500, 429)
    with attribution(user="u-6"):
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
    assert len(server.posts()) == 3
    assert (ledger.count("reserve"), ledger.count("settle"), ledger.count("release")) == (1, 1, 0)
    assert [e.outcome for e in sink.events] == ["ok"]


def test_exhausted_retries_release(client: Any, server: FakeLlmServer, ledger: CountingLedger,
                                   sink: ListSink) -> None:
    server.fail_next(500, 500, 500)
    with attribution(user="u-7"), pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
    assert (ledger.count("reserve"), ledger.count("release")) == (1, 1)
    assert [(e.outcome, e.cost_usd) for e in sink.events] == [("error", 0.0)]


def test_timeout_after_send_is_charged_the_input(server: FakeLlmServer, guard: CallGuard, sink: ListSink) -> None:
    body = {"model": "gpt-4.1-mini", "max_tokens": 64, "messages": HI}
    with connect(server, guard, max_retries=1, timeout=0.3) as client, attribution(user="u-8"), pytest.raises(
        openai.APITimeoutError
    ):
        client.chat.completions.create(**body, extra_headers={"x-fake-delay-ms": "1500"})
    (event,) = sink.events
    per_attempt = guard.estimate(subject_from_request(body), output=False) or 0.0
    assert event.outcome == "error" and event.cost_usd == pytest.approx(2 * per_attempt)  # two attempts were sent


def test_stream_closed_early_is_charged_what_it_used(client: Any, sink: ListSink, guard: CallGuard) -> None:
    with attribution(user="u-9"):
        stream = client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True,
                                                extra_headers={"x-fake-event-delay-ms": "30"})
        next(iter(stream))
        next(iter(stream))
        stream.close()
    (event,) = sink.events
    body = {"model": "gpt-4.1-mini", "max_tokens": 64, "messages": HI}
    assert event.outcome == "partial" and event.usage_source == "estimate"
    assert event.cost_usd >= (guard.estimate(subject_from_request(body), output=False) or 0.0) > 0


def test_async_client_through_guard_openai(server: FakeLlmServer, guard: CallGuard, sink: ListSink,
                                           ledger: CountingLedger) -> None:
    async def main() -> None:
        base = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test")
        client = guard_openai(base, guard)
        try:
            with attribution(user="u-10"):
                server.fail_next(500)
                await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
                stream = await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI,
                                                              stream=True)
                async for _ in stream:
                    pass
        finally:
            await client.close()
            await base.close()

    asyncio.run(main())
    assert [(e.outcome, e.usage_source) for e in sink.events] == [("ok", "response"), ("ok", "stream")]
    assert ledger.count("reserve") == 2
    assert user_spent(ledger, "u-10") == pytest.approx(sum(e.cost_usd for e in sink.events), abs=2e-6)


def test_other_endpoints_pass_through(client: Any, server: FakeLlmServer, sink: ListSink) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4.1-mini")
    assert sink.events == []


PROOF_LIMIT_USD = 0.004


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_concurrency_proof(store: str, server: FakeLlmServer, tmp_path: Path) -> None:
    """8 processes × 20 threads (memory: 1 × 160) of guarded Chat Completions against one $ budget."""
    url, processes = ("memory://", 1) if store == "memory" else (f"sqlite:///{tmp_path}/ledger.db", 8)
    args = (server.url, url, str(tmp_path / "events.jsonl"), budget_policy(PROOF_LIMIT_USD, name="proof-budget"),
            160 // processes, 3, "openai")
    if processes == 1:
        results = [run_load(*args)]
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.starmap(run_load, [args] * processes)
    admitted, denied = sum(r.admitted for r in results), sum(r.denied for r in results)
    assert [e for r in results for e in r.errors] == []
    assert admitted + denied == 480
    assert admitted > 0 and denied > 0
    events = read_events(tmp_path / "events.jsonl")
    assert sum(e["outcome"] == "ok" for e in events) == admitted == len(server.posts("/v1/chat/completions"))
    charged = sum(round(e["cost_usd"] * 1e6) for e in events if e["charged"]) / 1e6
    assert charged <= PROOF_LIMIT_USD
    if store == "memory":
        total = results[0].ledger_total
    else:
        with open_ledger(url) as ledger:
            total = proof_total(ledger)
    assert total == pytest.approx(charged, abs=1e-9)


# --- an application's own HTTP client -----------------------------------------------------------


class Recorded:
    """An application's own transport (here, a test double answering from memory), counting requests."""

    def __init__(self, *, stream_usage: bool = True) -> None:
        self.seen: list[dict[str, Any]] = []
        self.stream_usage = stream_usage

    def __call__(self, request: Any) -> Any:
        import httpx2

        body = json.loads(request.content)
        self.seen.append(body)
        base = {"id": "c-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "hi"}
            return httpx2.Response(200, json={**base, "object": "chat.completion", "usage": usage,
                                              "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        chunks = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                  for w in ("hel", "lo")]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def test_guard_openai_keeps_the_applications_own_http_client(guard: CallGuard, sink: ListSink,
                                                            ledger: CountingLedger) -> None:
    """A client made with its own http_client (a proxy, a custom transport) keeps it when guarded;
    responses that transport answers from memory are billed, and the usage chunk the guard asked
    for stays hidden."""
    import httpx2

    answer = Recorded()
    own = httpx2.Client(transport=httpx2.MockTransport(answer), headers={"x-app": "kept"})
    base = openai.OpenAI(base_url="https://llm.internal.example/v1", api_key="test", http_client=own)
    client = guard_openai(base, guard)
    with attribution(user="u-own"):
        reply = client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
        chunks = list(client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI, stream=True))
    assert reply.choices[0].message.content == "hi"
    assert [c.choices[0].delta.content for c in chunks] == ["hel", "lo"]  # no usage-only chunk
    assert len(answer.seen) == 2 and answer.seen[1]["stream_options"] == {"include_usage": True}
    flush_all(10)
    assert [(e.outcome, e.usage_source) for e in sink.events] == [("ok", "response"), ("ok", "stream")]
    one = cost("gpt-4.1-mini", input_tokens=12, output_tokens=2)
    assert [e.cost_usd for e in sink.events] == [pytest.approx(one), pytest.approx(one)]
    assert user_spent(ledger, "u-own") == pytest.approx(2 * one, abs=2e-6)
    assert client._client is not own and client._client.headers["x-app"] == "kept"

    client.close()  # the copy's close leaves the application's client working
    assert base.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI).choices
    assert len(sink.events) == 2  # and that client is not guarded
    base.close()


def test_guard_openai_guards_each_mounted_transport(guard: CallGuard, sink: ListSink) -> None:
    import httpx2

    direct, proxied = Recorded(), Recorded()
    own = httpx2.Client(transport=httpx2.MockTransport(direct),
                        mounts={"https://llm.internal.example": httpx2.MockTransport(proxied)})
    client = guard_openai(openai.OpenAI(base_url="https://llm.internal.example/v1", api_key="test", http_client=own),
                          guard)
    with attribution(user="u-mount"), pytest.raises(PolicyViolation):
        client.chat.completions.create(model="o3", max_tokens=64, messages=HI)  # judged on the mounted route
    with attribution(user="u-mount"):
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI)
    assert (len(direct.seen), len(proxied.seen)) == (0, 1)
    flush_all(10)
    assert [e.outcome for e in sink.events] == ["denied", "ok"]


def test_guard_openai_keeps_an_async_applications_own_http_client(guard: CallGuard, sink: ListSink) -> None:
    import httpx2

    answer = Recorded()

    async def main() -> list[Any]:
        own = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
        base = openai.AsyncOpenAI(base_url="https://llm.internal.example/v1", api_key="test", http_client=own)
        client = guard_openai(base, guard)
        with attribution(user="u-async-own"):
            stream = await client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, messages=HI,
                                                          stream=True)
            chunks = [c async for c in stream]
        await client.close()
        await base.close()
        return chunks

    chunks = asyncio.run(main())
    assert [c.choices[0].delta.content for c in chunks] == ["hel", "lo"]
    flush_all(10)
    assert [(e.outcome, e.usage_source) for e in sink.events] == [("ok", "stream")]
    assert sink.events[0].cost_usd == pytest.approx(cost("gpt-4.1-mini", input_tokens=12, output_tokens=2))


def test_guard_openai_says_so_when_it_cannot_keep_the_http_client(guard: CallGuard,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import httpx2

    from costwarden.enforcers.openai_guard import GuardedTransport

    own = httpx2.Client(transport=httpx2.MockTransport(Recorded()))
    del own._mounts  # as if a later httpx2 kept its transports elsewhere
    with caplog.at_level("WARNING", logger="costwarden.callguard"):
        client = guard_openai(openai.OpenAI(base_url="https://llm.internal.example/v1", api_key="t", http_client=own),
                              guard)
    assert "could not find the transports" in caplog.text
    assert isinstance(client._client._transport, GuardedTransport)  # still guarded: a new default client
    client.close()


# --- Responses in background mode -------------------------------------------------------------


def test_a_background_response_holds_its_worst_case_until_a_read_shows_it_ended(
    client: Any, server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    with attribution(user="u-bg", feature="research"):
        created = client.responses.create(model="gpt-4.1-mini", input="Write a long report", max_output_tokens=64,
                                          background=True)
    assert created.status == "queued"
    flush_all(10)
    (queued,) = sink.events
    assert (queued.cost_usd, queued.charged, queued.reservation_id) == (0.0, False, f"cw-bg-{created.id}")
    worst = queued.estimated_cost_usd
    assert worst and user_spent(ledger, "u-bg") == pytest.approx(worst, abs=2e-6)  # held, not spent

    server.processing.add(created.id)
    assert client.responses.retrieve(created.id).status == "in_progress"
    assert len(sink.events) == 1 and user_spent(ledger, "u-bg") == pytest.approx(worst, abs=2e-6)  # running: held
    server.processing.discard(created.id)
    assert client.responses.retrieve(created.id).status == "completed"
    flush_all(10)
    done = sink.events[1]
    assert (done.api, done.usage_source, done.charged, done.user, done.feature) == (
        "responses", "response", True, "u-bg", "research")
    assert done.output_tokens > 0 and done.cost_usd == pytest.approx(
        cost("gpt-4.1-mini", input_tokens=done.input_tokens, output_tokens=done.output_tokens))
    assert done.cost_usd < worst
    assert user_spent(ledger, "u-bg") == pytest.approx(done.cost_usd, abs=2e-6)

    assert client.responses.retrieve(created.id).status == "completed"  # read again: nothing more
    flush_all(10)
    assert len(sink.events) == 2 and user_spent(ledger, "u-bg") == pytest.approx(done.cost_usd, abs=2e-6)


def test_another_process_reading_a_background_response_settles_it_once(
    client: Any, server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger
) -> None:
    with attribution(user="u-bg2"):
        created = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64, background=True)
    readers = []
    for _ in range(2):  # two more guards on the same ledger, as other processes would be
        sink = ListSink()
        other = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
        with connect(server, other) as reader, attribution(user="reader"):
            reader.responses.retrieve(created.id)
        other.close()
        readers.append(sink)
    client.responses.retrieve(created.id)  # the creator reads it too, afterwards
    flush_all(10)
    (settled,) = readers[0].events
    assert readers[1].events == [] and settled.user == "u-bg2"  # the creator's, from the record in the ledger
    assert user_spent(ledger, "u-bg2") == pytest.approx(settled.cost_usd, abs=2e-6) and settled.cost_usd > 0


def test_a_background_response_read_through_an_async_client_settles(
    server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    async def main() -> None:
        client = guard_openai(openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test"), guard)
        with attribution(user="u-bg3"):
            created = await client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64,
                                                    background=True)
            assert (await client.responses.retrieve(created.id)).status == "completed"
        await client.close()

    asyncio.run(main())
    flush_all(10)
    queued, done = sink.events
    assert (queued.charged, done.charged, done.usage_source) == (False, True, "response")
    assert user_spent(ledger, "u-bg3") == pytest.approx(done.cost_usd, abs=2e-6)


def test_a_sweep_settles_the_background_responses_nobody_read_after_they_ended(
    client: Any, server: FakeLlmServer, guard: CallGuard, sink: ListSink, ledger: CountingLedger
) -> None:
    with attribution(user="u-bg4"):
        ended = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64, background=True)
        running = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64, background=True)
    server.processing.add(running.id)
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test") as plain:  # not guarded
        swept = guard.settle_pending_responses(plain)
        assert (swept.settled, swept.processing, swept.failed) == ((ended.id,), (running.id,), ())
        again = guard.settle_pending_responses(plain)
        assert (again.settled, again.processing) == ((), (running.id,))  # nothing settled twice
        server.processing.discard(running.id)
        assert guard.settle_pending_responses(plain).settled == (running.id,)
        assert guard.settle_pending_responses(plain) == type(swept)()  # nothing left
    flush_all(10)
    charged = [e for e in sink.events if e.charged]
    assert [e.reservation_id for e in charged] == [f"cw-bg-{ended.id}", f"cw-bg-{running.id}"]
    assert user_spent(ledger, "u-bg4") == pytest.approx(sum(e.cost_usd for e in charged), abs=2e-6)


@pytest.mark.parametrize("with_ledger", [False, True])
def test_reading_a_response_that_was_not_in_background_reports_nothing_more(
    server: FakeLlmServer, with_ledger: bool
) -> None:
    sink = ListSink()
    ledger = CountingLedger(MemoryLedger()) if with_ledger else None
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
    with connect(server, guard) as client, attribution(user="u-read"):
        created = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64,
                                          extra_headers={"x-fake-store": "1"})
        assert client.responses.retrieve(created.id).status == "completed"
    guard.close()
    (event,) = sink.events  # the creation's; the read is not a second cost
    assert event.cost_usd > 0 and event.usage_source == "response"
    if ledger is not None:
        assert user_spent(ledger, "u-read") == pytest.approx(event.cost_usd, abs=2e-6)
        assert ledger.count("settle") == 1


# --- what the guard keeps after a call ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_finished_call_and_its_prompt_are_not_kept_by_the_transport(client: Any, guard: CallGuard,
                                                                      stream: bool) -> None:
    marker = f"secret-prompt-{stream}"
    with attribution(user="u-keep"):
        answer = client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64, stream=stream,
                                                messages=[{"role": "user", "content": marker}])
        if stream:
            list(answer)
        del answer  # the application's own handle on the response
        guard.flush()
        assert calls_holding(marker) == []


def test_a_call_the_sdk_retries_is_found_by_its_retry(client: Any, server: FakeLlmServer, guard: CallGuard,
                                                      ledger: CountingLedger) -> None:
    server.fail_next(500)
    marker = "retried-prompt"
    with attribution(user="u-retried"):
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=64,
                                       messages=[{"role": "user", "content": marker}])
    guard.flush()
    assert len(server.posts("/v1/chat/completions")) == 2
    assert (ledger.count("reserve"), ledger.count("settle"), ledger.count("release")) == (1, 1, 0)
    assert calls_holding(marker) == []
