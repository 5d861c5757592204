"""What one HTTP attempt's outcome means for a guarded call: sent or not, retried or final.

Shared by the provider edges. Both SDKs retry connection errors, timeouts and the statuses 408,
409, 429 and 5xx (unless the server says ``x-should-retry``), up to ``max_retries`` times (2 by
default). Exceptions are recognised by class name along their MRO and cause chain, so the same
rules read ``httpx2`` and SDK exceptions without importing either.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from costwarden.engine.subjects import TokenUsage
from costwarden.errors import describe

if TYPE_CHECKING:
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall

log = logging.getLogger("costwarden.callguard")

# The request never (fully) left: nothing can have been billed.
_NOT_SENT = frozenset(
    {"ConnectError", "ConnectTimeout", "PoolTimeout", "WriteError", "WriteTimeout", "UnsupportedProtocol",
     "ProxyError", "LocalProtocolError", "InvalidURL", "ConnectionRefusedError"}
)
_RETRIED = frozenset({"APIConnectionError", "APITimeoutError", "RetryableError", "TransportError", "TimeoutException"})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _named(exc: BaseException, names: frozenset[str]) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def request_was_sent(exc: BaseException) -> bool:
    """False when the failure shows the request never left (connect/pool/write errors); True
    otherwise, including cancellation, where it cannot be known and the input is charged."""
    return not any(_named(e, _NOT_SENT) for e in _chain(exc))


def retryable_exception(exc: BaseException) -> bool:
    """Whether the SDK's retry loop retries this exception (connection errors and timeouts)."""
    return isinstance(exc, Exception) and any(_named(e, _RETRIED) for e in _chain(exc)[:2])


def should_retry_status(status: int, should_retry_header: str | None) -> bool:
    """The SDKs' retry rule for an error status."""
    if should_retry_header == "true":
        return True
    if should_retry_header == "false":
        return False
    return status in (408, 409, 429) or status >= 500


MAX_BACKOFF_S = 8.0
"""The longest back-off either SDK sleeps between attempts when the server names no delay."""


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The delay a response asks for before a retry, read as the SDKs read it (``retry-after-ms``,
    then ``retry-after`` in seconds or as an HTTP date); None when it names none."""
    if headers is None:
        return None
    for header, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            continue
    when = email.utils.parsedate_tz(headers.get("retry-after") or "")
    return None if when is None else float(email.utils.mktime_tz(when) - time.time())


def retry_wait_s(headers: Mapping[str, str] | None = None) -> float:
    """The longest the SDK may sleep before retrying an attempt that failed with these response headers."""
    after = retry_after_s(headers)
    return max(after, MAX_BACKOFF_S) if after is not None and math.isfinite(after) else MAX_BACKOFF_S


def max_retries_of(option: object, guard: CallGuard) -> int:
    """The request's own ``max_retries`` when given, else the guard's (the SDK default)."""
    return option if isinstance(option, int) and not isinstance(option, bool) else guard.max_retries


def end_reason(complete: bool, error: BaseException | None) -> str:
    if error is not None:
        return describe(error) if isinstance(error, Exception) else f"{type(error).__name__}: closed by the caller"
    return "the body ended" if complete else "closed by the caller"


def safely(call: GuardedCall, after: Callable[..., None], *args: Any) -> None:
    """Run an edge's after-response step; a bug there must not cost the caller a response that
    already arrived, so it is logged and the call is charged its reserved worst case."""
    try:
        after(*args)
    except Exception as exc:
        log.exception("call-guard accounting failed after the response arrived")
        call.charge_estimate(error=f"call-guard accounting failed: {describe(exc)}")


def charge_json_body(
    call: GuardedCall,
    content: bytes,
    usage_of: Callable[[Mapping[str, Any]], TokenUsage],
    completion_of: Callable[[Mapping[str, Any]], Any],
) -> None:
    """Complete ``call`` from a JSON response body; without readable usage charge the reserved worst case.
    Reading and pricing the body is part of the settlement, so with a background settler it runs there."""
    finish_json_body(call, content, partial(complete_from_data, usage_of=usage_of, completion_of=completion_of))


def finish_json_body(
    call: GuardedCall, content: bytes, finish: Callable[[GuardedCall, Mapping[str, Any]], None]
) -> None:
    """Parse a JSON response body and hand it to ``finish`` (on the settler thread when there is one);
    a body that is not JSON charges the reserved worst case."""
    call.mark_ended()
    call.guard.later(safely, call, _finish_json_body, call, content, finish)


def _finish_json_body(
    call: GuardedCall, content: bytes, finish: Callable[[GuardedCall, Mapping[str, Any]], None]
) -> None:
    try:
        data = json.loads(content)
    except Exception as exc:
        call.charge_estimate(error=f"response has no readable usage ({describe(exc)}); charged the estimate")
        return
    finish(call, data)


def complete_from_data(
    call: GuardedCall,
    data: Any,
    usage_of: Callable[[Mapping[str, Any]], TokenUsage],
    completion_of: Callable[[Mapping[str, Any]], Any],
) -> None:
    """Complete ``call`` from a parsed response; without readable usage charge the reserved worst case."""
    try:
        usage = usage_of(data)
    except Exception as exc:
        call.charge_estimate(error=f"response has no readable usage ({describe(exc)}); charged the estimate")
        return
    model = data.get("model")
    call.complete(usage, served_model=model if isinstance(model, str) else None, completion=completion_of(data),
                  response=data if isinstance(data, Mapping) else None)


def rejected_rewrites(call: GuardedCall, status: int, warned: set[str]) -> str | None:
    """The note on a 4xx answer (not 429) to a request the guard changed, None for any other.

    A server that does not take what the guard changed (older vLLM and TGI answer 400 to the
    ``stream_options`` the OpenAI edge adds; a proxy may refuse an added ``cache_control``) fails
    every call the guard changes so; the application sees only the server's error, so the guard
    says what it changed: a warning once per rewrite in ``warned`` (a transport's, or the Anthropic
    edge's), and the same words in the call's cost event."""
    if not call.rewrites or not 400 <= status < 500 or status == 429:
        return None
    done = "; ".join(call.rewrites)
    note = f"the server rejected a request the call-guard changed ({done})"
    fresh = [r for r in call.rewrites if f"rejected: {r}" not in warned]
    if fresh:
        warned.update(f"rejected: {r}" for r in fresh)
        log.warning("call-guard: %s answered HTTP %d: %s; the application gets the server's error as it came. A "
                    "server that does not take such a change fails every call the guard changes so (this is "
                    "said once per change)", call.edge.name, status, note)
    return note


__all__ = [
    "charge_json_body",
    "complete_from_data",
    "finish_json_body",
    "end_reason",
    "max_retries_of",
    "rejected_rewrites",
    "request_was_sent",
    "retry_after_s",
    "retry_wait_s",
    "retryable_exception",
    "safely",
    "should_retry_status",
]
