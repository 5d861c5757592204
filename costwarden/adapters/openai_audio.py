"""OpenAI Audio bodies (``POST …/audio/transcriptions``, ``…/audio/translations``, ``…/audio/speech``)
→ ``llm_call`` subjects (``api="audio"``); their usage, reported or estimated.

Three billings, told apart by the model's name (a ``ModelCatalog`` cannot change them):

* **by the second** (``whisper*``): transcriptions and translations bill the input audio's
  duration (genai-prices: ``whisper-1`` $0.36 an hour). The worst case is that duration
  (:mod:`costwarden.adapters.audio_duration`: exact from a WAV, FLAC, MP3, Ogg or MP4 header, else
  bounded by the file's size), in whole seconds, rounded up. The usage settles it:
  ``usage: {type: "duration", seconds}`` (or a ``verbose_json``'s ``duration``);
* **by the character** (``tts-1``, ``tts-1-hd``): speech bills the characters of ``input``, known
  exactly before the call; nothing in the binary answer reports them;
* **by the token** (``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``gpt-4o-mini-tts`` and any
  other): a transcription bills the ``prompt``'s text tokens and the audio's tokens as input and
  the transcript as output (``usage: {type: "tokens", input_tokens, input_token_details:
  {audio_tokens, text_tokens}, output_tokens}``); speech bills ``input`` and ``instructions`` as
  text input and the audio it makes as output tokens (``speech.audio.done``'s ``usage`` when
  streamed as SSE; the binary answer has none).

The worst case a budget reserves is :func:`worst_case_usage`, priced by the call-guard's pricer
when the subject is built and carried in ``estimated_cost_usd`` (the budget rule prices that
rather than the token-shaped request, which cannot hold seconds or characters). The token-billed
worst cases assume :data:`AUDIO_TOKENS_PER_S` input audio tokens a second (capped at
:data:`MAX_TOKEN_BILLED_AUDIO_S` when the duration is only a bound),
:data:`TRANSCRIPTION_MAX_OUTPUT_TOKENS` of transcript and
:data:`SPEECH_WORST_AUDIO_TOKENS_PER_TEXT_TOKEN` audio tokens a text token of speech (divided by a
``speed`` below 1). ``request.input_tokens`` is the token-shaped size of the input (audio as
tokens for a transcription), which a budget prices only when that worst case could not be priced:
then a model billed by the second or character fails to price and is refused, never held at $0.

A transcription's form is read into the body judged (:func:`form_body`): text fields as sent
(``stream`` as a boolean, ``name[]`` fields as lists) and the file described by its name, type,
byte length and duration, never its bytes. Nothing caps an audio call's output:
``max_tokens_field`` is empty, and no rule downgrades it to a chat model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from costwarden.adapters.audio_duration import MAX_UPLOAD_BYTES, Duration, audio_duration, size_bound
from costwarden.adapters.llm_payload import TokenTally, mapping, optional_int, require_body
from costwarden.adapters.multipart import Form, Part
from costwarden.adapters.openai import PROVIDER, call_subject
from costwarden.engine.pricing import LlmPricer, cost_in_context, price_context
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP
from costwarden.engine.subjects import LlmCall, LlmRequest, SourceLocation, TokenUsage
from costwarden.errors import AdapterError

API = "audio"
_WHAT = "OpenAI audio"
AUDIO_TOKENS_PER_S = 20
"""Input audio tokens a second of audio is reserved at for a token-billed transcription. OpenAI
publishes no rate; its own estimate of $0.006 a minute for ``gpt-4o-transcribe`` at $6 / M audio
tokens allows at most 1,000 tokens a minute (16.7 a second) with nothing left for the transcript."""
MAX_TOKEN_BILLED_AUDIO_S = 1_500
"""The longest audio ``gpt-4o-transcribe`` / ``gpt-4o-mini-transcribe`` take (a longer one is
refused with a 400, unbilled; the diarize model's limit is lower, 1,400 s)."""
TRANSCRIPTION_MAX_OUTPUT_TOKENS = 2_000
"""The most transcript tokens the token-billed transcription models generate (their model pages)."""
SPEECH_AUDIO_TOKENS_PER_S = 1_250 / 60
"""Output audio tokens a second of ``gpt-4o-mini-tts`` speech: OpenAI's estimate of $0.015 a minute
at $12 / M audio tokens (1,250 a minute)."""
SPEECH_AUDIO_TOKENS_PER_TEXT_TOKEN = 6
"""Audio tokens a text token of ``input`` becomes at normal speed, as measured (4,096 characters,
877 tokens: about 5,300 audio tokens, 268 s); the estimate when the speech's length is not known."""
SPEECH_WORST_AUDIO_TOKENS_PER_TEXT_TOKEN = 2 * SPEECH_AUDIO_TOKENS_PER_TEXT_TOKEN
"""The worst case reserved: twice the measured rate, before a ``speed`` below 1 lengthens it."""
PCM_BYTES_PER_S = 48_000
"""``response_format: "pcm"``: raw 24 kHz, 16-bit, mono samples."""
CHARS_PER_TOKEN = 4
_DURATION_BILLED = re.compile(r"whisper", re.IGNORECASE)
_CHARACTER_BILLED = re.compile(r"^tts-1(?:-hd)?(?:-\d+)?$", re.IGNORECASE)
_FILE_FIELDS = frozenset({"file"})


def subject_from_request(
    body: Mapping[str, Any],
    *,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    tags: Mapping[str, str] | None = None,
    response: Mapping[str, Any] | None = None,
    batch: bool = False,
    source: SourceLocation | None = None,
    provider: str = PROVIDER,
    pricer: LlmPricer | None = None,
) -> LlmCall:
    """An ``llm_call`` subject for an Audio body; ``phase="post"`` with ``response``.

    A body with a ``file`` is a transcription or translation (:func:`form_body` made it from the
    form), one with ``input`` a speech request. With ``pricer`` the subject carries its worst case
    in ``estimated_cost_usd`` (None where it cannot be priced). Raises AdapterError for a body
    that is neither, has no ``model``, or carries malformed values.
    """
    body = require_body(body, _WHAT)
    request = _transcription(body) if "file" in body else _speech(body)
    call = call_subject(body, request, provider=provider, feature=feature, user=user, team=team, tags=tags,
                        response=response, source=source)
    if pricer is None:
        return call
    return dataclasses.replace(call, estimated_cost_usd=priced_worst_case(pricer, call))


def billing(body: Mapping[str, Any]) -> str:
    """``"seconds"``, ``"characters"`` or ``"tokens"``: what the body's model is billed by."""
    model = str(body.get("model") or "").rsplit("/", 1)[-1]
    if "file" in body and _DURATION_BILLED.search(model):
        return "seconds"
    if "file" not in body and _CHARACTER_BILLED.match(model):
        return "characters"
    return "tokens"


def worst_case_usage(body: Mapping[str, Any]) -> TokenUsage:
    """The most an Audio body can be billed (see the module docstring)."""
    kind = billing(body)
    if "file" in body:
        seconds, exact = audio_seconds(body)
        if kind == "seconds":
            return TokenUsage(audio_seconds=seconds)
        audio = audio_tokens(seconds if exact else min(seconds, MAX_TOKEN_BILLED_AUDIO_S))
        return TokenUsage(input_tokens=text_tokens(body.get("prompt")) + audio, input_audio_tokens=audio,
                          output_tokens=TRANSCRIPTION_MAX_OUTPUT_TOKENS)
    if kind == "characters":
        return TokenUsage(input_characters=input_characters(body))
    out = min(speech_output_tokens(body, SPEECH_WORST_AUDIO_TOKENS_PER_TEXT_TOKEN), OUTPUT_TOKENS_CAP)
    return TokenUsage(input_tokens=speech_input_tokens(body), output_tokens=out, output_audio_tokens=out)


def priced_worst_case(pricer: LlmPricer, call: LlmCall) -> float | None:
    """USD of :func:`worst_case_usage` on ``call``'s model; None where the model has no price for
    it, seconds or characters it prices at $0 (a token price only) included."""
    assert call.body is not None  # built from a body
    usage = worst_case_usage(call.body)
    try:
        return priced(pricer, call.provider, call.model, usage, call.body)
    except Exception:
        return None


def priced(pricer: LlmPricer, provider: str, model: str, usage: TokenUsage, body: Mapping[str, Any]) -> float:
    """USD of ``usage``; raises AdapterError when it has seconds or characters that ``model`` has no
    price for (a pricer of token prices alone would count them as nothing)."""
    cost = cost_in_context(pricer, provider, model, usage, context=price_context(body))
    if (usage.audio_seconds or usage.input_characters) and cost_in_context(
            pricer, provider, model, TokenUsage(audio_seconds=usage.audio_seconds,
                                                input_characters=usage.input_characters)) <= 0:
        raise AdapterError(f"model {model!r} ({provider}) has no price for seconds of audio or characters of text")
    return cost


# --- transcriptions and translations ---------------------------------------------------------------


def _transcription(body: Mapping[str, Any]) -> LlmRequest:
    seconds, exact = audio_seconds(body)
    tokens = billing(body) == "tokens"
    audio = audio_tokens(seconds if exact or not tokens else min(seconds, MAX_TOKEN_BILLED_AUDIO_S))
    return LlmRequest(
        api=API,
        max_tokens=TRANSCRIPTION_MAX_OUTPUT_TOKENS if tokens else None,
        max_tokens_field="",  # nothing caps a transcript
        input_tokens=text_tokens(body.get("prompt")) + audio,
        stream=body.get("stream") is True,
        choices=1 if tokens else 0,  # whisper bills no output
    )


def audio_seconds(body: Mapping[str, Any]) -> tuple[int, bool]:
    """(whole seconds of the body's audio file, rounded up; whether its header gave them): the
    described duration, else the bound of its size (of 25 MB when the size is not described)."""
    file = mapping(body.get("file"))
    seconds = file.get("seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return math.ceil(seconds), True
    size = file.get("bytes")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else MAX_UPLOAD_BYTES
    return math.ceil(size_bound(size).seconds), False


def audio_tokens(seconds: float) -> int:
    return math.ceil(seconds * AUDIO_TOKENS_PER_S)


def text_tokens(text: object) -> int:
    """The prose estimate of a text field's tokens (0 without one)."""
    if text is None:
        return 0
    if not isinstance(text, str):
        raise AdapterError(f"{_WHAT}: a text field must be a string, got {type(text).__name__}")
    tally = TokenTally()
    tally.text(text)
    return tally.total


def form_body(form: Form) -> dict[str, Any]:
    """The body of a transcription or translation form: its text fields (``stream`` as a boolean,
    a ``name[]`` field's values as a list) and its ``file`` as ``{filename, content_type, bytes,
    seconds, duration}`` (``seconds`` None where its header does not give them; ``duration`` the
    format read). Raises AdapterError for a field sent twice or a text field that is not UTF-8."""
    body: dict[str, Any] = {}
    for part in form.parts:
        listed = part.name.endswith("[]")
        key = part.name[:-2] if listed else part.name
        value = _described(part) if key in _FILE_FIELDS else _typed(key, part.text())
        if listed:
            body.setdefault(key, []).append(value)
        elif key in body:
            raise AdapterError(f"{_WHAT}: form field '{part.name}' is sent more than once; the call-guard cannot "
                               "tell which one the API reads")
        else:
            body[key] = value
    return body


def _described(part: Part) -> dict[str, Any]:
    found: Duration | None = audio_duration(part.data)
    return {"filename": part.filename, "content_type": part.content_type, "bytes": len(part.data),
            "seconds": found.seconds if found else None, "duration": found.source if found else None}


def _typed(key: str, text: str) -> Any:
    if key == "stream" and text in ("true", "false"):
        return text == "true"
    return text


# --- speech ----------------------------------------------------------------------------------------


def _speech(body: Mapping[str, Any]) -> LlmRequest:
    if not isinstance(body.get("input"), str):
        raise AdapterError(f"{_WHAT}: a speech body needs 'input' text (a transcription or translation needs a "
                           "'file')")
    tokens = billing(body) == "tokens"
    return LlmRequest(
        api=API,
        max_tokens=speech_output_tokens(body, SPEECH_WORST_AUDIO_TOKENS_PER_TEXT_TOKEN) if tokens else None,
        max_tokens_field="",  # nothing caps the speech made
        input_tokens=speech_input_tokens(body),
        stream=body.get("stream_format") == "sse",
        choices=1 if tokens else 0,  # tts-1 bills its input characters alone
        output_audio=tokens,
    )


def input_characters(body: Mapping[str, Any]) -> int:
    """The characters of a speech body's ``input`` (Unicode code points), which ``tts-1`` bills."""
    return len(str(body.get("input") or ""))


def speech_input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated text tokens of a speech body: ``input`` and ``instructions``."""
    return text_tokens(body.get("input")) + text_tokens(body.get("instructions"))


def speech_output_tokens(body: Mapping[str, Any], per_text_token: float) -> int:
    """Output audio tokens for ``input`` at ``per_text_token`` audio tokens a text token, lengthened
    by a ``speed`` below 1 (0.25 makes speech four times as long)."""
    speed = body.get("speed", 1.0)
    if speed is None:
        speed = 1.0
    if not isinstance(speed, int | float) or isinstance(speed, bool) or speed <= 0:
        raise AdapterError(f"{_WHAT}: 'speed' must be a positive number, got {speed!r}")
    return math.ceil(text_tokens(body.get("input")) * per_text_token / min(float(speed), 1.0))


def speech_seconds(content: bytes, response_format: object) -> float | None:
    """Seconds of the speech in a binary answer: raw ``pcm`` by its size, others by their header."""
    if response_format == "pcm":
        return len(content) / PCM_BYTES_PER_S if content else None
    found = audio_duration(content)
    return found.seconds if found else None


# --- usage -----------------------------------------------------------------------------------------


def usage_from_response(data: Mapping[str, Any]) -> TokenUsage:
    """The usage an Audio answer reports: a transcription's ``usage`` (``duration`` or ``tokens``),
    a ``verbose_json`` answer's ``duration``, or the ``usage`` of a stream's last event
    (``transcript.text.done``; ``speech.audio.done``, whose output is all audio). Raises
    AdapterError where there is none."""
    if not isinstance(data, Mapping):
        raise AdapterError(f"{_WHAT} response must be a JSON object, got {type(data).__name__}")
    usage = data.get("usage")
    if isinstance(usage, Mapping):
        if usage.get("type") == "duration":
            return TokenUsage(audio_seconds=_whole_seconds(usage.get("seconds")))
        if "input_tokens" in usage:
            return _token_usage(usage, speech=data.get("type") == "speech.audio.done")
    duration = data.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        return TokenUsage(audio_seconds=_whole_seconds(duration))
    raise AdapterError(f"{_WHAT} response has no 'usage' object")


def _whole_seconds(value: object) -> int:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise AdapterError(f"{_WHAT} usage: 'seconds' must be a number of seconds, got {value!r}")
    return math.ceil(value)


def _token_usage(usage: Mapping[str, Any], *, speech: bool) -> TokenUsage:
    what = f"{_WHAT} usage"
    prompt = optional_int(usage, "input_tokens", what) or 0
    output = optional_int(usage, "output_tokens", what) or 0
    audio_in = optional_int(mapping(usage.get("input_token_details")), "audio_tokens", what) or 0
    return TokenUsage(input_tokens=prompt, output_tokens=output, input_audio_tokens=min(audio_in, prompt),
                      output_audio_tokens=output if speech else 0)


def estimated_usage(body: Mapping[str, Any], content: bytes) -> tuple[TokenUsage, str | None]:
    """The usage of an answer that reports none (speech's binary audio; a transcription as ``text``,
    ``srt`` or ``vtt``; a translation), and what it rests on (None where it is exact: ``tts-1``'s
    characters, a duration read from the file's header)."""
    kind = billing(body)
    if kind == "characters":
        return TokenUsage(input_characters=input_characters(body)), None
    if kind == "seconds":
        seconds, exact = audio_seconds(body)
        if exact:
            return TokenUsage(audio_seconds=seconds), None
        return TokenUsage(audio_seconds=seconds), "the audio's duration bounded by the file's size (its worst case)"
    if "file" in body:
        worst = worst_case_usage(body)
        out = math.ceil(len(content.decode("utf-8", "replace")) / CHARS_PER_TOKEN)
        return (dataclasses.replace(worst, output_tokens=out),
                "input at its worst case and the transcript's tokens from its length")
    heard = speech_seconds(content, body.get("response_format"))
    if heard is not None:
        out, basis = math.ceil(heard * SPEECH_AUDIO_TOKENS_PER_S), f"{heard:.1f} s of audio returned"
    else:
        out, basis = speech_output_tokens(body, SPEECH_AUDIO_TOKENS_PER_TEXT_TOKEN), "the input's length"
    usage = TokenUsage(input_tokens=speech_input_tokens(body), output_tokens=out, output_audio_tokens=out)
    return usage, f"{out} output audio tokens estimated from {basis}"


__all__ = [
    "API",
    "AUDIO_TOKENS_PER_S",
    "MAX_TOKEN_BILLED_AUDIO_S",
    "PCM_BYTES_PER_S",
    "SPEECH_AUDIO_TOKENS_PER_S",
    "SPEECH_AUDIO_TOKENS_PER_TEXT_TOKEN",
    "SPEECH_WORST_AUDIO_TOKENS_PER_TEXT_TOKEN",
    "TRANSCRIPTION_MAX_OUTPUT_TOKENS",
    "audio_seconds",
    "billing",
    "estimated_usage",
    "form_body",
    "input_characters",
    "priced",
    "priced_worst_case",
    "speech_input_tokens",
    "speech_output_tokens",
    "speech_seconds",
    "subject_from_request",
    "text_tokens",
    "usage_from_response",
    "worst_case_usage",
]
