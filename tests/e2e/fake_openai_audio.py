"""The fake OpenAI Audio API: ``POST /v1/audio/transcriptions``, ``/v1/audio/translations`` and
``/v1/audio/speech``, answered as OpenAI's models answer.

A transcription or translation is a ``multipart/form-data`` form, parsed with the standard library's
``email`` parser (not the call-guard's reader) and recorded whole, as an image edit is
(``{"fields", "files", "raw"}``). The audio's duration is this fake's own reading: a WAV file's by
the standard library's ``wave`` module, any other's from the header ``x-fake-audio-seconds``
(:data:`OTHER_SECONDS` without it). Then, by model:

* ``whisper*``: ``usage: {type: "duration", seconds}`` (translations report no usage, as OpenAI's
  do; their ``verbose_json`` has the ``duration``);
* any other model bills tokens: the ``prompt``'s words as text tokens, :data:`AUDIO_TOKENS_PER_S`
  audio tokens a second (rounded up), the transcript's words as output: ``usage: {type: "tokens",
  input_tokens, input_token_details: {text_tokens, audio_tokens}, output_tokens, total_tokens}``;
  with ``stream=true`` the transcript comes a word a ``transcript.text.delta`` event, then
  ``transcript.text.done`` with the usage (``x-fake-truncate`` cuts it).

``response_format`` ``json`` (the default) and ``verbose_json`` answer JSON; ``text``, ``srt`` and
``vtt`` answer the transcript as plain text, without usage, as OpenAI does.

Speech (``POST /v1/audio/speech``, JSON) answers audio of :data:`SECONDS_PER_WORD` a word of
``input``: ``pcm`` as raw 24 kHz 16-bit mono samples, ``wav`` as a WAV file of them (``wave``),
anything else (``mp3``, the default) as bytes no header describes. With ``stream_format: "sse"``
the audio comes base64 in ``speech.audio.delta`` events, then ``speech.audio.done`` with ``usage:
{input_tokens, output_tokens, total_tokens}``: ``input`` and ``instructions`` words in,
:data:`SPEECH_TOKENS_PER_S` audio tokens a second of audio out. ``x-fake-usage`` (JSON) replaces
any usage's counts.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import wave
from typing import Any

from fake_openai_images import parse_multipart
from fake_wire import WireHandler

TRANSCRIPT = "the quick brown fox jumps over the lazy dog"
OTHER_SECONDS = 7.5
AUDIO_TOKENS_PER_S = 10
SECONDS_PER_WORD = 0.4
SPEECH_TOKENS_PER_S = 1250 / 60
_FORM_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")


def wav_bytes(seconds: float, rate: int = 16_000) -> bytes:
    """A mono 16-bit WAV file of ``seconds`` of silence, written by the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * round(seconds * rate)))
    return out.getvalue()


