"""``images.generate`` under the call-guard: the real ``openai`` SDK (sync and async) against the
fake API's ``/v1/images/generations`` (``fake_openai_images.py``), whose usage counts the prompt's
words and bills each image OpenAI's ``gpt-image-1`` output tokens for its size and quality, so every
cost here is exact."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, spent_today  # noqa: E402
from openai_guard_support import (  # noqa: E402
    async_retried_then_refused,
    budget_guard,
    own_client,
    refused_unpriced,
    reserved_once_and_settled,
    retried_then_exhausted,
    wrapped_async_call,
)

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded  # noqa: E402

IMAGE = "gpt-image-1"
PRICER = GenaiPricer()
PROMPT = "a small red fox"  # 15 chars: 4 tokens estimated; 4 words billed by the fake


def cost(input_tokens: int, output_tokens: int, model: str = IMAGE) -> float:
    return PRICER.cost("openai", model, TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens))


# --- reserve, send, settle from usage ---------------------------------------------------------------


def test_a_call_is_reserved_for_its_images_then_settled_from_its_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-i1", feature="art"):
        result = client.images.generate(model=IMAGE, prompt=PROMPT, n=2, size="1024x1536", quality="medium")
    assert [len(d.b64_json) > 0 for d in result.data] == [True, True]
    assert result.usage.output_tokens == 2 * 1584
    (sent,) = server.posts("/v1/images/generations")
    assert sent.body == {"model": IMAGE, "prompt": PROMPT, "n": 2, "size": "1024x1536", "quality": "medium"}
    hold, event = reserved_once_and_settled(ledger, sink)
    assert hold.amount_usd == pytest.approx(cost(4, 2 * 1584))
    assert (event.provider, event.api, event.model_requested, event.model) == ("openai", "images", IMAGE, IMAGE)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (4, 2 * 1584, 0)
    assert (event.user, event.feature, event.stream) == ("u-i1", "art", False)
    assert event.cost_usd == pytest.approx(4 * 5 / 1e6 + 2 * 1584 * 40 / 1e6)  # $5 / M text in, $40 / M out
    assert event.estimated_cost_usd == pytest.approx(cost(4, 2 * 1584))
    assert spent_today(ledger, "u-i1") == pytest.approx(event.cost_usd, abs=2e-6)
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


@pytest.mark.parametrize(
    ("options", "per_image", "images"),
    [
        ({"size": "1024x1024", "quality": "low"}, 272, 1),
        ({"size": "1536x1024", "quality": "high", "n": 3}, 6208, 3),
        ({"size": "1024x1024"}, 4160, 1),  # auto quality: high
        ({"quality": "medium", "n": 10}, 1584, 10),  # auto size: the largest at medium
        ({}, 6240, 1),  # both auto
    ],
)
def test_the_reserved_amount_is_the_prompt_and_n_images_at_their_size_and_quality(
    client: Any, ledger: CountingLedger, sink: ListSink, options: dict[str, Any], per_image: int, images: int
) -> None:
    with attribution(user="u-i2"):
        client.images.generate(model=IMAGE, prompt=PROMPT, **options)
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4, images * per_image))
    (event,) = sink.events
    assert event.cost_usd <= hold.amount_usd + 1e-9  # auto is served smaller than it was reserved for


def test_the_settlement_follows_the_usage_not_the_estimate(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    with attribution(user="u-i3"):  # auto is reserved as a high 1024x1536 image, served here at medium 1024x1024
        client.images.generate(model=IMAGE, prompt=PROMPT)
    (event,) = sink.events
    assert (event.input_tokens, event.output_tokens) == (4, 1056)
    assert event.cost_usd == pytest.approx(cost(4, 1056)) and event.cost_usd < event.estimated_cost_usd
    assert spent_today(ledger, "u-i3") == pytest.approx(cost(4, 1056), abs=2e-6)


def test_the_body_safety_identifier_attributes_the_call(client: Any, sink: ListSink, ledger: CountingLedger) -> None:
    client.images.generate(model=IMAGE, prompt="one two", size="1024x1024", quality="low", safety_identifier="u-body")
    (event,) = sink.events
    assert event.user == "u-body"
    assert spent_today(ledger, "u-body") == pytest.approx(cost(2, 272), abs=2e-6)


# --- image tokens at their own rates ----------------------------------------------------------------


def image_cost(model: str, text_in: int, image_in: int, output: int, image_out: int) -> float:
    usage = TokenUsage(input_tokens=text_in + image_in, output_tokens=output, input_image_tokens=image_in,
                       output_image_tokens=image_out)
    return PRICER.cost("openai", model, usage)


def test_gpt_image_1_5_is_reserved_and_settled_at_its_image_output_rate(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    """gpt-image-1.5 bills $10 / M text output but $32 / M image output: reserved and charged at
    $10, each call was a third of its cost."""
    with attribution(user="u-i13"):
        result = client.images.generate(model="gpt-image-1.5", prompt=PROMPT, n=2, size="1024x1024",
                                        quality="high")
    assert result.usage.output_tokens_details.image_tokens == 2 * 4160  # the SDK reads the fake's split
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx((4 * 5 + 2 * 4160 * 32) / 1e6)
    (event,) = sink.events
    assert (event.output_tokens, event.output_image_tokens, event.input_image_tokens) == (2 * 4160, 2 * 4160, 0)
    assert event.cost_usd == pytest.approx((4 * 5 + 2 * 4160 * 32) / 1e6)
    assert event.estimated_cost_usd == pytest.approx(hold.amount_usd)
    assert spent_today(ledger, "u-i13") == pytest.approx(event.cost_usd, abs=2e-6)


def test_the_text_share_of_gpt_image_1_5_output_is_settled_at_the_text_rate(client: Any, sink: ListSink) -> None:
    usage = json.dumps({"output_tokens": 1100, "output_text_tokens": 44})
    with attribution(user="u-i14"):
        client.images.generate(model="gpt-image-1.5", prompt=PROMPT, size="1024x1024", quality="medium",
                               extra_headers={"x-fake-usage": usage})
    (event,) = sink.events
    assert (event.output_tokens, event.output_image_tokens) == (1100, 1056)
    assert event.cost_usd == pytest.approx((4 * 5 + 44 * 10 + 1056 * 32) / 1e6)


@pytest.mark.parametrize(("model", "rate"), [("gpt-image-1", 10), ("gpt-image-1.5", 8)])
def test_an_input_image_share_is_settled_at_the_input_image_rate(
    client: Any, ledger: CountingLedger, sink: ListSink, model: str, rate: float
) -> None:
    with attribution(user="u-i15"):
        client.images.generate(model=model, prompt=PROMPT, size="1024x1024", quality="low",
                               extra_headers={"x-fake-usage": json.dumps({"image_tokens": 300})})
    (event,) = sink.events
    assert (event.input_tokens, event.input_image_tokens) == (304, 300)
    image_out = 272 if model == "gpt-image-1.5" else 0  # gpt-image-1 does not split its output
    out_rate = 32 if model == "gpt-image-1.5" else 40
    assert event.output_image_tokens == image_out
    assert event.cost_usd == pytest.approx((4 * 5 + 300 * rate + 272 * out_rate) / 1e6)
    assert event.cost_usd == pytest.approx(image_cost(model, 4, 300, 272, image_out))
    assert spent_today(ledger, "u-i15") == pytest.approx(event.cost_usd, abs=2e-6)


def test_gpt_image_1_is_charged_as_before(client: Any, sink: ListSink) -> None:
    """No output image rate: its $40 output rate is its image rate, split or not."""
    with attribution(user="u-i16"):
        client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="high")
    (event,) = sink.events
    assert (event.output_tokens, event.output_image_tokens) == (4160, 0)
    assert event.cost_usd == pytest.approx((4 * 5 + 4160 * 40) / 1e6)
    assert event.estimated_cost_usd == pytest.approx((4 * 5 + 4160 * 40) / 1e6)


def test_a_budget_holds_gpt_image_1_5_at_its_image_rate(server: FakeLlmServer, ledger: CountingLedger,
                                                        sink: ListSink) -> None:
    """$0.15 holds one high 1024x1024 gpt-image-1.5 image at $32 / M ($0.133), not two; at the $10
    text rate ($0.042 each) it held three."""
    with own_client(server, budget_guard(0.15, ledger=ledger, sink=sink)) as client, attribution(user="u-i17"):
        client.images.generate(model="gpt-image-1.5", prompt=PROMPT, size="1024x1024", quality="high")
        with pytest.raises(BudgetExceeded):
            client.images.generate(model="gpt-image-1.5", prompt=PROMPT, size="1024x1024", quality="high")
    assert len(server.posts("/v1/images/generations")) == 1
    assert [e.outcome for e in sink.events] == ["ok", "denied"]


# --- refused before sending ------------------------------------------------------------------------


def test_a_budget_that_cannot_hold_the_images_refuses_before_sending(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    guard = budget_guard(0.2, ledger=ledger, sink=sink)  # one high 1024x1024 image ($0.17) fits, not a second
    with own_client(server, guard) as client, attribution(user="u-i4"):
        client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="high")
        with pytest.raises(BudgetExceeded) as caught:
            client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="high")
    assert len(server.posts("/v1/images/generations")) == 1  # the refused call never reached the API
    assert "would exceed budget budget:user-budget/cap:user=u-i4" in str(caught.value)  # the atomic reserve refused
    assert [e.outcome for e in sink.events] == ["ok", "denied"]
    assert (ledger.count("reserve"), ledger.count("settle")) == (2, 1)  # the second reservation was refused
    assert spent_today(ledger, "u-i4") == pytest.approx(cost(4, 4160), abs=2e-6)


def test_n_images_are_refused_when_n_of_them_do_not_fit(server: FakeLlmServer, sink: ListSink) -> None:
    guard = budget_guard(0.05, ledger=MemoryLedger(), sink=sink)  # four low images ($0.0435) fit, five do not
    with own_client(server, guard) as client, attribution(user="u-i5"):
        client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="low", n=4)
        with pytest.raises(BudgetExceeded):
            client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="low", n=5)
    assert [r.body["n"] for r in server.posts("/v1/images/generations")] == [4]


@pytest.mark.parametrize("model", ["dall-e-3", "dall-e-2", "gpt-image-9-secret"])
def test_an_unpriced_image_model_is_refused_never_priced_at_zero(
    server: FakeLlmServer, sink: ListSink, model: str
) -> None:
    message = refused_unpriced(server, sink, lambda c: c.images.generate(model=model, prompt="hello",
                                                                         size="1024x1024"), user="u-i6")
    assert f"no price for model '{model}'" in message  # the budget errs, onError denies


def test_a_streamed_call_reserves_its_partial_images_and_settles_from_its_completed_events(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    """Each partial image bills 100 output tokens more; the usage comes in each image's
    ``image_generation.completed`` event, which the app reads as it always does."""
    with attribution(user="u-i7"):
        events = list(client.images.generate(model=IMAGE, prompt=PROMPT, n=2, size="1024x1024", quality="low",
                                             stream=True, partial_images=2))
    assert [e.type for e in events].count("image_generation.completed") == 2
    assert [e.type for e in events].count("image_generation.partial_image") == 4
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4, 2 * (272 + 200)))
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.stream) == ("ok", "stream", True)
    assert (event.input_tokens, event.output_tokens) == (2 * (4 // 2), 2 * (272 + 200))
    assert event.cost_usd == pytest.approx(cost(4, 2 * (272 + 200)))
    assert spent_today(ledger, "u-i7") == pytest.approx(event.cost_usd, abs=2e-6)


def test_a_stream_cut_before_its_last_image_is_charged_its_worst_case(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    """The image is billed once it is generated; its partial images tell nothing of its tokens."""
    with attribution(user="u-i7c"), pytest.raises(openai.APIError):
        for _ in client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="low", stream=True,
                                        partial_images=2, extra_headers={"x-fake-truncate": "1"}):
            pass
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.charged) == ("partial", "estimate", True)
    assert event.output_tokens == 272 + 200
    assert event.cost_usd == pytest.approx(cost(4, 272 + 200))
    assert "before its last image" in (event.error or "")
    assert spent_today(ledger, "u-i7c") == pytest.approx(event.cost_usd, abs=2e-6)


# --- failures ---------------------------------------------------------------------------------------


def test_retries_reserve_once_and_exhausted_retries_release(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    def generate(_: str) -> object:  # the same image each time
        return client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="low")

    retried_then_exhausted(server, ledger, sink, "/v1/images/generations", generate, cost(4, 272), user="u-i9")
    assert spent_today(ledger, "u-i9") == pytest.approx(cost(4, 272), abs=2e-6)


# --- async ------------------------------------------------------------------------------------------


def test_the_async_client_is_guarded_alike(server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger,
                                           sink: ListSink) -> None:
    result = async_retried_then_refused(
        server, guard, lambda client: client.images.generate(model=IMAGE, prompt=PROMPT, size="1536x1024",
                                                             quality="low", n=2),
        lambda client: client.images.generate(model="dall-e-3", prompt="e"), user="u-i10")
    assert len(result.data) == 2
    assert len(server.posts("/v1/images/generations")) == 2  # the failed attempt and its retry; the refused call none
    # a settler thread may report the first call after the refusal of the second
    ok, denied = sorted(sink.events, key=lambda e: e.outcome != "ok")
    assert [(e.api, e.outcome, e.output_tokens) for e in (ok, denied)] == [
        ("images", "ok", 800), ("images", "denied", 0)]
    assert ok.cost_usd == pytest.approx(cost(4, 800))
    assert ledger.count("reserve") == 1
    assert spent_today(ledger, "u-i10") == pytest.approx(cost(4, 800), abs=2e-6)


def test_guard_openai_wraps_an_async_client_for_images(server: FakeLlmServer, guard: CallGuard,
                                                       sink: ListSink) -> None:
    wrapped_async_call(server, guard, lambda c: c.images.generate(model=IMAGE, prompt="wrapped async call",
                                                                  size="1024x1024", quality="high"), user="u-i11")
    (event,) = sink.events
    assert (event.api, event.input_tokens, event.output_tokens, event.charged) == ("images", 3, 4160, True)
    assert event.cost_usd == pytest.approx(cost(3, 4160))


# --- the built-in library ---------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"size": "1024x1024", "quality": "low"}, {}])
def test_the_builtin_library_sends_an_images_request_unrewritten(
    server: FakeLlmServer, sink: ListSink, options: dict[str, Any]
) -> None:
    """A chat model or a ``max_tokens`` would make ``/images/generations`` answer 400: the library's
    tiers exclude image calls and ``maxOutputTokens`` skips them (no field caps their output), so
    the call goes out as asked, with its budgets held and charged."""
    import costwarden

    guard = CallGuard(costwarden.load_policies(), ledger=MemoryLedger(), sinks=[sink])
    with own_client(server, guard) as client, attribution(user="u-i12", feature="art"):
        client.images.generate(model=IMAGE, prompt=PROMPT, **options)
    (sent,) = server.posts()
    assert sent.body["model"] == IMAGE and "max_tokens" not in sent.body
    (event,) = sink.events
    assert (event.outcome, event.charged, event.rewrites) == ("ok", True, ())
