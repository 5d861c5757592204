"""The Audio API under the call-guard: the real ``openai`` SDK (sync and async) sends transcriptions,
translations and speech to the fake API (``fake_openai_audio.py``, which reads a WAV upload's length
with the standard library's ``wave`` and bills as OpenAI's models bill), so each reservation and each
settlement here is exact: whisper by the second, tts-1 by the character, the gpt-4o models by the
token; and answers that report no usage are settled at the estimate the guard documents."""

from __future__ import annotations

import asyncio
import logging
import math
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
from fake_openai_audio import SECONDS_PER_WORD, SPEECH_TOKENS_PER_S, TRANSCRIPT, wav_bytes  # noqa: E402

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.adapters.openai_audio import AUDIO_TOKENS_PER_S, text_tokens  # noqa: E402
from costwarden.adapters.pricing import GenaiPricer  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_async_http_client, openai_http_client  # noqa: E402
from costwarden.engine.subjects import TokenUsage  # noqa: E402
from costwarden.errors import BudgetExceeded  # noqa: E402

PRICER = GenaiPricer()
SPEECH = "/v1/audio/speech"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
CLIP = wav_bytes(12.3)  # 13 billed seconds, rounded up
WORDS = len(TRANSCRIPT.split())
TRANSLATIONS_DEPRECATED = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's own mark


def cost(model: str, **usage: int) -> float:
    return PRICER.cost("openai", model, TokenUsage(**usage))


def hold_of(ledger: CountingLedger) -> float:
    (hold,) = ledger.calls[0][2]
    assert ledger.calls[0][0] == "reserve"
    return float(hold.amount_usd)


def settled(ledger: CountingLedger, sink: ListSink, user: str) -> Any:
    """The one event of a test's one call, once checked it was reserved once, settled once and charged."""
    assert (ledger.count("reserve"), ledger.count("settle"), ledger.count("release")) == (1, 1, 0)
    (event,) = sink.events
    assert (event.api, event.verdict, event.charged) == ("audio", "allow", True)
    assert spent_today(ledger, user) == pytest.approx(event.cost_usd, abs=2e-6)
    return event


# --- transcriptions ----------------------------------------------------------------------------------


def test_whisper_reserves_the_seconds_its_header_says_and_settles_the_seconds_billed(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costwarden.callguard"), attribution(user="u-a1", feature="notes"):
        result = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"))
    assert result.text == TRANSCRIPT and result.usage.seconds == pytest.approx(12.3)
    (sent,) = server.posts(TRANSCRIPTIONS)
    assert sent.body["files"] == [("file", "clip.wav", "audio/wav", CLIP)]  # the form went as the SDK built it
    assert hold_of(ledger) == pytest.approx(13 * 0.36 / 3600) == pytest.approx(cost("whisper-1", audio_seconds=13))
    event = settled(ledger, sink, "u-a1")
    assert (event.model, event.outcome, event.usage_source, event.feature) == ("whisper-1", "ok", "response", "notes")
    assert (event.audio_seconds, event.input_tokens, event.output_tokens) == (13, 0, 0)
    assert event.cost_usd == pytest.approx(13 * 0.0001) and event.estimated_cost_usd == pytest.approx(13 * 0.0001)
    assert event.to_dict()["audio_seconds"] == 13
    assert not [r for r in caplog.records if "billed but not guarded" in r.getMessage()]


def test_a_token_billed_transcription_reserves_its_worst_case_and_settles_its_token_usage(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-a2"):
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("clip.wav", CLIP, "audio/wav"),
                                           prompt="Ada Lovelace")
    worst_audio = 13 * AUDIO_TOKENS_PER_S
    prompt = text_tokens("Ada Lovelace")
    assert hold_of(ledger) == pytest.approx(cost("gpt-4o-transcribe", input_tokens=prompt + worst_audio,
                                                 input_audio_tokens=worst_audio, output_tokens=2000))
    event = settled(ledger, sink, "u-a2")
    billed_audio = math.ceil(12.3 * 10)  # the fake's own rate
    assert (event.input_tokens, event.input_audio_tokens, event.output_tokens) == (
        2 + billed_audio, billed_audio, WORDS)
    assert event.cost_usd == pytest.approx(cost("gpt-4o-transcribe", input_tokens=2 + billed_audio,
                                                input_audio_tokens=billed_audio, output_tokens=WORDS))
    assert (event.usage_source, event.audio_seconds) == ("response", 0)


def test_a_streamed_transcription_settles_from_its_done_event(client: Any, ledger: CountingLedger,
                                                              sink: ListSink) -> None:
    with attribution(user="u-a3"):
        deltas = [e.delta for e in client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("clip.wav", CLIP, "audio/wav"), stream=True)
            if e.type == "transcript.text.delta"]
    assert "".join(deltas) == TRANSCRIPT
    event = settled(ledger, sink, "u-a3")
    assert (event.usage_source, event.stream, event.outcome) == ("stream", True, "ok")
    assert event.cost_usd == pytest.approx(cost("gpt-4o-mini-transcribe", input_tokens=123, input_audio_tokens=123,
                                                output_tokens=WORDS))


