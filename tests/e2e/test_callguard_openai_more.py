"""More of the call-guard under the real ``openai`` SDK: background streams, unguarded endpoints."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import (  # noqa: E402
    CountingLedger,
    FakeLlmServer,
    ListSink,
    budget_policy,
    compile_policies,
    spent_today,
)

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402

PRICER = GenaiPricer()
HI = [{"role": "user", "content": "Hello there"}]
LONG = json.dumps({"output_tokens": 1500})


def cost(model: str, **usage: int) -> float:
    return PRICER.cost("openai", model, TokenUsage(**usage))


@pytest.fixture
def client(server: FakeLlmServer, guard: CallGuard) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test",
                       http_client=openai_http_client(guard)) as c:
        yield c


# --- a streamed background response keeps running when its stream drops ----------------------------


def dropped_background_stream(client: Any) -> str:
    """A streamed background response whose connection drops after two events; its id."""
    stream = client.responses.create(model="gpt-4.1-mini", input="Write a long report", stream=True,
                                     background=True, max_output_tokens=2000,
                                     extra_headers={"x-fake-truncate": "2", "x-fake-usage": LONG})
    first = next(stream)
    assert first.type == "response.created"
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    return str(first.response.id)


def test_a_background_stream_that_drops_keeps_its_hold_until_a_read_shows_it_ended(
    client: Any, sink: ListSink, ledger: CountingLedger
) -> None:
    """OpenAI runs a background response to its end whatever happens to the stream that started it,
    and bills all of it: charging the dropped stream only what it showed lost most of the spend."""
    with attribution(user="u-bgs"):
        response_id = dropped_background_stream(client)
    (first,) = sink.events
    assert (first.charged, first.reservation_id) == (False, f"cw-bg-{response_id}")
    worst = first.estimated_cost_usd
    assert worst and spent_today(ledger, "u-bgs") == pytest.approx(worst, abs=2e-6)  # still held

    assert client.responses.retrieve(response_id).status == "completed"
    done = sink.events[1]
    expected = cost("gpt-4.1-mini", input_tokens=42, output_tokens=1500)
    assert (done.usage_source, done.output_tokens, done.user) == ("response", 1500, "u-bgs")
    assert done.cost_usd == pytest.approx(expected)
    assert spent_today(ledger, "u-bgs") == pytest.approx(expected, abs=2e-6)


def test_a_resumed_background_stream_settles_the_response(
    client: Any, sink: ListSink, ledger: CountingLedger
) -> None:
    """``responses.retrieve(id, stream=True)`` resumes the stream; its ``response.completed`` settles."""
    with attribution(user="u-bgr"):
        response_id = dropped_background_stream(client)
        events = list(client.responses.retrieve(response_id, stream=True))
    assert events[-1].type == "response.completed"
    expected = cost("gpt-4.1-mini", input_tokens=42, output_tokens=1500)
    assert [(e.charged, e.usage_source) for e in sink.events] == [(False, "none"), (True, "stream")]
    assert sink.events[1].cost_usd == pytest.approx(expected)
    assert spent_today(ledger, "u-bgr") == pytest.approx(expected, abs=2e-6)
    client.responses.retrieve(response_id)  # read again: nothing more
    assert len(sink.events) == 2 and spent_today(ledger, "u-bgr") == pytest.approx(expected, abs=2e-6)


def test_a_background_stream_read_to_its_end_is_billed_from_the_stream(client: Any, sink: ListSink) -> None:
    with attribution(user="u-bgf"):
        list(client.responses.create(model="gpt-4.1-mini", input="hi", stream=True, background=True,
                                     max_output_tokens=64))
    (event,) = sink.events
    assert (event.charged, event.usage_source) == (True, "stream")
    assert event.cost_usd == pytest.approx(cost("gpt-4.1-mini", input_tokens=42, output_tokens=10))


# --- billed endpoints the guard does not judge are said to pass, never silently ---------------------


def test_billed_endpoints_the_guard_passes_are_named_once_each(
    client: Any, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-pass"):
        for _ in range(2):
            with pytest.raises(openai.NotFoundError):  # the fake API has none of them
                client.post("/videos", body={"model": "sora-2", "prompt": "a cat"}, cast_to=object)
            with pytest.raises(openai.NotFoundError):
                client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file="file-1")
        with pytest.raises(openai.NotFoundError):
            client.moderations.create(model="omni-moderation-latest", input="hello")  # free: nothing to say
    said = [r.getMessage() for r in caplog.records if "billed but not guarded" in r.getMessage()]
    assert [m.split()[2] for m in said] == ["/v1/videos", "/v1/fine_tuning/jobs"]
    assert sink.events == []


# --- a model without a price ------------------------------------------------------------------------

CAP_ONLY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: cap-only}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: cap
      maxOutputTokens: {limit: 4096}
"""


