"""OpenAI Audio bodies → ``llm_call`` subjects of kind ``audio``: the worst case each billing is
reserved at (seconds, characters, tokens), priced by genai-prices; the usage each answer reports or,
where it reports none, the estimate; the form read from the bytes ``httpx`` builds; the routing."""

from __future__ import annotations

import io
import math
import wave
from typing import Any

import httpx2
import pytest

from costwarden.adapters import openai_audio as audio
from costwarden.adapters.audio_duration import MAX_UPLOAD_BYTES
from costwarden.adapters.multipart import parse_form
from costwarden.adapters.pricing import GenaiPricer
from costwarden.enforcers import openai_endpoints as endpoints
from costwarden.engine.rules.base import chat_downgradable
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError, PricingError

PRICER = GenaiPricer()


def wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * round(seconds * rate)))
    return out.getvalue()


def form(data: bytes, **fields: Any) -> dict[str, Any]:
    """The body the guard judges for a form ``httpx`` builds, as the ``openai`` SDK does."""
    request = httpx2.Request("POST", "https://api.openai.com/v1/audio/transcriptions",
                             data=fields, files={"file": ("speech.wav", data, "audio/wav")})
    return audio.form_body(parse_form(request.headers["content-type"], request.read()))


def subject(body: dict[str, Any], **kw: Any) -> Any:
    return audio.subject_from_request(body, pricer=PRICER, **kw)


# --- transcriptions and translations ---------------------------------------------------------------


def test_a_form_is_read_into_its_fields_and_a_described_file() -> None:
    body = form(wav(2.5), model="whisper-1", prompt="Ada, Grace", stream="false",
                **{"timestamp_granularities[]": ["word", "segment"]})
    assert body == {"model": "whisper-1", "prompt": "Ada, Grace", "stream": False,
                    "timestamp_granularities": ["word", "segment"],
                    "file": {"filename": "speech.wav", "content_type": "audio/wav", "bytes": len(wav(2.5)),
                             "seconds": 2.5, "duration": "wav"}}


def test_a_field_sent_twice_is_refused() -> None:
    request = httpx2.Request("POST", "https://x/v1/audio/transcriptions", data={"model": ["whisper-1", "gpt-4o"]},
                             files={"file": ("a.wav", wav(1), "audio/wav")})
    with pytest.raises(AdapterError, match="'model' is sent more than once"):
        audio.form_body(parse_form(request.headers["content-type"], request.read()))


def test_whisper_is_reserved_its_seconds_rounded_up_and_nothing_else() -> None:
    call = subject(form(wav(12.3), model="whisper-1", prompt="names"))
    assert (call.kind, call.request.choices, call.request.max_tokens_field) == ("audio", 0, "")
    assert audio.worst_case_usage(call.body) == TokenUsage(audio_seconds=13)
    assert call.estimated_cost_usd == pytest.approx(13 * 0.36 / 3600)
    assert not chat_downgradable(call)  # no rule swaps it for a chat model


def test_a_token_billed_transcription_is_reserved_its_prompt_audio_tokens_and_longest_transcript() -> None:
    call = subject(form(wav(30), model="gpt-4o-transcribe", prompt="Ada Lovelace"))
    prompt = audio.text_tokens("Ada Lovelace")
    worst = TokenUsage(input_tokens=prompt + 600, input_audio_tokens=600, output_tokens=2000)
    assert audio.worst_case_usage(call.body) == worst
    assert (call.request.input_tokens, call.request.max_tokens, call.request.choices) == (prompt + 600, 2000, 1)
    assert call.estimated_cost_usd == pytest.approx((prompt * 2.5 + 600 * 6 + 2000 * 10) / 1e6)