def test_a_stream_cut_before_its_usage_is_charged_its_input_worst_case_and_the_text_it_showed(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-a4"), pytest.raises(openai.APIConnectionError):
        list(client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("c.wav", CLIP, "audio/wav"),
                                                stream=True, extra_headers={"x-fake-truncate": "3"}))
    event = settled(ledger, sink, "u-a4")
    assert (event.outcome, event.usage_source) == ("partial", "estimate")
    shown = math.ceil(len("the quick brown") / 4)
    assert (event.input_audio_tokens, event.output_tokens) == (13 * AUDIO_TOKENS_PER_S, shown)
    assert "stream ended before its usage" in str(event.error)


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_a_text_answer_has_no_usage_and_whisper_settles_the_seconds_its_header_gave(
    client: Any, ledger: CountingLedger, sink: ListSink, response_format: str
) -> None:
    with attribution(user="u-a5"):
        text = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"),
                                                  response_format=response_format)
    assert TRANSCRIPT in text
    event = settled(ledger, sink, "u-a5")
    assert (event.usage_source, event.audio_seconds, event.error) == ("estimate", 13, None)  # exact: the header
    assert event.cost_usd == pytest.approx(13 * 0.0001)


def test_a_text_answer_for_a_file_whose_length_is_unknown_is_charged_the_bound_and_says_so(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    opaque = b"\x1aE\xdf\xa3" + bytes(7_496)  # a WebM-like upload: 7.5 kB, 10 s at 6 kbit/s
    with attribution(user="u-a6"):
        client.audio.transcriptions.create(model="whisper-1", file=("clip.webm", opaque, "audio/webm"),
                                           response_format="text")
    assert hold_of(ledger) == pytest.approx(10 * 0.0001)
    event = settled(ledger, sink, "u-a6")
    assert (event.audio_seconds, event.cost_usd) == (10, pytest.approx(10 * 0.0001))
    assert "bounded by the file's size" in str(event.error)


def test_a_token_billed_text_answer_is_charged_its_input_worst_case_and_its_texts_tokens(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-a7"):
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("clip.wav", CLIP, "audio/wav"),
                                           response_format="text")
    event = settled(ledger, sink, "u-a7")
    out = math.ceil(len(TRANSCRIPT) / 4)
    assert event.cost_usd == pytest.approx(cost("gpt-4o-transcribe", input_tokens=260, input_audio_tokens=260,
                                                output_tokens=out))
    assert event.usage_source == "estimate" and "transcript's tokens from its length" in str(event.error)


@TRANSLATIONS_DEPRECATED
def test_a_translation_reports_no_usage_and_settles_the_seconds_read_or_its_verbose_duration(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-a8"):
        client.audio.translations.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"))
        verbose = client.audio.translations.create(model="whisper-1", file=("c.mp3", b"\x00" * 600, "audio/mpeg"),
                                                   response_format="verbose_json",
                                                   extra_headers={"x-fake-audio-seconds": "0.6"})
    assert verbose.duration == pytest.approx(0.6)
    plain, detailed = sink.events
    assert (plain.usage_source, plain.audio_seconds, plain.error) == ("estimate", 13, None)
    assert (detailed.usage_source, detailed.audio_seconds) == ("response", 1)  # reserved 1 s: 600 B at 6 kbit/s
    assert ledger.count("settle") == 2


# --- speech ------------------------------------------------------------------------------------------


def test_tts_1_reserves_and_settles_its_input_characters(
    client: Any, server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    text = "Grüße aus Köln, 世界"  # 18 characters
    with attribution(user="u-s1"):
        audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert len(audio.content) > 0 and server.posts(SPEECH)[0].body["input"] == text
    assert hold_of(ledger) == pytest.approx(18 * 15 / 1e6)
    event = settled(ledger, sink, "u-s1")
    assert (event.input_characters, event.cost_usd, event.usage_source, event.error) == (
        18, pytest.approx(18 * 15 / 1e6), "estimate", None)


def test_token_billed_speech_settles_from_the_length_of_the_audio_returned(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    words = "one two three four five six seven eight"
    with attribution(user="u-s2"):
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input=words, response_format="pcm")
    text = text_tokens(words)
    assert hold_of(ledger) == pytest.approx(cost("gpt-4o-mini-tts", input_tokens=text, output_tokens=text * 12,
                                                 output_audio_tokens=text * 12))
    event = settled(ledger, sink, "u-s2")
    out = math.ceil(8 * SECONDS_PER_WORD * 1250 / 60)  # 3.2 s of 24 kHz PCM
    assert (event.output_audio_tokens, event.usage_source) == (out, "estimate")
    assert "3.2 s of audio returned" in str(event.error)


def test_speech_streamed_as_sse_settles_from_its_done_events_usage(
    client: Any, ledger: CountingLedger, sink: ListSink
) -> None:
    with attribution(user="u-s3"):
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input="hello there world",
                                   instructions="warm", stream_format="sse").read()
    event = settled(ledger, sink, "u-s3")
    out = math.ceil(3 * SECONDS_PER_WORD * SPEECH_TOKENS_PER_S)
    assert (event.usage_source, event.input_tokens, event.output_tokens, event.output_audio_tokens) == (
        "stream", 4, out, out)
    assert event.cost_usd == pytest.approx(cost("gpt-4o-mini-tts", input_tokens=4, output_tokens=out,
                                                output_audio_tokens=out))


# --- budgets -----------------------------------------------------------------------------------------


@pytest.fixture
def tight_guard(ledger: CountingLedger, sink: ListSink) -> Iterator[CallGuard]:
    guard = CallGuard(compile_policies(budget_policy(0.001)), ledger=ledger, sinks=[sink])  # a tenth of a cent
    yield guard
    guard.close()


def test_a_budget_that_cannot_hold_the_worst_case_refuses_before_anything_is_sent(
    server: FakeLlmServer, tight_guard: CallGuard, ledger: CountingLedger, sink: ListSink
) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="t", http_client=openai_http_client(tight_guard)) as c, \
            attribution(user="u-b1"):
        c.audio.transcriptions.create(model="whisper-1", file=("short.wav", wav_bytes(9.5), "audio/wav"))  # $0.001
        with pytest.raises(BudgetExceeded, match="whisper-1"):
            c.audio.transcriptions.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"))
        with pytest.raises(BudgetExceeded):
            c.audio.speech.create(model="tts-1-hd", voice="alloy", input="x" * 100)
    assert len(server.posts()) == 1  # the refused calls never left
    assert (ledger.count("reserve"), ledger.count("settle")) == (1, 1)
    assert [e.outcome for e in sink.events] == ["ok", "denied", "denied"]
    assert [e.api for e in sink.events] == ["audio"] * 3


def test_an_unpriced_audio_model_is_refused_by_a_budget_never_held_at_nothing(
    client: Any, server: FakeLlmServer
) -> None:
    with attribution(user="u-b2"), pytest.raises(Exception, match="user-budget"):
        client.audio.transcriptions.create(model="whisper-large-v9", file=("clip.wav", CLIP, "audio/wav"))
    assert server.posts() == []


# --- the async client ----------------------------------------------------------------------------------


def test_the_async_client_is_reserved_and_settled_alike(
    server: FakeLlmServer, ledger: CountingLedger, sink: ListSink
) -> None:
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=ledger, sinks=[sink])

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t",
                                      http_client=openai_async_http_client(guard)) as c:
            with attribution(user="u-c1"):
                await c.audio.transcriptions.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"))
                await c.audio.speech.create(model="tts-1", voice="alloy", input="hello")

    asyncio.run(main())
    guard.close()
    assert hold_of(ledger) == pytest.approx(13 * 0.0001)
    transcribed, spoken = sink.events
    assert (transcribed.audio_seconds, spoken.input_characters) == (13, 5)
    assert spent_today(ledger, "u-c1") == pytest.approx(13 * 0.0001 + 5 * 15 / 1e6, abs=2e-6)


