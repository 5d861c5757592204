"""``images.edit`` under the call-guard: the real ``openai`` SDK (sync and async) sends its
``multipart/form-data`` edits to the fake API's ``/v1/images/edits`` (``fake_openai_images.py``,
which parses them with the standard library and bills each input PNG OpenAI's GPT Image input
tokens), so every reserve and every settlement here is exact, and the bytes the server received
are compared with the bytes the SDK built."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

openai = pytest.importorskip("openai")

from fake_llm_server import CountingLedger, FakeLlmServer, ListSink, spent_today  # noqa: E402
from llm_call_support import llm_call_policy  # noqa: E402
from openai_guard_support import (  # noqa: E402
    budget_guard,
    connect_async,
    own_client,
    refused_unpriced,
    reserved_once_and_settled,
)

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import AsyncGuardedTransport, GuardedTransport, openai_http_client  # noqa: E402
from costwarden.engine.rules import base as rule_base  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import AdapterError, BudgetExceeded, PolicyViolation  # noqa: E402

IMAGE = "gpt-image-1"
PRICER = GenaiPricer()
PROMPT = "a small red fox"  # 15 chars: 4 tokens estimated; 4 words billed by the fake
EDITS = "/v1/images/edits"


def png(width: int, height: int) -> bytes:
    """A complete RGBA PNG: the SDK uploads it, the guard reads its IHDR, the fake bills its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"".join(b"\x00" + b"\x10\x20\x30\xff" * 4 for _ in range(4)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


FOX = png(1536, 1024)  # 323 input tokens (two tiles); 6,467 at high fidelity
SQUARE = png(1024, 1024)  # 194; 4,290 at high fidelity


def cost(input_tokens: int, output_tokens: int, image_in: int = 0, model: str = IMAGE) -> float:
    usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, input_image_tokens=image_in)
    return PRICER.cost("openai", model, usage)


