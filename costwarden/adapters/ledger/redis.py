"""The Redis ledger: one Lua script — one round trip — per reserve, settle, release, charge and lookup.

::

    ledger = RedisLedger.from_url("redis://127.0.0.1:6379/0?prefix=costwarden&timeout=0.25")

**Keys.** Every key starts with the hash tag ``{<prefix>}``, so a whole namespace lives in one
Redis Cluster slot and one script may touch any of its keys. The tag cannot be per budget owner:
one reservation holds against the user's, the team's and the feature's budgets at once (a
team's bucket is shared by all its users, so they would all end up in one slot anyway), and
``settle`` is given only a reservation id, from which a per-owner tag could not be recovered.
The price is that one namespace cannot be spread over a cluster; to scale out, give each tenant
or application its own ``prefix`` (one Redis slot serves far more reserve/settle pairs per second
than LLM calls are made). For a cluster pass a ``redis.cluster.RedisCluster`` client to the
constructor; the scripts declare the record key (settle and release then read the hold keys from
the record — same slot, which a cluster allows).

=============================  =================================================================
``{p}:b:<key>``   hash         ``s`` settled, ``h`` live held (micro-dollars), ``l`` limit,
                               ``w`` window keys (JSON), ``n`` window end (ms)
``{p}:z:<key>``   sorted set   live holds: member ``<reservation id>|<micros>``, score = expiry ms
``{p}:r:<id>``    hash         reservation record: ``st`` state, refusal fields, ``specs`` holds
``{p}:a:<key>|t`` string       alert marker, set with ``SET NX``
=============================  =================================================================

**No background work.** Expired holds are purged lazily inside the Lua scripts, and every key
expires on its own (:mod:`.redis_scripts` says how).

**Memory.** Give the ledger a Redis whose ``maxmemory-policy`` is ``noeviction`` (a write then
fails, and the caller fails closed). Any other policy may evict a bucket — its spend with it, so
the budget silently starts again — and the ``volatile-*`` ones pick exactly the ledger's keys,
which all carry expiries.

**Timeouts and failure.** Socket connect and read timeouts are ``timeout_s`` and the client's
automatic retries are off, so no call blocks past its timeout; any Redis error becomes
:class:`~costwarden.errors.LedgerError` (the caller fails closed). The scripts are idempotent,
so a caller may retry an operation that timed out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from costwarden.adapters.ledger.hold_specs import dump_specs, epoch_ms, specs_from, to_micros, to_usd, ttl_ms
from costwarden.adapters.ledger.redis_scripts import CHARGE, RESERVE, SETTLE, SPENT
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import RECORD_GRACE_S
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError, UnknownReservation

STATUS_BATCH = 500
"""Buckets whose figures ``status`` reads per script (a few milliseconds of Redis time each)."""


class RedisLedger:
    """A ledger in Redis, all keys under the hash tag ``{prefix}``.

    Give a URL (the client is built with ``timeout_s`` as connect and read timeout and without
    retries) or a ready client — for example a ``redis.cluster.RedisCluster`` — whose own
    timeouts then apply.
    """

    def __init__(
        self,
        target: str | Any = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "costwarden",
        timeout_s: float = 0.25,
        record_grace_s: float = RECORD_GRACE_S,
    ) -> None:
        from costwarden.adapters.ledger import redact

        if not prefix or any(c in prefix for c in "{}"):
            raise LedgerError(f"Redis ledger prefix {prefix!r} must be non-empty and hold no braces")
        if isinstance(target, str):
            self.where = redact(target)
            try:
                client = redis.Redis.from_url(
                    target,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=True,
                )
            except ValueError as exc:  # redis-py on a malformed URL (a port that is no number...)
                raise LedgerError(f"Redis ledger URL {self.where!r}: {exc}") from None
        else:
            self.where, client = type(target).__name__, target
        self._client = client
        self.tag = "{" + prefix + "}"
        self._grace = ttl_ms(record_grace_s)
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._charge = client.register_script(CHARGE)
        self._spent = client.register_script(SPENT)

    @classmethod
    def from_url(cls, url: str) -> RedisLedger:
        """``redis://host:port/db?prefix=costwarden&timeout=0.25&record_grace=900`` (``rediss://`` for TLS)."""
        from costwarden.adapters.ledger import number, redact

        parts = urlsplit(url)
        db = parts.path.strip("/")
        if db and not db.isdigit():  # redis-py would quietly use database 0
            raise LedgerError(f"Redis ledger URL {redact(url)!r}: the database after the port must be a number, "
                              f"not {db!r} (redis://host:6379/0)")
        ours: dict[str, Any] = {}
        theirs = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                ours[name] = value
            elif name in ("timeout", "record_grace"):
                ours[f"{name}_s"] = number(name, value)
            else:
                theirs.append((name, value))
        ledger = cls(parts._replace(query=urlencode(theirs, quote_via=quote)).geturl(), **ours)
        ledger.where = redact(url)
        return ledger

    # -- the Ledger protocol -------------------------------------------------------------------
    def spent(self, keys: Sequence[str], *, now: datetime) -> list[float]:
        figures = self._figures(keys, epoch_ms(now))
        return [to_usd(sum(figures[k])) for k in keys]

    def reserve(
        self, reservation_id: str, holds: Sequence[Hold], *, ttl_s: float, now: datetime, keep_s: float | None = None
    ) -> Reservation:
        specs, ttl, at = specs_from(holds), ttl_ms(ttl_s), epoch_ms(now)
        keys = [self._record(reservation_id), *self._bucket_keys({k for s in specs for k in (*s.window, s.key)})]
        grace = self._grace if keep_s is None else ttl_ms(keep_s)
        args = [self.tag, at, reservation_id, at + ttl, at + ttl + grace, dump_specs(specs)]
        out = self._call(self._reserve, keys, args, "reserve")
        if out[0] == "r":
            return Reservation(reservation_id, False, out[1], to_usd(int(out[2])), to_usd(int(out[3])))
        return Reservation(reservation_id, True)

    def settle(self, reservation_id: str, cost_usd: float, *, now: datetime) -> list[Alert]:
        cost = to_micros(cost_usd, "cost_usd")
        out = self._call(
            self._settle, [self._record(reservation_id)], [self.tag, epoch_ms(now), reservation_id, cost], "settle"
        )
        if out[0] == "?":
            raise UnknownReservation(
                f"cannot settle unknown reservation {reservation_id!r}: it was never reserved here or its record "
                "expired (records are kept for ttl_s + record_grace_s)"
            )
        return _alerts(out[1:])

    def release(self, reservation_id: str, *, now: datetime) -> None:
        self._call(
            self._settle, [self._record(reservation_id)], [self.tag, epoch_ms(now), reservation_id, ""], "release"
        )

    def charge(
        self, reservation_id: str, holds: Sequence[Hold], cost_usd: float, *, ttl_s: float, now: datetime
    ) -> list[Alert]:
        specs, cost, at = specs_from(holds), to_micros(cost_usd, "cost_usd"), epoch_ms(now)
        keys = [self._record(reservation_id), *self._bucket_keys({s.key for s in specs})]
        args = [self.tag, at, reservation_id, cost, at + ttl_ms(ttl_s) + self._grace, dump_specs(specs)]
        return _alerts(self._call(self._charge, keys, args, "charge")[1:])

    def status(self, prefix: str = "budget:", *, now: datetime | None = None) -> list[BudgetStatus]:
        at = now_ms(now)
        head = f"{self.tag}:b:"
        try:
            found = self._client.scan_iter(match=_glob_escape(head + prefix) + "*", count=500)
            names = [_text(n)[len(head) :] for n in found]
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hmget(head + name, "l", "w", "n")
            meta = [[_text(v) for v in m] for m in pipe.execute()]
        except (redis.RedisError, OSError) as exc:
            raise LedgerError(f"Redis ledger {self.where}: status failed: {exc}") from exc
        figures = self._figures_in_batches(names, at)
        rows = [
            BucketRow(k, *figures[k], _opt(m[0]), tuple(json.loads(m[1])) if m[1] else (), _opt(m[2]))
            for k, m in zip(names, meta, strict=True)
        ]
        return summarize(rows, lambda keys: self._figures_in_batches(keys, at), at)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _record(self, reservation_id: str) -> str:
        return f"{self.tag}:r:{reservation_id}"

    def _bucket_keys(self, keys: set[str] | Sequence[str]) -> list[str]:
        return [f"{self.tag}:{kind}:{k}" for k in sorted(keys) for kind in ("b", "z")]

    def _figures(self, keys: Sequence[str], at: int) -> dict[str, tuple[int, int]]:
        if not keys:
            return {}
        out = self._call(self._spent, self._bucket_keys(keys), [self.tag, at, *keys], "lookup")
        return {k: (int(out[2 * i]), int(out[2 * i + 1])) for i, k in enumerate(keys)}

    def _figures_in_batches(self, keys: Sequence[str], at: int) -> dict[str, tuple[int, int]]:
        """``_figures`` of any number of keys, ``STATUS_BATCH`` per script: a script blocks Redis
        while it runs, so one over a whole namespace would stall every guard's reserve (and pass
        the timeout). Status needs no snapshot across budgets, only each window's own figures."""
        out: dict[str, tuple[int, int]] = {}
        for start in range(0, len(keys), STATUS_BATCH):
            out.update(self._figures(keys[start : start + STATUS_BATCH], at))
        return out

    def _call(self, script: Any, keys: list[str], args: list[Any], what: str) -> list[str]:
        try:
            out = script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise LedgerError(f"Redis ledger {self.where}: {what} failed: {exc}") from exc
        return [_text(x) for x in out]


def _alerts(rest: list[str]) -> list[Alert]:
    """A settle's or charge's reply after its state: key, threshold, spend, limit per alert."""
    return [
        Alert(rest[i], float(rest[i + 1]), to_usd(int(rest[i + 2])), to_usd(int(rest[i + 3])))
        for i in range(0, len(rest), 4)
    ]


def _text(value: Any) -> Any:
    """Replies as text, whether or not the client was made with ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else value


def _opt(value: str | None) -> int | None:
    return None if value is None else int(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


__all__ = ["RedisLedger"]