def test_with_no_budget_the_event_still_prices_the_seconds(server: FakeLlmServer, sink: ListSink) -> None:
    guard = CallGuard(compile_policies(budget_policy(5.0)), ledger=MemoryLedger(), sinks=[sink])
    with openai.OpenAI(base_url=server.url + "/v1", api_key="t", http_client=openai_http_client(guard)) as c:
        c.audio.transcriptions.create(model="whisper-1", file=("clip.wav", CLIP, "audio/wav"))  # no user: no budget
    guard.close()
    (event,) = sink.events
    assert (event.charged, event.audio_seconds, event.cost_usd) == (False, 13, pytest.approx(13 * 0.0001))


# --- a call that was sent and never answered ------------------------------------------------------


@pytest.mark.parametrize(("model", "call", "expected"), [
    ("whisper-1", "transcription", lambda: cost("whisper-1", audio_seconds=13)),  # the whole bill is input
    ("tts-1", "speech", lambda: cost("tts-1", input_characters=len("Read this aloud."))),
])
def test_a_call_sent_and_timed_out_is_charged_its_input(server: FakeLlmServer, guard: CallGuard,
                                                        sink: ListSink, model: str, call: str, expected: Any) -> None:
    from openai_guard_support import connect

    with connect(server, guard, max_retries=0, timeout=0.3) as client, attribution(user="u-a-timeout"), \
            pytest.raises(openai.APITimeoutError):
        delay = {"extra_headers": {"x-fake-delay-ms": "1500"}}
        if call == "transcription":
            client.audio.transcriptions.create(model=model, file=("clip.wav", CLIP, "audio/wav"), **delay)
        else:
            client.audio.speech.create(model=model, voice="alloy", input="Read this aloud.", **delay)
    guard.flush()
    (event,) = sink.events
    assert (event.outcome, event.usage_source) == ("error", "estimate")
    assert event.cost_usd == pytest.approx(expected()) and event.cost_usd > 0