class Recording(httpx2.BaseTransport):
    """In front of the guard: the bytes each request had as the SDK built it, before the guard saw it."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner, self.bodies = inner, []  # type: list[bytes]

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(request.read())
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncRecording(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner, self.bodies = inner, []  # type: list[bytes]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(await request.aread())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def guard(ledger: CountingLedger, sink: ListSink) -> Iterator[CallGuard]:
    """The guard of ``conftest.py``, settling inline only."""
    guard = budget_guard(5.0, ledger=ledger, sink=sink)
    yield guard
    guard.close()


# --- reserve, send unchanged, settle from usage ------------------------------------------------------


def test_an_edit_is_reserved_for_its_prompt_image_and_outputs_then_settled_from_its_usage(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-e1", feature="art"):
        result = client.images.edit(model=IMAGE, prompt=PROMPT, image=("fox.png", FOX, "image/png"), n=2,
                                    size="1024x1024", quality="medium")
    assert len(result.data) == 2 and result.usage.input_tokens_details.image_tokens == 323
    (sent,) = server.posts(EDITS)
    assert sent.body["fields"] == {"prompt": PROMPT, "model": IMAGE, "n": "2", "size": "1024x1024",
                                   "quality": "medium"}
    assert sent.body["files"] == [("image", "fox.png", "image/png", FOX)]
    hold, event = reserved_once_and_settled(ledger, sink)  # and settled as allowed
    # 4 text + 323 image tokens in, the image share at the input image rate
    assert hold.amount_usd == pytest.approx(cost(4 + 323, 2 * 1056, image_in=323))
    assert hold.amount_usd == pytest.approx((4 * 5 + 323 * 10 + 2 * 1056 * 40) / 1e6)
    assert (event.api, event.model) == ("images", IMAGE)
    assert (event.input_tokens, event.input_image_tokens, event.output_tokens) == (4 + 323, 323, 2 * 1056)
    assert event.cost_usd == pytest.approx((4 * 5 + 323 * 10 + 2 * 1056 * 40) / 1e6)  # image input at $10 / M
    assert event.cost_usd == pytest.approx(cost(4 + 323, 2 * 1056, image_in=323))
    assert event.estimated_cost_usd == pytest.approx(hold.amount_usd)
    assert spent_today(ledger, "u-e1") == pytest.approx(event.cost_usd, abs=2e-6)
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


def test_the_body_reaches_the_api_byte_for_byte_as_the_sdk_built_it(server: FakeLlmServer, guard: CallGuard) -> None:
    recording = Recording(GuardedTransport(guard))
    mask = png(1536, 1024)
    with openai.OpenAI(base_url=server.url + "/v1", api_key="test",
                       http_client=httpx2.Client(transport=recording)) as client, attribution(user="u-e2"):
        client.images.edit(model=IMAGE, prompt='un renard "roux" ✨', image=[("a.png", FOX, "image/png"),
                                                                           ("b.png", SQUARE, "image/png")],
                           mask=("m.png", mask, "image/png"), size="1024x1024", quality="low")
    (built,) = recording.bodies
    (sent,) = server.posts(EDITS)
    assert sent.body["raw"] == built  # the boundary, every header and every byte of every image
    assert sent.headers["content-length"] == str(len(built))
    assert [(name, data) for name, _, _, data in sent.body["files"]] == [("image[]", FOX), ("image[]", SQUARE),
                                                                         ("mask", mask)]


def test_the_mask_is_reserved_and_the_usage_decides_what_it_cost(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-e3"):
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("fox.png", FOX, "image/png"),
                           mask=("mask.png", FOX, "image/png"), size="1024x1024", quality="low")
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4 + 646, 272, image_in=646))  # the mask held as an image
    (event,) = sink.events
    assert (event.input_tokens, event.input_image_tokens) == (4 + 323, 323)  # this fake does not bill it
    assert spent_today(ledger, "u-e3") == pytest.approx(cost(4 + 323, 272, image_in=323), abs=2e-6)


@pytest.mark.parametrize(("image", "fidelity", "tokens"), [(FOX, "high", 323 + 6144), (SQUARE, "high", 194 + 4096),
                                                           (SQUARE, "low", 194)])
def test_high_input_fidelity_is_reserved_and_billed_by_the_images_shape(
    client: Any, ledger: CountingLedger, sink: ListSink, image: bytes, fidelity: str, tokens: int
) -> None:
    with attribution(user="u-e4"):
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("i.png", image, "image/png"), input_fidelity=fidelity,
                           size="1024x1024", quality="low")
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4 + tokens, 272, image_in=tokens))
    (event,) = sink.events
    assert event.input_image_tokens == tokens  # the fake bills what the guard estimated
    assert event.cost_usd == pytest.approx(cost(4 + tokens, 272, image_in=tokens))


def test_an_image_whose_size_the_guard_cannot_read_is_reserved_at_the_most(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-e5"):
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("i.jpg", b"\xff\xd8\xff\xd9", "image/jpeg"),
                           size="1024x1024", quality="low")
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4 + 581, 272, image_in=581))  # four tiles: never nothing
    (event,) = sink.events
    assert event.input_image_tokens == 194  # what the fake bills an image that is not a PNG


# --- refused before sending -------------------------------------------------------------------------


def test_a_budget_that_cannot_hold_the_edit_refuses_before_sending(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    guard = budget_guard(0.2, ledger=ledger, sink=sink)  # one high 1024x1024 edit ($0.168) fits, not a second
    with own_client(server, guard) as client, attribution(user="u-e6"):
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"), size="1024x1024",
                           quality="high")
        with pytest.raises(BudgetExceeded, match="would exceed budget budget:user-budget/cap:user=u-e6"):
            client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"), size="1024x1024",
                               quality="high")
    assert len(server.posts(EDITS)) == 1
    assert [e.outcome for e in sink.events] == ["ok", "denied"]
    assert spent_today(ledger, "u-e6") == pytest.approx(cost(4 + 194, 4160, image_in=194), abs=2e-6)


def test_the_input_images_alone_can_put_an_edit_over_its_budget(server: FakeLlmServer, sink: ListSink) -> None:
    """$0.05 holds four low images out ($0.0435) with a low-fidelity input, not with a high-fidelity one
    (4,290 tokens more in): the input images are part of the worst case."""
    with own_client(server, budget_guard(0.05, ledger=MemoryLedger(), sink=sink)) as client, attribution(user="u-e7"):
        with pytest.raises(BudgetExceeded):
            client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"), n=4,
                               size="1024x1024", quality="low", input_fidelity="high")
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"), n=4,
                           size="1024x1024", quality="low", input_fidelity="low")
    assert [r.body["fields"]["input_fidelity"] for r in server.posts(EDITS)] == ["low"]


@pytest.mark.parametrize("model", ["dall-e-2", "gpt-image-9-secret"])
def test_an_unpriced_model_is_refused_never_priced_at_zero(server: FakeLlmServer, sink: ListSink, model: str) -> None:
    message = refused_unpriced(server, sink, lambda c: c.images.edit(model=model, prompt="hello",
                                                                     image=("s.png", SQUARE, "image/png")), user="u-e8")
    assert f"no price for model '{model}'" in message


IMAGE_TIERS = """
apiVersion: costwarden.dev/v1
kind: ModelCatalog
metadata: {name: image-tiers}
spec:
  tiers:
    - {name: image-mini, models: ["gpt-image-1-mini"], downgradeTo: {openai: gpt-image-1-mini}}
    - {name: image-full, models: ["gpt-image-1", "gpt-image-1.5"]}
---
""" + llm_call_policy("mini-images", {"mini-only": 'allowedModels: {default: ["tier:image-mini"], '
                                                  "onViolation: downgrade}"}, match="{kinds: [images]}")


@pytest.fixture
def image_downgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that downgrades image calls to a cheaper image model (today's never does: a tier's
    target is taken to be a chat model), so that a policy passes an edit only rewritten."""
    monkeypatch.setattr(rule_base, "NOT_CHAT_APIS", frozenset({"embeddings", "completions"}))


