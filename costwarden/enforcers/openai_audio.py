"""Settling an OpenAI Audio call from what its answer shows (:mod:`costwarden.adapters.openai_audio`).

The transport in ``openai_guard.py`` taps the answer's body as for any call; for an ``audio``
call the tap's end lands here (:func:`audio_tap`):

* a JSON answer (a transcription as ``json`` / ``verbose_json`` / ``diarized_json``) settles to
  its ``usage`` (``duration`` seconds or ``tokens``), or a ``verbose_json`` answer's ``duration``;
* an SSE answer (``stream=true`` transcriptions, ``stream_format="sse"`` speech) settles to the
  ``usage`` of its ``transcript.text.done`` / ``speech.audio.done`` event; one cut before it is
  charged the worst case of its input and, for a transcription, the transcript it showed (about 4
  characters a token), for speech its whole worst case (the audio is made, and billed, whatever
  happens to the connection);
* an answer without usage (speech's binary audio; a transcription as ``text`` / ``srt`` / ``vtt``;
  a translation as ``json``) settles to :func:`~costwarden.adapters.openai_audio.estimated_usage`:
  exact for ``tts-1`` (its characters) and for ``whisper-1`` where the file's header gave the
  duration; otherwise an estimate that the cost event's ``error`` names, never $0;
* a body closed before its end, unreadable or too large to keep is charged the worst case.

A usage in seconds or characters that the model has no price for (a token price alone would count
them as nothing) is charged the reserved worst case instead, with an error that says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from costwarden.adapters import openai_audio as adapter
from costwarden.enforcers.attempt import end_reason, safely
from costwarden.enforcers.bodytap import BodyTap
from costwarden.enforcers.guarded_call import GuardedCall
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.subjects import LlmCall, TokenUsage
from costwarden.errors import AdapterError

_DONE_EVENTS = frozenset({"transcript.text.done", "speech.audio.done"})


def audio_estimate(pricer: LlmPricer, subject: LlmCall, *, output: bool = True) -> float:
    """USD of an Audio call's worst case, or of its input alone (``output=False``: what a call that
    was sent is charged at least — all of a whisper or tts-1 call's bill, which has no output
    share). Raises where the model has no price for its units (:func:`~.adapters.openai_audio.priced`)."""
    assert subject.body is not None  # an audio subject is built from its body
    usage = adapter.worst_case_usage(subject.body)
    if not output:
        usage = dataclasses.replace(usage, output_tokens=0, output_audio_tokens=0)
    return adapter.priced(pricer, subject.provider, subject.model, usage, subject.body)


class AudioStream:
    """Reads a transcription's or speech's SSE events: the transcript shown, and the final event."""

    __slots__ = ("done", "text_chars")

    def __init__(self) -> None:
        self.done: Mapping[str, Any] | None = None
        self.text_chars = 0

    def on_event(self, data: str) -> bool:
        event = json.loads(data)
        if not isinstance(event, Mapping):
            return True
        kind = event.get("type")
        if kind == "transcript.text.delta" and isinstance(event.get("delta"), str):
            self.text_chars += len(event["delta"])
        elif kind in _DONE_EVENTS:
            self.done = event
        return True


def audio_tap(call: GuardedCall, sse: bool) -> tuple[AudioStream | None, Callable[[BodyTap, bool, Any], None]]:
    """The observer (SSE answers) and the end callback of an audio call's body tap."""
    observer = AudioStream() if sse else None
    return observer, partial(_ended, call, observer)


def _ended(call: GuardedCall, observer: AudioStream | None, tap: BodyTap, complete: bool,
           error: BaseException | None) -> None:
    content = b"" if observer is not None else bytes(tap.body)
    unreadable = tap.undecodable or tap.truncated
    call.mark_ended()
    call.guard.later(safely, call, settle, call, observer, content, complete and not unreadable,
                     "response body could not be read for usage" if unreadable else end_reason(complete, error))


def settle(call: GuardedCall, observer: AudioStream | None, content: bytes, complete: bool, ended: str) -> None:
    """Complete ``call`` from its answer (see the module docstring)."""
    body = call.body
    if observer is not None:
        _settle_stream(call, observer, complete, ended)
    elif not complete:
        _charge(call, adapter.worst_case_usage(body), "estimate", f"{ended}; charged the worst case", "partial")
    else:
        data = _json(content)
        try:
            usage = adapter.usage_from_response(data) if data is not None else None
        except Exception:
            usage = None
        if usage is not None:
            _charge(call, usage, "response", None, "ok", data)
        else:
            estimate, basis = adapter.estimated_usage(body, content)
            note = f"the response reports no usage: settled at {basis}" if basis else None
            _charge(call, estimate, "estimate", note, "ok")


def _settle_stream(call: GuardedCall, observer: AudioStream, complete: bool, ended: str) -> None:
    done = observer.done
    try:
        usage = adapter.usage_from_response(done) if done is not None else None
    except Exception:
        usage = None
    if usage is not None:
        _charge(call, usage, "stream", None, "ok", done)
        return
    worst = adapter.worst_case_usage(call.body)
    ended = f"stream ended before its usage ({ended})"
    if "file" in call.body:  # a transcript: its input was heard; its output is what it showed
        shown = -(-observer.text_chars // adapter.CHARS_PER_TOKEN)
        worst = TokenUsage(input_tokens=worst.input_tokens, input_audio_tokens=worst.input_audio_tokens,
                           output_tokens=shown, audio_seconds=worst.audio_seconds)
        _charge(call, worst, "estimate", f"{ended}; charged the input's worst case and the text shown", "partial")
        return
    _charge(call, worst, "estimate", f"{ended}; charged the worst case (the speech is made and billed)", "partial")


def _charge(call: GuardedCall, usage: TokenUsage, source: Any, error: str | None, outcome: Any,
            response: Mapping[str, Any] | None = None) -> None:
    try:
        adapter.priced(call.guard.pricer, call.subject.provider, call.model, usage, call.body)
    except AdapterError as exc:  # seconds or characters a token price would count as nothing
        call.charge_estimate(error=f"usage not priced ({exc}); charged the reserved estimate")
        return
    except Exception:  # noqa: S110 - a usage that cannot be priced is reported by ``complete`` itself
        pass
    call.complete(usage, source=source, outcome=outcome, error=error, response=response)


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


__all__ = ["AudioStream", "audio_tap", "settle"]
