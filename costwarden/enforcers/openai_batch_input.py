"""The input file of a batch creation as the Batch API edge (``openai_batches.py``) reads it: its
requests as one batch body for ``CallGuard.begin``, what a failed read means, and when a file that
cannot be read refuses the batch (an enforced budget: fail closed) or lets it go ahead unjudged."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.attempt import should_retry_status
from costwarden.errors import AdapterError

if TYPE_CHECKING:
    import httpx2

    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.guarded_call import GuardedCall
    from costwarden.enforcers.openai_batches import Job

log = logging.getLogger("costwarden.callguard")


def transient(fetched: httpx2.Response) -> bool:
    """Whether the input file's read failed as the SDK retries (429, 5xx, ``x-should-retry``): that
    answer is then the creation attempt's, so the SDK retries the creation, file read included;
    nothing was judged, reserved or created."""
    return not fetched.is_success and should_retry_status(fetched.status_code, fetched.headers.get("x-should-retry"))


def unread_retry(guard: CallGuard, job: Job) -> GuardedCall | None:
    """The call an earlier attempt of this creation holds for, when this retry's read of the input
    file failed (:func:`transient`): that answer is the retry's, so the call records it — kept
    for the SDK's next retry, or, when the SDK retries no more, finished as a failed creation (the
    batches its attempts that failed once sent made are found and held: ``openai_batch_duplicates``)
    instead of left held for the batch TTL. None for a first attempt, or a retry of no call this
    guard holds."""
    if job.attempt == 0:
        return None
    retried, _ = guard._pending(job.key, job.attempt)  # CallGuard has no public lookup of a retried call yet
    return retried


def input_requests(guard: CallGuard, job: Job, status: int, content: bytes) -> dict[str, Any] | None:
    """The input file's requests as one body (``{"requests": [{"custom_id", "params"}, ...]}``);
    None when it cannot be read and no budget is enforced (the batch goes ahead unjudged).
    Raises AdapterError when it cannot be read and a budget is enforced (fail closed)."""
    try:
        if not 200 <= status < 300:
            raise ValueError(f"could not be read (HTTP {status})")
        return _requests(content)
    except ValueError as exc:
        _unjudged(guard, job.file_id, str(exc))
        return None


def _requests(content: bytes) -> dict[str, Any]:
    requests: list[dict[str, Any]] = []
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
        body = line.get("body") if isinstance(line, Mapping) else None
        if not isinstance(body, Mapping):
            raise ValueError(f"line {number} has no 'body' object")
        requests.append({"custom_id": line.get("custom_id"), "params": body})
    if not requests:
        raise ValueError("has no requests")
    return {"requests": requests}


def enforces_budgets(guard: CallGuard) -> bool:
    """Whether a budget of the guard can refuse a call (a ledger, and a budget that does not only warn)."""
    return guard.ledger is not None and bool(guard.budget_rules - guard.warn_only_budgets)


def _unjudged(guard: CallGuard, file_id: str, reason: str) -> None:
    if enforces_budgets(guard):
        raise AdapterError(
            f"OpenAI batch refused before it was created: its input file {file_id} {reason}, so the call-guard "
            "cannot judge its requests, and enforced budgets fail closed"
        )
    log.warning("call-guard: an OpenAI batch goes ahead unjudged and unreserved: its input file %s %s (no budget "
                "is enforced)", file_id, reason)


__all__ = ["enforces_budgets", "input_requests", "transient", "unread_retry"]