@pytest.mark.usefixtures("image_downgrades")
def test_an_edit_that_passes_only_rewritten_is_refused_never_rewritten(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    guard = budget_guard(5.0, IMAGE_TIERS, ledger=ledger, sink=sink)
    with own_client(server, guard) as client, attribution(user="u-e9"):
        client.images.generate(model=IMAGE, prompt=PROMPT, size="1024x1024", quality="low")  # JSON: rewritten
        with pytest.raises(PolicyViolation, match="does not rewrite a multipart/form-data body") as caught:
            client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"))
    assert "downgrade model to gpt-image-1-mini" in str(caught.value)
    assert [r.body["model"] for r in server.posts("/v1/images/generations")] == ["gpt-image-1-mini"]
    assert server.posts(EDITS) == []  # nothing sent
    assert (ledger.count("reserve"), ledger.count("release")) == (2, 1)  # the edit's hold was given back
    assert [e.outcome for e in sink.events][1:] == ["error"]
    assert spent_today(ledger, "u-e9") == pytest.approx(sink.events[0].cost_usd, abs=2e-6)


def test_a_malformed_form_is_refused_before_sending(server: FakeLlmServer, guard: CallGuard, sink: ListSink) -> None:
    cut = (b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-image-1\r\n--x\r\n'
           b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG')
    with openai_http_client(guard) as http, pytest.raises(AdapterError, match="part 2 does not end with a boundary"):
        http.post(server.url + EDITS, content=cut, headers={"content-type": "multipart/form-data; boundary=x"})
    assert server.posts() == [] and sink.events == []


def test_a_streamed_edit_settles_from_its_image_edit_completed_event(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-e10"):
        events = list(client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"),
                                          size="1024x1024", quality="low", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4 + 194, 272 + 100, image_in=194))
    (event,) = sink.events
    assert (event.outcome, event.usage_source, event.stream) == ("ok", "stream", True)
    assert (event.input_image_tokens, event.output_tokens) == (194, 272 + 100)
    assert event.cost_usd == pytest.approx(cost(4 + 194, 272 + 100, image_in=194))


# --- retries ----------------------------------------------------------------------------------------


def test_a_retried_edit_is_one_call_though_each_attempt_has_its_own_boundary(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    server.fail_next(500, 429)
    with attribution(user="u-e11"):
        client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"), size="1024x1024",
                           quality="low", extra_headers={"x-fake-usage": json.dumps({"input_tokens": 30})})
    attempts = server.posts(EDITS)
    assert len(attempts) == 3
    assert len({r.headers["content-type"] for r in attempts}) == 3  # the SDK draws a new boundary each time
    assert (ledger.count("reserve"), ledger.count("settle"), ledger.count("release")) == (1, 1, 0)
    (event,) = sink.events
    assert (event.input_tokens, event.input_image_tokens) == (30 + 194, 194)
    assert spent_today(ledger, "u-e11") == pytest.approx(cost(30 + 194, 272, image_in=194), abs=2e-6)


# --- async ------------------------------------------------------------------------------------------


def test_the_async_client_is_guarded_alike(server: FakeLlmServer, guard: CallGuard, ledger: CountingLedger,
                                           sink: ListSink) -> None:
    recording = AsyncRecording(AsyncGuardedTransport(guard))

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test",
                                      http_client=httpx2.AsyncClient(transport=recording)) as client:
            with attribution(user="u-e12"):
                server.fail_next(500)
                first = await client.images.edit(model=IMAGE, prompt=PROMPT, image=("fox.png", FOX, "image/png"),
                                                 size="1536x1024", quality="low", n=2)
                with pytest.raises(PolicyViolation):
                    await client.images.edit(model="dall-e-2", prompt="e", image=("s.png", SQUARE, "image/png"))
                return first

    result = asyncio.run(main())
    assert len(result.data) == 2
    attempts = server.posts(EDITS)
    assert [r.body["raw"] for r in attempts] == recording.bodies[:2]  # both attempts sent as built
    assert ledger.count("reserve") == 1
    (hold,) = ledger.calls[0][2]
    assert hold.amount_usd == pytest.approx(cost(4 + 323, 2 * 400, image_in=323))
    ok, denied = sorted(sink.events, key=lambda e: e.outcome != "ok")
    assert [(e.api, e.outcome) for e in (ok, denied)] == [("images", "ok"), ("images", "denied")]
    assert (ok.input_image_tokens, ok.output_tokens) == (323, 800)
    assert spent_today(ledger, "u-e12") == pytest.approx(cost(4 + 323, 800, image_in=323), abs=2e-6)


@pytest.mark.usefixtures("image_downgrades")
def test_the_async_client_refuses_a_rewritten_edit_alike(server: FakeLlmServer, sink: ListSink) -> None:
    ledger = CountingLedger(MemoryLedger())
    guard = budget_guard(5.0, IMAGE_TIERS, ledger=ledger, sink=sink)

    async def main() -> None:
        async with connect_async(server, guard) as client:
            with attribution(user="u-e13"), pytest.raises(PolicyViolation, match="multipart/form-data"):
                await client.images.edit(model=IMAGE, prompt=PROMPT, image=("s.png", SQUARE, "image/png"))

    asyncio.run(main())
    guard.close()
    assert server.posts() == []
    assert (ledger.count("reserve"), ledger.count("release")) == (1, 1)