def audio_seconds(data: bytes, headers: Any) -> float:
    """This fake's reading of an upload's duration: WAV by ``wave``, others by ``x-fake-audio-seconds``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    return float(headers.get("x-fake-audio-seconds") or OTHER_SECONDS)


def transcription_usage(model: str, fields: dict[str, str], seconds: float, asked: dict[str, Any]) -> dict[str, Any]:
    if "whisper" in model:
        return {"type": "duration", "seconds": asked.get("seconds", seconds)}
    text = asked.get("text_tokens", len(fields.get("prompt", "").split()))
    audio = asked.get("audio_tokens", math.ceil(seconds * AUDIO_TOKENS_PER_S))
    output = asked.get("output_tokens", len(TRANSCRIPT.split()))
    return {"type": "tokens", "input_tokens": text + audio, "output_tokens": output,
            "total_tokens": text + audio + output,
            "input_token_details": {"text_tokens": text, "audio_tokens": audio}}


class AudioHandlers(WireHandler):
    """The Audio API's three paths; every other request goes on to the next handler class."""

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path not in (*_FORM_PATHS, "/v1/audio/speech"):
            super().do_POST()  # type: ignore[misc]
            return
        from fake_llm_server import Recorded

        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path == "/v1/audio/speech":
            body: Any = json.loads(raw)
        else:
            fields, files = parse_multipart(self.headers.get("content-type", ""), raw)
            body = {"fields": fields, "files": files, "raw": raw}
        failure = self.server.fake._record(Recorded("POST", self.path, headers, body))
        delay = self.headers.get("x-fake-delay-ms")  # as every other path: sleep before answering
        if delay:
            time.sleep(int(delay) / 1000)
        if failure is not None:
            self._json(failure, {"error": {"type": "server_error", "message": "try again"}}, {"retry-after-ms": "1"})
        elif path == "/v1/audio/speech":
            self._speech(body)
        else:
            self._transcribe(body["fields"], body["files"], translation=path.endswith("translations"))

    def _transcribe(self, fields: dict[str, str], files: list[tuple[str, str | None, str, bytes]], *,
                    translation: bool) -> None:
        data = next(data for name, _, _, data in files if name == "file")
        seconds = audio_seconds(data, self.headers)
        model = fields.get("model", "")
        usage = transcription_usage(model, fields, seconds, json.loads(self.headers.get("x-fake-usage") or "{}"))
        fmt = fields.get("response_format", "json")
        if fields.get("stream") == "true" and "whisper" not in model:
            events: list[tuple[str | None, Any]] = [
                (None, {"type": "transcript.text.delta", "delta": f" {word}" if index else word})
                for index, word in enumerate(TRANSCRIPT.split())]
            self._sse([*events, (None, {"type": "transcript.text.done", "text": TRANSCRIPT, "usage": usage})])
        elif fmt in ("text", "srt", "vtt"):
            cue = f"1\n00:00:00,000 --> 00:00:{min(int(seconds), 59):02d},000\n{TRANSCRIPT}\n"
            text = TRANSCRIPT if fmt == "text" else cue
            self._audio_bytes("text/plain; charset=utf-8", text.encode())
        elif fmt == "verbose_json":
            answer = {"task": "translate" if translation else "transcribe", "language": "english",
                      "duration": seconds, "text": TRANSCRIPT, "segments": []}
            self._json(200, answer if translation else {**answer, "usage": usage})
        else:
            self._json(200, {"text": TRANSCRIPT} if translation else {"text": TRANSCRIPT, "usage": usage})

    def _speech(self, body: dict[str, Any]) -> None:
        words = len(str(body.get("input", "")).split())
        seconds = words * SECONDS_PER_WORD
        pcm = bytes(2 * round(seconds * 24_000))
        fmt = body.get("response_format", "mp3")
        if body.get("stream_format") == "sse":
            asked = json.loads(self.headers.get("x-fake-usage") or "{}")
            text = asked.get("input_tokens", words + len(str(body.get("instructions", "")).split()))
            out = asked.get("output_tokens", math.ceil(seconds * SPEECH_TOKENS_PER_S))
            chunks = [pcm[i:i + 4800] for i in range(0, len(pcm), 4800)] or [b""]
            self._sse([*((None, {"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()}) for c in chunks),
                       (None, {"type": "speech.audio.done",
                               "usage": {"input_tokens": text, "output_tokens": out, "total_tokens": text + out}})])
        elif fmt == "pcm":
            self._audio_bytes("audio/pcm", pcm)
        elif fmt == "wav":
            self._audio_bytes("audio/wav", wav_bytes(seconds, 24_000))
        else:
            self._audio_bytes("audio/mpeg", b"\x00fake-mp3\x00" * max(1, len(pcm) // 1000))

    def _audio_bytes(self, content_type: str, data: bytes) -> None:  # not _bytes: the batch handler has one
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def with_openai_audio(handler: type) -> type:
    """``handler`` with the Audio API's paths in front of its own."""
    return type(handler.__name__, (AudioHandlers, handler), {})


__all__ = [
    "AUDIO_TOKENS_PER_S",
    "OTHER_SECONDS",
    "SECONDS_PER_WORD",
    "SPEECH_TOKENS_PER_S",
    "TRANSCRIPT",
    "AudioHandlers",
    "audio_seconds",
    "transcription_usage",
    "wav_bytes",
    "with_openai_audio",
]
