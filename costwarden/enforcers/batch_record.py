"""Who made a Message Batch (or a background Response): what its cost event needs from its
creation, readable by any process.

A batch's results are often read by another process than the one that created it: after a
restart, by a worker, or by ``costwarden budget settle-batches``. Its cost event should still carry
the creator's feature, user, team and tags, the model asked for and the worst case reserved.
The creating process keeps this :class:`BatchRecord` in memory, and also writes it to the ledger
with the batch's reservation: a zero hold on the key

    ``costwarden-batch-of:<batch id>:feature=search&user=u-123&team=growth&model=...``

(URL-encoded, so only ASCII letters, digits and ``%+.-_~=&``). The key is a string, which every
store keeps, so no store needs a new field. The hold is part of the batch's one reservation, so
the record is written with the hold itself or not at all. Its bucket outlives the hold: it is
current for ``RESULTS_KEPT_S`` (30 days), as long as the results can be downloaded. A settle adds
the batch's cost to the bucket, as it does to every hold's.

A record longer than ``MAX_KEY_CHARS`` drops its rewrites, then its tags (``partial=1`` says so). If
it is still too long, it is not written. Then a reader's event has the reader's attribution, as
it has for a batch created before records existed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from costwarden.engine.ledger import Hold

if TYPE_CHECKING:
    from costwarden.engine.ledger import Ledger

log = logging.getLogger("costwarden.callguard")

RECORD_PREFIX = "costwarden-batch-of:"
MAX_KEY_CHARS = 1000
"""Longest record key written (PostgreSQL's index entries stop at about 2.7 kB)."""
_TAG = "tag."


@dataclass(frozen=True)
class BatchRecord:
    """The parts of a batch's cost event known at its creation."""

    feature: str | None
    user: str | None
    team: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    model_requested: str = ""
    model: str = ""
    estimate: float | None = None
    rewrites: tuple[str, ...] = ()
    started_at: datetime | None = None


def record_key(batch_id: str, record: BatchRecord) -> str | None:
    """The ledger key that carries ``record`` for ``batch_id``; None when it would be too long."""
    head = f"{RECORD_PREFIX}{batch_id}:"
    for rewrites, tags in ((record.rewrites, record.tags), ((), record.tags), ((), {})):
        partial = len(rewrites) < len(record.rewrites) or len(tags) < len(record.tags)
        key = head + urlencode(_pairs(record, rewrites, tags, partial))
        if len(key) <= MAX_KEY_CHARS:
            return key
    return None


def record_hold(batch_id: str, record: BatchRecord, now: datetime, keep_s: float) -> Hold | None:
    """A zero hold whose key carries ``record``, its bucket current for ``keep_s``; None when too long."""
    key = record_key(batch_id, record)
    if key is None:
        log.warning("batch %s: its attribution is too long to keep in the ledger; a reader elsewhere reports its own",
                    batch_id)
        return None
    return Hold(key, 0.0, expires_at=now + timedelta(seconds=keep_s), check=False)


def parse_record(text: str) -> BatchRecord | None:
    """The record in a key's text after ``<prefix><batch id>:``; None when it is not one."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    single = dict(pairs)
    if "model" not in single:
        return None
    try:
        estimate = float(single["estimate"]) if "estimate" in single else None
        started = datetime.fromisoformat(single["started_at"]) if "started_at" in single else None
    except ValueError:
        return None
    return BatchRecord(
        feature=single.get("feature"),
        user=single.get("user"),
        team=single.get("team"),
        tags={k[len(_TAG):]: v for k, v in pairs if k.startswith(_TAG)},
        model_requested=single.get("model_requested", single["model"]),
        model=single["model"],
        estimate=estimate,
        rewrites=tuple(v for k, v in pairs if k == "rewrite"),
        started_at=started,
    )


def recorded(ledger: Ledger, batch_id: str, now: datetime) -> BatchRecord | None:
    """The record the creating process wrote for ``batch_id``, from the ledger's status; None when
    there is none (or the ledger cannot list keys, or cannot be read now)."""
    status = getattr(ledger, "status", None)
    if status is None:
        return None
    head = f"{RECORD_PREFIX}{batch_id}:"
    try:
        keys = [row.key for row in status(head, now=now)]
    except Exception as exc:  # the event falls back to the reader's attribution
        log.warning("batch %s: its creator's attribution could not be read (%s)", batch_id, exc)
        return None
    for key in keys:
        if key.startswith(head):  # SQLite's LIKE ignores case
            found = parse_record(key[len(head):])
            if found is not None:
                return found
    return None


def _pairs(
    record: BatchRecord, rewrites: tuple[str, ...], tags: Mapping[str, str], partial: bool
) -> list[tuple[str, str]]:
    pairs = [(name, value) for name, value in (
        ("feature", record.feature), ("user", record.user), ("team", record.team)) if value is not None]
    pairs += [(_TAG + k, v) for k, v in sorted(tags.items())]
    pairs += [("model_requested", record.model_requested), ("model", record.model)]
    if record.estimate is not None:
        pairs.append(("estimate", repr(record.estimate)))
    if record.started_at is not None:
        pairs.append(("started_at", record.started_at.isoformat()))
    pairs += [("rewrite", r) for r in rewrites]
    if partial:
        pairs.append(("partial", "1"))
    return pairs


__all__ = ["MAX_KEY_CHARS", "RECORD_PREFIX", "BatchRecord", "parse_record", "record_hold", "record_key", "recorded"]
