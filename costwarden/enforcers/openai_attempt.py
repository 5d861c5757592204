"""One HTTP attempt of the ``openai`` SDK as the call-guard's transport sees it: which attempt of
its call it is, whether the SDK retries a failed one, and with how many retries in all, and
whether a server refused what the guard changed in it (:func:`rejected_rewrites`).

Shared by the transport (``openai_guard.py``) and the Batch API edge (``openai_batches.py``)."""

from __future__ import annotations

import logging
import math
import sys
import types
from typing import TYPE_CHECKING

from costwarden.enforcers.attempt import rejected_rewrites, request_was_sent, retry_after_s, should_retry_status
from costwarden.enforcers.raw_headers import raw_header

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.guarded_call import GuardedCall

log = logging.getLogger("costwarden.callguard")

MAX_RETRY_AFTER_S = 120.0
"""The ``openai`` SDK does not retry a response whose ``Retry-After`` asks for longer than this."""

_RETRIED = frozenset({"RequestError", "SSLError", "EndOfStream"})
"""What the ``openai`` SDK retries of what a send raises (``request_exceptions`` and timeouts: httpx2's
``RequestError``, ``ssl.SSLError``, ``anyio.EndOfStream``); anything else reaches the caller at once."""


def attempt_of(request: httpx2.Request) -> int:
    """The SDK's retry count of this attempt (``x-stainless-retry-count``; 0 for the first)."""
    try:
        return int(raw_header(request.headers, b"x-stainless-retry-count") or 0)
    except ValueError:
        return 0


def sdk_max_retries(fallback: int, *, depth: int = 64) -> int:
    """The ``max_retries`` of the ``openai`` SDK retry loop this attempt is sent from, else ``fallback``.

    A transport only knows the client it was built for, but ``client.with_options(max_retries=N)``
    makes a copy sharing that transport whose retry loop runs N attempts: judged with the client's
    count, a smaller N left the hold of a failed call to its TTL, a larger one split the call into
    several reservations. The loop (``request`` in ``openai._base_client``) awaits or calls the
    transport, so its frame is on this stack (awaited coroutines included); its local
    ``max_retries`` is the count it uses. Read only after an attempt failed, in the transport's own
    frame (never from a worker thread)."""
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        code = frame.f_code
        if code.co_name == "request" and "retries_taken" in code.co_varnames and \
                str(frame.f_globals.get("__name__", "")).startswith("openai."):
            value = frame.f_locals.get("max_retries")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            break
        frame = frame.f_back
    return fallback


def retries_exception(exc: BaseException) -> bool:
    """Whether the SDK retries an attempt that raised ``exc`` (when it has retries left)."""
    return isinstance(exc, Exception) and any(cls.__name__ in _RETRIED for cls in type(exc).__mro__)


def retries_answer(response: httpx2.Response) -> bool:
    """Whether the SDK retries an attempt answered with this error ``response`` (when it has retries left)."""
    after = retry_after_s(response.headers)
    return should_retry_status(response.status_code, response.headers.get("x-should-retry")) and not (
        after is not None and math.isfinite(after) and after > MAX_RETRY_AFTER_S)


def failed(call: GuardedCall, attempt: int, exc: BaseException, max_retries: int) -> None:
    """The attempt raised: final unless the SDK retries what it raised and has retries left."""
    call.failed(exc, sent=request_was_sent(exc), final=not retries_exception(exc) or attempt >= max_retries)


def error_answer(
    call: GuardedCall, attempt: int, response: httpx2.Response, max_retries: int, warned: set[str] | None = None
) -> bool:
    """Record a non-2xx answer (final unless the SDK retries it); False for a 2xx one. ``warned``:
    the transport's record of what it warned about (:func:`rejected_rewrites`)."""
    status = call.status_code = response.status_code
    if 200 <= status < 300:
        return False
    retry = retries_answer(response)
    note = None if retry or warned is None else rejected_rewrites(call, status, warned)
    call.error_status(status, final=not retry or attempt >= max_retries, note=note)
    return True


__all__ = ["MAX_RETRY_AFTER_S", "attempt_of", "error_answer", "failed", "rejected_rewrites", "retries_answer",
           "retries_exception", "sdk_max_retries"]