def test_a_file_whose_header_says_nothing_is_bounded_by_its_size_and_token_models_by_their_longest_audio() -> None:
    opaque = b"\x1aE\xdf\xa3" + b"\x00" * 74_996  # WebM: 75 kB, 100 s at 6 kbit/s
    whisper = form(opaque, model="whisper-1")
    assert whisper["file"]["seconds"] is None and audio.audio_seconds(whisper) == (100, False)
    assert audio.worst_case_usage(whisper) == TokenUsage(audio_seconds=100)
    big = {"model": "gpt-4o-mini-transcribe", "file": {"bytes": 20_000_000, "seconds": None}}
    assert audio.worst_case_usage(big).input_audio_tokens == 1500 * audio.AUDIO_TOKENS_PER_S  # refused beyond
    assert audio.audio_seconds({"file": {}}) == (math.ceil(MAX_UPLOAD_BYTES * 8 / 6000), False)  # 25 MB


def test_an_audio_body_without_file_or_input_is_refused() -> None:
    with pytest.raises(AdapterError, match="needs 'input' text"):
        subject({"model": "whisper-1", "prompt": "x"})


# --- speech ----------------------------------------------------------------------------------------


def test_tts_1_is_reserved_its_input_characters_exactly() -> None:
    text = "Grüße, 世界!"  # 10 code points
    call = subject({"model": "tts-1-hd", "voice": "alloy", "input": text})
    assert audio.worst_case_usage(call.body) == TokenUsage(input_characters=10)
    assert call.estimated_cost_usd == pytest.approx(10 * 30 / 1e6)
    assert (call.request.choices, call.request.stream) == (0, False)


@pytest.mark.parametrize(("speed", "factor"), [(None, 1), (1.5, 1), (0.25, 4)])
def test_token_billed_speech_reserves_its_text_and_twelve_audio_tokens_a_text_token(speed: Any, factor: int) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": "hello there", "instructions": "cheerful",
            "speed": speed, "stream_format": "sse"}
    call = subject(body)
    text = audio.text_tokens("hello there")
    out = text * 12 * factor
    assert audio.worst_case_usage(body) == TokenUsage(input_tokens=text + audio.text_tokens("cheerful"),
                                                      output_tokens=out, output_audio_tokens=out)
    assert (call.request.output_audio, call.request.stream, call.request.max_tokens) == (True, True, out)
    assert call.estimated_cost_usd == pytest.approx(((text + audio.text_tokens("cheerful")) * 0.6 + out * 12) / 1e6)


def test_the_speech_worst_case_is_clamped_as_a_budget_clamps_output() -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": "word " * 4000, "speed": 0.25}
    assert audio.worst_case_usage(body).output_tokens == OUTPUT_TOKENS_CAP


@pytest.mark.parametrize("speed", [0, -1, "fast", True])
def test_a_speed_that_is_not_a_positive_number_is_refused(speed: Any) -> None:
    with pytest.raises(AdapterError, match="'speed'"):
        subject({"model": "gpt-4o-mini-tts", "voice": "coral", "input": "hi", "speed": speed})


# --- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "usage"), [
    ({"text": "hi", "usage": {"type": "duration", "seconds": 9.2}}, TokenUsage(audio_seconds=10)),
    ({"text": "hi", "usage": {"type": "tokens", "input_tokens": 120, "output_tokens": 7, "total_tokens": 127,
                              "input_token_details": {"text_tokens": 20, "audio_tokens": 100}}},
     TokenUsage(input_tokens=120, input_audio_tokens=100, output_tokens=7)),
    ({"type": "transcript.text.done", "text": "hi", "usage": {"type": "tokens", "input_tokens": 14,
                                                             "output_tokens": 45, "total_tokens": 59}},
     TokenUsage(input_tokens=14, output_tokens=45)),
    ({"type": "speech.audio.done", "usage": {"input_tokens": 5, "output_tokens": 300, "total_tokens": 305}},
     TokenUsage(input_tokens=5, output_tokens=300, output_audio_tokens=300)),
    ({"task": "translate", "duration": 61.0, "text": "hi"}, TokenUsage(audio_seconds=61)),
])
def test_the_usage_an_answer_reports(data: dict[str, Any], usage: TokenUsage) -> None:
    assert audio.usage_from_response(data) == usage


