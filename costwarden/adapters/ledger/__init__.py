"""Budget ledger stores, opened by URL.

=====================================  ===================================================
``memory://``                          in-process (tests, one process)
``sqlite:///ledger.db``                SQLite file, relative path (the embedded default)
``sqlite:////var/lib/cw/ledger.db``    SQLite file, absolute path (SQLAlchemy's convention)
``sqlite://`` / ``sqlite:///:memory:`` private in-memory SQLite (one process)
``redis://host:6379/0?prefix=cw``      Redis (``rediss://`` for TLS); ``prefix`` is the
                                       namespace and the Redis Cluster hash tag
``postgresql://user@host/db``          PostgreSQL (also ``postgres://``); ``schema`` and
                                       ``table_prefix`` choose where the tables go
=====================================  ===================================================

Every URL takes ``timeout=<seconds>`` (per operation) and ``record_grace=<seconds>`` (how long a
reservation record outlives its TTL), and ``lease_calls=<N>`` to reserve most calls in memory
against short-lived slices of each budget held in the store (``lease_share``, ``lease_s``:
:mod:`~costwarden.adapters.ledger.leased`). Each store keeps the contract of
:class:`~costwarden.engine.ledger.Ledger` and adds ``status()`` and ``close()``
(:class:`~costwarden.adapters.ledger.store.LedgerStore`).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from costwarden.adapters.ledger.store import LedgerStore
from costwarden.errors import LedgerError

SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgresql", "postgres")


def open_ledger(url: str) -> LedgerStore:
    """Open a ledger store by URL; raises :class:`LedgerError` for an unknown scheme or bad option."""
    url, lease = split_lease(url)
    store = _open_store(url)
    if not lease:
        return store
    from costwarden.adapters.ledger.leased import LeasedLedger

    try:
        return LeasedLedger(store, **lease_options(lease))
    except LedgerError:
        store.close()
        raise


def split_lease(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its ``lease_*`` options, and those options (a leased ledger needs
    ``lease_calls``)."""
    parts = urlsplit(url)
    if "lease" not in parts.query:
        return url, {}
    query = parse_qsl(parts.query, keep_blank_values=True)
    lease = {name: value for name, value in query if name.startswith("lease_")}
    if lease and "lease_calls" not in lease:
        raise LedgerError(f"ledger URL option(s) {', '.join(sorted(lease))} need lease_calls=<N> to lease slices")
    rest = [(name, value) for name, value in query if not name.startswith("lease_")]
    base = url.split("?", 1)[0]
    return (f"{base}?{urlencode(rest)}" if rest else base), lease


def _open_store(url: str) -> LedgerStore:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from costwarden.adapters.ledger.memory import MemoryLedger

        return MemoryLedger(**ledger_options(url, "memory"))
    if scheme == "sqlite":
        from costwarden.adapters.ledger.sqlite import SqliteLedger

        return SqliteLedger(sqlite_path(url), **ledger_options(url, "sqlite"))
    if scheme in ("redis", "rediss"):
        from costwarden.adapters.ledger.redis import RedisLedger

        return RedisLedger.from_url(url)
    if scheme in ("postgresql", "postgres"):
        from costwarden.adapters.ledger.postgres import PostgresLedger

        return PostgresLedger.from_url(url)
    shown = ", ".join(f"{s}://" for s in SCHEMES)
    raise LedgerError(f"unsupported ledger URL {redact(url)!r}; supported schemes: {shown}")


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``; ``sqlite://`` → ``:memory:``."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in ("", "/", "/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise LedgerError(f"SQLite ledger URL {url!r} must look like sqlite:///relative.db or sqlite:////absolute.db")
    return rest[1:]


def ledger_options(url: str, store: str) -> dict[str, float]:
    """The options every store takes from a URL query: ``timeout`` and ``record_grace`` (seconds)."""
    names = {"timeout": "timeout_s", "record_grace": "record_grace_s"}
    if store == "memory":
        names.pop("timeout")
    out: dict[str, float] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name not in names:
            raise LedgerError(f"unknown option {name!r} in {store} ledger URL; options: {', '.join(sorted(names))}")
        out[names[name]] = number(name, value)
    return out


def number(name: str, value: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        parsed = float("nan")
    if not 0 < parsed < float("inf"):
        raise LedgerError(f"ledger URL option {name}={value!r} must be a positive number of seconds")
    return parsed


def lease_options(options: dict[str, str]) -> dict[str, Any]:
    """``lease_calls``, ``lease_share``, ``lease_s`` and ``lease_spent_s`` from a ledger URL's query,
    as keyword arguments."""
    names = {"lease_calls": "calls", "lease_share": "share", "lease_s": "admit_s", "lease_spent_s": "spent_s"}
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in names:
            raise LedgerError(f"unknown option {name!r} in ledger URL; lease options: {', '.join(sorted(names))}")
        try:
            out[names[name]] = number = float(value)
        except ValueError:
            number = float("nan")
        if not math.isfinite(number):
            raise LedgerError(f"ledger URL option {name}={value!r} must be a number, and finite") from None
    return out


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


__all__ = ["SCHEMES", "LedgerStore", "open_ledger"]
