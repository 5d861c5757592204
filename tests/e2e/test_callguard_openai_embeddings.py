"""``embeddings.create`` under the call-guard: the real ``openai`` SDK (sync and async) against the
fake API's ``/v1/embeddings``, whose ``usage.prompt_tokens`` counts each string's words and each
token array's length, so every cost here is exact."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, budget_policy, spent_today  # noqa: E402
from llm_call_support import SMALL_EMBEDDINGS_ONLY as ONLY_SMALL  # noqa: E402
from openai_guard_support import (  # noqa: E402
    async_retried_then_refused,
    budget_error,
    budget_guard,
    model_catalog,
    own_client,
    refused_unpriced,
    reserved_once_and_settled,
    retried_then_exhausted,
    unguarded,
    wrapped_async_call,
)

from costwarden.adapters.ledger import open_ledger  # noqa: E402
from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai_embeddings import subject_from_request  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import guard_openai  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded, PolicyViolation  # noqa: E402

SMALL = "text-embedding-3-small"
PRICER = GenaiPricer()


def cost(tokens: int, model: str = SMALL) -> float:
    return PRICER.cost("openai", model, TokenUsage(input_tokens=tokens))


def reserved(**body: Any) -> float:
    """The worst case the guard reserves for an embeddings body: its estimated input alone."""
    return cost(subject_from_request({"model": SMALL, **body}).request.input_tokens, body.get("model", SMALL))


@pytest.fixture
def guard_policies() -> str:
    """The guard's (``conftest.py``): the $5 budget and the allowlist of embeddings models."""
    return budget_policy(5.0) + "\n---\n" + ONLY_SMALL


# --- reserve, send, settle from usage ---------------------------------------------------------------


def test_a_call_is_reserved_then_settled_from_its_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["the quick brown fox", "jumps over", "the lazy dog today"]  # 4 + 2 + 4 words: 10 tokens billed
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-e1", feature="rag"):
        result = client.embeddings.create(model=SMALL, input=texts)
    assert [len(d.embedding) for d in result.data] == [8, 8, 8]  # the SDK decoded the base64 it asked for
    assert all(isinstance(x, float) for x in result.data[0].embedding)
    (sent,) = server.posts("/v1/embeddings")
    assert sent.body == {"model": SMALL, "input": texts, "encoding_format": "base64"}
    hold, event = reserved_once_and_settled(ledger, sink)
    assert hold.amount_usd == pytest.approx(reserved(input=texts))
    assert (event.provider, event.api, event.model_requested, event.model, event.model_served) == (
        "openai", "embeddings", SMALL, SMALL, SMALL)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (10, 0, 0)
    assert (event.user, event.feature, event.stream) == ("u-e1", "rag", False)
    assert event.cost_usd == pytest.approx(cost(10)) and event.cost_usd > 0
    assert event.estimated_cost_usd == pytest.approx(reserved(input=texts))
    assert spent_today(ledger, "u-e1") == pytest.approx(cost(10), abs=2e-6)
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


def test_token_arrays_are_reserved_exactly_and_floats_come_back_as_floats(
    client: Any, server: FakeLlmServer, sink: ListSink
) -> None:
    arrays = [[15339, 1917, 0, 7], [9906] * 12]
    with attribution(user="u-e2"):
        result = client.embeddings.create(model=SMALL, input=arrays, encoding_format="float", dimensions=4)
    assert server.posts("/v1/embeddings")[-1].body["encoding_format"] == "float"
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert all(isinstance(x, float) for d in result.data for x in d.embedding)
    (event,) = sink.events
    assert event.input_tokens == 16 and event.estimated_cost_usd == pytest.approx(cost(16))
    assert event.cost_usd == pytest.approx(event.estimated_cost_usd)