@pytest.mark.parametrize("data", [{"text": "hi"}, {"usage": {"type": "duration", "seconds": "9"}}, ["x"]])
def test_an_answer_without_usable_usage_raises(data: Any) -> None:
    with pytest.raises(AdapterError):
        audio.usage_from_response(data)


def test_an_answer_without_usage_is_estimated_and_says_on_what() -> None:
    whisper = form(wav(4.2), model="whisper-1")
    assert audio.estimated_usage(whisper, b"hello") == (TokenUsage(audio_seconds=5), None)  # exact: its header
    bounded = {"model": "whisper-1", "file": {"bytes": 1500, "seconds": None}}
    assert audio.estimated_usage(bounded, b"hello")[0] == TokenUsage(audio_seconds=2)
    tokens, basis = audio.estimated_usage(form(wav(10), model="gpt-4o-transcribe"), b"x" * 41)
    assert (tokens.input_audio_tokens, tokens.output_tokens) == (200, 11) and "transcript" in str(basis)
    speech = {"model": "gpt-4o-mini-tts", "voice": "a", "input": "hi there", "response_format": "pcm"}
    spoken, basis = audio.estimated_usage(speech, bytes(96_000))  # 2 s of 24 kHz 16-bit mono
    assert spoken.output_audio_tokens == math.ceil(2 * 1250 / 60) and "2.0 s of audio" in str(basis)
    guessed, basis = audio.estimated_usage({**speech, "response_format": "mp3"}, b"\x00opaque")
    assert guessed.output_tokens == audio.text_tokens("hi there") * 6 and "input's length" in str(basis)
    assert audio.estimated_usage({"model": "tts-1", "input": "hi there"}, b"") == (TokenUsage(input_characters=8), None)


def test_seconds_and_characters_price_at_genai_prices_rates_and_never_at_nothing() -> None:
    assert PRICER.cost("openai", "whisper-1", TokenUsage(audio_seconds=3600)) == pytest.approx(0.36)
    assert PRICER.cost("openai", "tts-1", TokenUsage(input_characters=1_000_000)) == pytest.approx(15.0)
    with pytest.raises(PricingError, match="no input-token price"):
        PRICER.cost("openai", "whisper-1", TokenUsage(input_tokens=10))
    with pytest.raises(PricingError, match="no price for seconds of input audio"):
        PRICER.cost("openai", "tts-1", TokenUsage(audio_seconds=3))
    with pytest.raises(AdapterError, match="no price for seconds"):  # a token price counts them as nothing
        audio.priced(PRICER, "openai", "gpt-4o-transcribe", TokenUsage(audio_seconds=3), {})
    assert subject(form(wav(3), model="gpt-4o-transcribe")).estimated_cost_usd is not None


# --- routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations/", "/v1/audio/speech",
                                  "/openai/deployments/whisper/audio/transcriptions"])  # Azure
def test_audio_paths_are_guarded_through_the_audio_edge(path: str) -> None:
    assert endpoints.path_api(path) == "audio"
    assert endpoints.guarded_path("POST", path) and endpoints.unguarded_spend("POST", path) is None
    assert endpoints.route(endpoints.edges(), path) is endpoints.OPENAI_AUDIO
    vllm = endpoints.route(endpoints.edges("vllm"), path).subject({"model": "tts-1", "input": "hi"})
    assert (vllm.provider, vllm.kind) == ("vllm", "audio")


def test_transcription_forms_are_read_and_speech_is_json() -> None:
    for path, sent in (("/v1/audio/transcriptions", True), ("/v1/audio/translations", True),
                       ("/v1/audio/speech", False)):
        request = httpx2.Request("POST", "https://x" + path, files={"file": ("a.wav", b"RIFF", "audio/wav")})
        assert endpoints.sends_form(request) is sent
    assert "/audio/speech" not in endpoints.UNGUARDED_SPEND and "/audio/speech" in endpoints.GUARDED
