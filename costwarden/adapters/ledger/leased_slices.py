"""What a leased ledger (``leased.py``) keeps in memory: the slices it holds in the store and the
calls it admitted from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from costwarden.engine.ledger import Hold, Reservation

Slot = tuple[str, float | None, tuple[str, ...], datetime | None, tuple[float, ...]]


@dataclass(slots=True, eq=False)
class Lease:
    """A slice of one budget window, held in the store under ``rid``."""

    rid: str
    slot: Slot
    template: Hold
    amount: int  # micro-dollars held in the store
    admit_until: datetime  # by the callers' clock
    admit_until_mono: float
    covers_until: datetime  # when the store lets the hold lapse
    held: int = 0  # worst cases of the calls admitted and not yet finished
    charged: int = 0  # real costs of finished calls, charged to the store separately
    calls: int = 0  # calls admitted and not yet finished
    retired: bool = False

    def room(self) -> int:
        return self.amount - self.held - self.charged

    def admits(self, now: datetime, mono: float, ttl_s: float, amount: int) -> bool:
        return (not self.retired and now < self.admit_until and mono < self.admit_until_mono
                and now + timedelta(seconds=ttl_s) <= self.covers_until and self.room() >= amount)


@dataclass(slots=True, eq=False)
class LocalCall:
    """A reservation admitted from slices."""

    holds: tuple[Hold, ...]
    leases: tuple[Lease, ...]
    amounts: tuple[int, ...]
    ttl_s: float
    outcome: Reservation
    lapses_mono: float  # when the slices it came from lapse in the store: it is forgotten then
    settling: bool = field(default=False)


def slot(hold: Hold) -> Slot:
    """The budget window a hold is for: calls with the same slot share a slice."""
    return (hold.key, hold.limit_usd, hold.window, hold.expires_at, hold.alert_at)


__all__ = ["Lease", "LocalCall", "Slot", "slot"]
