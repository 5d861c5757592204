"""Spend against limit per budget window, for ``costwarden budget status`` (no rendering here).

::

    from costwarden.adapters.ledger.status import budget_status

    for row in budget_status("sqlite:////var/lib/costwarden/ledger.db"):
        print(row.key, row.spent_usd, row.held_usd, row.limit_usd)

A row is one *current* window: a bucket whose window has not ended (or that never ends). For a
rolling window the row is the newest hourly bucket and its figures cover the whole window.
Limits are those of the last hold each bucket saw; a bucket only ever written by
``MemoryLedger.add_spend`` has no limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from costwarden.adapters.ledger.hold_specs import ROLLING_BUCKET_MS, epoch_ms, from_ms, to_usd

if TYPE_CHECKING:
    from costwarden.adapters.ledger.store import LedgerStore


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget window: settled spend and live holds over the window, its limit and end."""

    key: str
    spent_usd: float
    held_usd: float
    limit_usd: float | None
    ends_at: datetime | None

    @property
    def used_fraction(self) -> float | None:
        """Settled plus held spend as a fraction of the limit (None without a limit)."""
        if not self.limit_usd:
            return None
        return (self.spent_usd + self.held_usd) / self.limit_usd


@dataclass(frozen=True, slots=True)
class BucketRow:
    """What a store knows of one bucket, in micro-dollars (live holds only)."""

    key: str
    settled: int
    held: int
    limit: int | None
    window: tuple[str, ...]
    ends_ms: int | None


Lookup = Callable[[Sequence[str]], dict[str, tuple[int, int]]]
"""Settled and live-held micro-dollars for keys a store did not list (window keys outside the prefix)."""


def summarize(rows: Iterable[BucketRow], lookup: Lookup, now_ms: int) -> list[BudgetStatus]:
    """Rows of the current windows, sorted by key, with window-wide sums.

    A rolling window's hourly bucket stays current while its window is still read (W-1 hours
    after it stops receiving spend: a budget with no call this hour still has its spend), summed
    over the buckets still inside the window, and ends with the current hour. A bucket named in
    another bucket's window is a part of that window, not a budget of its own, and has no row."""
    rows = list(rows)
    known = {r.key: (r.settled, r.held) for r in rows}
    parts = {k for r in rows for k in r.window if k != r.key}
    current = [r for r in rows if r.key not in parts and (r.ends_ms is None or _read_until(r) > now_ms)]
    inside = {r.key: _inside(r, now_ms) for r in current}
    missing = sorted({k for keys in inside.values() for k in keys} - known.keys())
    if missing:
        known.update(lookup(missing))
    out = []
    for r in sorted(current, key=lambda r: r.key):
        figures = [known.get(k, (0, 0)) for k in inside[r.key]]
        ends = r.ends_ms
        if ends is not None and ends <= now_ms:  # a rolling window's newest bucket is the current hour's
            ends += ((now_ms - ends) // ROLLING_BUCKET_MS + 1) * ROLLING_BUCKET_MS
        out.append(
            BudgetStatus(
                r.key,
                to_usd(sum(f[0] for f in figures)),
                to_usd(sum(f[1] for f in figures)),
                None if r.limit is None else to_usd(r.limit),
                None if ends is None else from_ms(ends),
            )
        )
    return out


def _read_until(row: BucketRow) -> int:
    """When the last window that reads the bucket ends (hourly buckets: ``hold_specs``)."""
    assert row.ends_ms is not None
    return row.ends_ms + max(0, len(row.window) - 1) * ROLLING_BUCKET_MS


def _inside(row: BucketRow, now_ms: int) -> tuple[str, ...]:
    """The keys of the row's window that the window at ``now_ms`` still reads, oldest first: the
    i-th of N hourly buckets ends ``N-1-i`` hours before the newest and is read N-1 hours longer."""
    window = row.window or (row.key,)
    if row.ends_ms is None or len(window) < 2 or row.ends_ms > now_ms:
        return window
    return tuple(k for i, k in enumerate(window) if row.ends_ms + i * ROLLING_BUCKET_MS > now_ms)


def budget_status(
    ledger: LedgerStore | str, prefix: str = "budget:", *, now: datetime | None = None
) -> list[BudgetStatus]:
    """Every current budget window under ``prefix`` in a ledger (or a ledger URL, opened and closed
    here; a SQLite file is only read)."""
    if not isinstance(ledger, str):
        return ledger.status(prefix, now=now)
    from costwarden.adapters.ledger import ledger_options, open_ledger, split_lease, sqlite_path

    url = split_lease(ledger)[0]  # a leased ledger's status is its store's
    if url.lower().startswith("sqlite:") and sqlite_path(url) != ":memory:":
        from costwarden.adapters.ledger.sqlite import read_status

        timeout_s = ledger_options(url, "sqlite").get("timeout_s", 2.0)
        return read_status(sqlite_path(url), prefix, now=now, timeout_s=timeout_s)  # a wrong path gains no tables

    store = open_ledger(ledger)
    try:
        return store.status(prefix, now=now)
    finally:
        store.close()


def now_ms(now: datetime | None) -> int:
    return epoch_ms(now or datetime.now(UTC))


__all__ = ["BucketRow", "BudgetStatus", "budget_status", "summarize"]
