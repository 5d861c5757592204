"""Settling the Message Batches whose results nobody read: :meth:`CallGuard.settle_pending_batches`
(and the background Responses nobody read after they ended: :meth:`CallGuard.settle_pending_responses`).

A batch holds its worst case from creation until its results are read (``batch_settle.py``). If
the application never reads them, the hold lapses at the guard's ``batch_reservation_ttl_s`` and the
batch's real spend never reaches the ledger. This sweep closes that gap::

    guard.settle_pending_batches(anthropic.Anthropic())     # e.g. hourly, from a cron job or at exit

It lists the batches the ledger still holds for: the marker keys ``costwarden-batch:<id>`` with a
live hold, from ``ledger.status``. For each, it asks the API for the batch. It reads the results of
those that have ended and settles them with :func:`~costwarden.enforcers.batch_settle.settle_batch`.
That is the same settlement as any read: idempotent across processes, one cost event, and budget
alerts. Batches still processing are left for the next sweep.

The client may be any ``anthropic.Anthropic`` client with access to the batches, guarded or not.
An ``openai.OpenAI`` client sweeps the OpenAI Batch API jobs instead
(:func:`settle_pending_openai_batches`: their markers are ``costwarden-openai-batch:<id>``, another
OpenAI-compatible provider's ``costwarden-<provider>-batch:<id>``; an
ended batch's output file is read and settled, ``openai_batch_reads.py``).
When it is guarded by this guard, its own read settles the batch first, and the explicit settle
finds nothing left to do. ``costwarden budget settle-batches`` runs a sweep from the command line,
and ``costwarden budget settle-responses`` one of background Responses.

A sweep in another process than the one that created a batch charges the same budget windows
(the ledger's reservation holds them), and its cost event has the creator's feature, user, team,
tags and requested model: the batch's reservation carries them (``batch_record.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.batch_settle import MARKER_PREFIX, settle_batch
from costwarden.errors import describe

if TYPE_CHECKING:
    from collections.abc import Callable

    from costwarden.enforcers.callguard import CallGuard

log = logging.getLogger("costwarden.callguard")


@dataclass(frozen=True)
class PendingBatches:
    """What one sweep found, by batch id."""

    settled: tuple[str, ...] = ()
    """Ended batches whose results were read and settled by this sweep (or, just before it, by a
    guarded client's own read)."""
    processing: tuple[str, ...] = ()
    """Batches the API still processes: their holds stay, for a later sweep."""
    failed: tuple[tuple[str, str], ...] = ()
    """Batches that could not be looked up or read, with the reason; their holds stay until the TTL."""


def pending_batch_ids(guard: CallGuard, *, now: datetime | None = None) -> list[str]:
    """Ids of the batches the guard's ledger still holds a worst case for (results not yet settled)."""
    rows = _held(guard, MARKER_PREFIX, now or guard.clock())
    return [key[len(MARKER_PREFIX):] for key in rows]


def settle_pending_batches(guard: CallGuard, client: Any) -> PendingBatches:
    """Read and settle every ended batch the guard's ledger still holds for; see the module.
    ``client`` is an ``anthropic.Anthropic`` (Message Batches) or an ``openai.OpenAI`` (Batch API)."""
    if type(client).__module__.split(".")[0] == "openai":
        return settle_pending_openai_batches(guard, client)

    def read(batch_id: str) -> list[Any] | None:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status != "ended":
            return None
        return [line.to_dict() for line in client.messages.batches.results(batch_id)]

    return _sweep(guard, MARKER_PREFIX, read, lambda batch_id, lines: settle_batch(guard, batch_id, lines))


def settle_pending_openai_batches(guard: CallGuard, client: Any, *, provider: str = "openai") -> PendingBatches:
    """Read and settle every ended OpenAI batch the guard's ledger still holds for, through
    ``client`` (an ``openai.OpenAI``): its batch object, then its output file, if it has one.
    ``provider`` (the name the transport was given, for an OpenAI-compatible API) says whose: only
    the batches a transport for it created are read, and priced as its."""
    from costwarden.enforcers.openai_batch_reads import settle_openai_batch
    from costwarden.enforcers.openai_batches import ENDED, marker_prefix

    def read(batch_id: str) -> tuple[dict[str, Any], bytes] | None:
        batch = client.batches.retrieve(batch_id).to_dict()
        if batch.get("status") not in ENDED:
            return None
        output = batch.get("output_file_id")
        return batch, client.files.content(output).content if output else b""

    def settle(batch_id: str, read: tuple[dict[str, Any], bytes]) -> None:
        settle_openai_batch(guard, read[0], read[1], provider=provider)

    return _sweep(guard, marker_prefix(provider), read, settle)


def _sweep(
    guard: CallGuard, prefix: str, read: Callable[[str], Any], settle: Callable[[str, Any], Any]
) -> PendingBatches:
    """For each batch whose marker under ``prefix`` still holds: ``read`` it (None while it is
    processing), then ``settle`` what was read (which does nothing when a guarded client's own
    read settled it first)."""
    settled: list[str] = []
    processing: list[str] = []
    failed: list[tuple[str, str]] = []
    for key in _held(guard, prefix, guard.clock()):
        batch_id = key[len(prefix):]
        try:
            got = read(batch_id)
        except Exception as exc:  # an API or network error: this batch waits for the next sweep
            log.warning("batch %s: results not read (%s); its hold stays until its TTL", batch_id, describe(exc))
            failed.append((batch_id, describe(exc)))
            continue
        if got is None:
            processing.append(batch_id)
            continue
        settle(batch_id, got)
        if key in _held(guard, key, guard.clock()):
            failed.append((batch_id, "the ledger did not settle it (see the log)"))
        else:
            settled.append(batch_id)
    return PendingBatches(tuple(settled), tuple(processing), tuple(failed))


def settle_pending_responses(guard: CallGuard, client: Any, *, provider: str = "openai") -> PendingBatches:
    """Read every background Response the guard's ledger still holds a worst case for, through
    ``client`` (an ``openai.OpenAI``), and settle those that ended (``background_responses.py``).
    Responses still running are left for the next sweep."""
    from costwarden.enforcers.background_responses import ENDED
    from costwarden.enforcers.background_responses import MARKER_PREFIX as RESPONSE_PREFIX
    from costwarden.enforcers.background_responses import settle as settle_response

    settled: list[str] = []
    processing: list[str] = []
    failed: list[tuple[str, str]] = []
    for key in _held(guard, RESPONSE_PREFIX, guard.clock()):
        response_id = key[len(RESPONSE_PREFIX):]
        try:
            data = client.responses.retrieve(response_id).to_dict()
        except Exception as exc:  # an API or network error, or gone: this one waits for the next sweep
            log.warning("background response %s: not read (%s); its hold stays until its TTL", response_id,
                        describe(exc))
            failed.append((response_id, describe(exc)))
            continue
        if data.get("status") not in ENDED:
            processing.append(response_id)
            continue
        settle_response(guard, provider, response_id, data)  # False when the client's own guarded read settled it
        if key in _held(guard, key, guard.clock()):
            failed.append((response_id, "the ledger did not settle it (see the log)"))
        else:
            settled.append(response_id)
    return PendingBatches(tuple(settled), tuple(processing), tuple(failed))


def _held(guard: CallGuard, prefix: str, now: datetime) -> list[str]:
    """Keys under ``prefix`` with a live hold, from the ledger's status."""
    status = getattr(guard.ledger, "status", None)
    if status is None:
        raise ValueError(
            "settling pending batches needs a ledger that lists its holds (open_ledger(...)); "
            f"this guard's ledger is {type(guard.ledger).__name__}"
        )
    return [r.key for r in status(prefix, now=now) if r.held_usd > 0]


__all__ = ["PendingBatches", "pending_batch_ids", "settle_pending_batches", "settle_pending_openai_batches",
           "settle_pending_responses"]