def test_the_settlement_follows_the_usage_not_the_estimate(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    with attribution(user="u-e3"):  # billed more than the 2-token estimate: the usage is what counts
        client.embeddings.create(model=SMALL, input="hi", extra_headers={"x-fake-usage": '{"input_tokens": 5000}'})
    (event,) = sink.events
    assert event.input_tokens == 5000 and event.cost_usd == pytest.approx(cost(5000))
    assert event.cost_usd > event.estimated_cost_usd
    assert spent_today(ledger, "u-e3") == pytest.approx(cost(5000), abs=2e-6)


def test_the_body_user_attributes_the_call(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    client.embeddings.create(model=SMALL, input="one two", user="u-body")
    (event,) = sink.events
    assert event.user == "u-body"
    assert spent_today(ledger, "u-body") == pytest.approx(cost(2), abs=2e-6)


# --- refused before sending ------------------------------------------------------------------------


def test_a_budget_that_cannot_hold_the_input_refuses_before_sending(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    guard = budget_guard(0.00001, ONLY_SMALL, ledger=ledger, sink=sink)  # 500 tokens of $0.02/MTok fit, 1,000 do not
    with own_client(server, guard) as client, attribution(user="u-e4"):
        client.embeddings.create(model=SMALL, input=[[1] * 400])
        with pytest.raises(BudgetExceeded) as caught:
            client.embeddings.create(model=SMALL, input=[[1] * 1000])
    assert len(server.posts("/v1/embeddings")) == 1  # the refused call never reached the API
    assert caught.value.decision.blocking[0].policy == "user-budget"
    assert [e.outcome for e in sink.events] == ["ok", "denied"]
    assert ledger.count("reserve") == 1
    assert spent_today(ledger, "u-e4") == pytest.approx(cost(400), abs=2e-6)


def test_an_allowlist_on_the_model_applies(client: Any, server: FakeLlmServer, sink: ListSink) -> None:
    with attribution(user="u-e5"), pytest.raises(PolicyViolation) as caught:
        client.embeddings.create(model="text-embedding-3-large", input="hello")
    assert server.posts() == []
    assert caught.value.decision.blocking[0].policy == "embedders"
    assert [e.outcome for e in sink.events] == ["denied"]


def test_an_unknown_model_is_refused_not_priced_at_zero(server: FakeLlmServer, sink: ListSink) -> None:
    message = refused_unpriced(server, sink, lambda c: c.embeddings.create(model="text-embedding-9-secret",
                                                                           input="hello"), user="u-e6")  # as for chat
    assert "no price for model 'text-embedding-9-secret'" in message


# --- failures ---------------------------------------------------------------------------------------


def test_retries_reserve_once_and_exhausted_retries_release(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    retried_then_exhausted(server, ledger, sink, "/v1/embeddings",
                           lambda text: client.embeddings.create(model=SMALL, input=text), cost(2), user="u-e7")
    assert spent_today(ledger, "u-e7") == pytest.approx(cost(2), abs=2e-6)


def test_a_timeout_after_sending_is_charged_the_input(server: FakeLlmServer, ledger: CountingLedger,
                                                      sink: ListSink) -> None:
    guard = budget_guard(5.0, ONLY_SMALL, ledger=ledger, sink=sink)
    with own_client(server, guard, max_retries=0, timeout=0.3) as client, attribution(user="u-e8"), \
            pytest.raises(openai.APITimeoutError):
        client.embeddings.create(model=SMALL, input=[[3] * 300], extra_headers={"x-fake-delay-ms": "1500"})
    (event,) = sink.events
    assert (event.outcome, event.usage_source) == ("error", "estimate")
    assert event.cost_usd == pytest.approx(cost(300))


# --- async ------------------------------------------------------------------------------------------


def test_the_async_client_is_guarded_alike(server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger,
                                           sink: ListSink) -> None:
    result = async_retried_then_refused(
        server, guard, lambda client: client.embeddings.create(model=SMALL, input=["a b c", "d"]),
        lambda client: client.embeddings.create(model="text-embedding-3-large", input="e"), user="u-e9")
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert len(server.posts("/v1/embeddings")) == 2  # the failed attempt and its retry; the refused call none
    assert [(e.api, e.outcome, e.input_tokens) for e in sink.events] == [
        ("embeddings", "ok", 4), ("embeddings", "denied", 0)]
    assert sink.events[0].cost_usd == pytest.approx(cost(4))
    assert ledger.count("reserve") == 1
    assert spent_today(ledger, "u-e9") == pytest.approx(cost(4), abs=2e-6)


def test_guard_openai_wraps_an_async_client_for_embeddings(server: FakeLlmServer, guard: CallGuard,
                                                           sink: ListSink) -> None:
    wrapped_async_call(server, guard, lambda c: c.embeddings.create(model=SMALL, input="wrapped async call",
                                                                    encoding_format="float"), user="u-e10")
    (event,) = sink.events
    assert (event.api, event.input_tokens, event.charged) == ("embeddings", 3, True)


# --- a durable ledger -------------------------------------------------------------------------------


def test_the_sqlite_ledger_keeps_the_settled_cost(server: FakeLlmServer, sink: ListSink, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_ledger(url) as ledger:
        guard = budget_guard(5.0, ONLY_SMALL, ledger=ledger, sink=sink)
        with own_client(server, guard) as client, attribution(user="u-e11"):
            client.embeddings.create(model=SMALL, input=["one two three"] * 4)
    with open_ledger(url) as reopened:
        assert spent_today(reopened, "u-e11") == pytest.approx(cost(12), abs=2e-6)
    (event,) = sink.events
    assert (event.charged, event.input_tokens, event.cost_usd) == (True, 12, pytest.approx(cost(12)))


# --- a ModelCatalog price without an output price -----------------------------------------------------

INPUT_ONLY_CATALOG = model_catalog("input-only", '{model: "BAAI/bge-*", provider: vllm, inputPerMTok: 20}',
                                   '{model: "meta-llama/*", provider: vllm, inputPerMTok: 0.2}')


def test_a_catalog_embeddings_price_needs_no_output_price(server: FakeLlmServer, sink: ListSink) -> None:
    ledger = CountingLedger(MemoryLedger())
    guard = budget_guard(5.0, INPUT_ONLY_CATALOG, ledger=ledger, sink=sink)
    with guard_openai(unguarded(server), guard, provider="vllm") as c, attribution(user="u-e-bge"):
        c.embeddings.create(model="BAAI/bge-m3", input=["one two three", "four"])  # 4 words billed
    guard.close()
    (hold,) = ledger.calls[0][2]
    estimated = subject_from_request({"model": "BAAI/bge-m3", "input": ["one two three", "four"]}).request.input_tokens
    assert hold.amount_usd == pytest.approx(estimated * 20 / 1e6) and hold.amount_usd > 0
    (event,) = sink.events
    assert (event.provider, event.api, event.outcome, event.error) == ("vllm", "embeddings", "ok", None)
    assert (event.input_tokens, event.output_tokens) == (4, 0)
    assert event.cost_usd == pytest.approx(4 * 20 / 1e6) and event.charged
    assert spent_today(ledger, "u-e-bge") == pytest.approx(4 * 20 / 1e6, abs=2e-6)


def test_a_chat_model_without_an_output_price_is_refused_not_priced_at_zero(
    server: FakeLlmServer, sink: ListSink
) -> None:
    guard = budget_guard(5.0, INPUT_ONLY_CATALOG, ledger=MemoryLedger(), sink=sink)
    with guard_openai(unguarded(server), guard, provider="vllm") as c, \
            attribution(user="u-e-llama"), pytest.raises(PolicyViolation) as caught:
        c.chat.completions.create(model="meta-llama/Llama-3.1-8B", max_tokens=64,
                                  messages=[{"role": "user", "content": "Hi"}])
    guard.close()
    message = budget_error(server, caught.value)
    assert "no output-token price" in message and "meta-llama/Llama-3.1-8B" in message
    assert [e.outcome for e in sink.events] == ["denied"]