@pytest.mark.parametrize("stream", [False, True])
def test_an_unpriced_model_without_a_budget_says_its_cost_is_unknown(
    server: FakeLlmServer, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An OpenAI-compatible server's own model (vLLM) under no budget: nothing priced it before or
    after, so its event must not claim a reserved estimate was charged while recording $0."""
    sink = ListSink()
    guard = CallGuard(compile_policies(CAP_ONLY), ledger=MemoryLedger(), sinks=[sink])
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", http_client=openai_http_client(guard)) as client, \
            caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-llama"):
        reply = client.chat.completions.create(model="meta-llama/Llama-3.1-8B-Instruct", messages=HI,
                                               max_tokens=20, stream=stream)
        if stream:
            list(reply)
    guard.close()
    (event,) = sink.events
    assert (event.outcome, event.cost_usd, event.estimated_cost_usd) == ("ok", 0.0, None)
    assert event.error is not None and "cost is unknown" in event.error and "charged the reserved" not in event.error
    assert any("cost is unknown" in r.getMessage() for r in caplog.records)


# --- reading a background response that was billed when it was made ----------------------------------


@pytest.mark.parametrize("with_ledger", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_reading_a_background_response_billed_at_its_creation_reports_nothing_more(
    server: FakeLlmServer, with_ledger: bool, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A background response streamed to its end (or already completed when created) was billed
    then; a later ``responses.retrieve`` is a read, not a second cost, and no error."""
    sink = ListSink()
    ledger = CountingLedger(MemoryLedger()) if with_ledger else None
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", http_client=openai_http_client(guard)) as client, \
            caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-bgread"):
        if stream:
            events = list(client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64,
                                                  background=True, stream=True))
            response_id = events[-1].response.id
        else:  # finished so fast that its creation answered it completed
            response_id = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=64,
                                                  extra_headers={"x-fake-store": "1"}).id
            server.responses[response_id]["background"] = True
        assert client.responses.retrieve(response_id).status == "completed"
    guard.close()
    (event,) = sink.events
    assert event.charged is with_ledger and event.cost_usd > 0
    if ledger is not None:
        assert spent_today(ledger, "u-bgread") == pytest.approx(event.cost_usd, abs=2e-6)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_reasoning_call_downgraded_to_a_model_that_does_not_reason_loses_its_reasoning_parameters(
    server: Any, builtin_policies: Any
) -> None:
    # o3 for classification is downgraded to gpt-4.1-mini, which answers 400 to reasoning_effort
    # (Chat Completions) and reasoning (Responses): the guard must not turn a valid call invalid
    import openai

    sink = ListSink()
    guard = CallGuard(builtin_policies, ledger=MemoryLedger(), sinks=[sink])
    hi = [{"role": "user", "content": "Classify: refund please"}]
    with openai.OpenAI(base_url=server.url + "/v1", api_key="t", http_client=openai_http_client(guard)) as client, \
            attribution(feature="classify", user="u-r"):
        client.chat.completions.create(model="o3", max_completion_tokens=200, reasoning_effort="high", messages=hi)
        client.responses.create(model="o3", input="Classify: refund please", reasoning={"effort": "low"},
                                max_output_tokens=200)
    chat, responses = server.posts("/v1/chat/completions")[-1].body, server.posts("/v1/responses")[-1].body
    assert chat["model"] == "gpt-4.1-mini" and "reasoning_effort" not in chat
    assert responses["model"] == "gpt-4.1-mini" and "reasoning" not in responses
    assert "drop reasoning_effort: gpt-4.1-mini does not reason" in sink.events[0].rewrites
    assert "drop reasoning: gpt-4.1-mini does not reason" in sink.events[1].rewrites
    guard.close()
