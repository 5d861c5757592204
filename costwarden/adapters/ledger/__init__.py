"""Budget ledger stores, opened by URL.

``memory://`` is in-process (tests, single-process apps). The SQLite, Redis and PostgreSQL
stores follow the same :class:`~costwarden.engine.ledger.Ledger` contract.
"""

from __future__ import annotations

from costwarden.engine.ledger import Ledger
from costwarden.errors import LedgerError


def open_ledger(url: str) -> Ledger:
    """Open a ledger by URL: ``memory://`` (more stores arrive with the call-guard)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from costwarden.adapters.ledger.memory import MemoryLedger

        return MemoryLedger()
    raise LedgerError(f"unsupported ledger URL {url!r}; supported: memory://")


__all__ = ["open_ledger"]
