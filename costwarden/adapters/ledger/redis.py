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

**No background work.** Expired holds are purged lazily inside the scripts: before a bucket is
summed, the members of its sorted set whose expiry is at or before ``now`` are removed and their
amounts subtracted from ``h`` (``ZRANGEBYSCORE`` + ``ZREMRANGEBYSCORE``). A hold removed by
settle is not subtracted twice (``ZREM`` reports whether it was still there). Buckets and their
sets expire (``PEXPIREAT``) a day after the last window that reads them ends; records expire
``record_grace_s`` after their TTL; markers with their bucket. Amounts are integers in Lua
doubles (exact below 2**53 micro-dollars, about nine billion dollars) and are always formatted
with ``%.0f`` so Redis never sees ``1e+15``.

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
from costwarden.adapters.ledger.status import BucketRow, BudgetStatus, now_ms, summarize
from costwarden.adapters.ledger.store import RECORD_GRACE_S
from costwarden.engine.ledger import Alert, Hold, Reservation
from costwarden.errors import LedgerError, UnknownReservation

_COMMON = """
local tag, now = ARGV[1], tonumber(ARGV[2])
-- integer text for HINCRBY and friends: never '-0', which Redis refuses (a $0 hold's release)
local function fmt(n) if n == 0 then return '0' end return string.format('%.0f', n) end
local function bkey(k) return tag .. ':b:' .. k end
local function zkey(k) return tag .. ':z:' .. k end
-- drop a bucket's expired holds; return its settled and live held micro-dollars
local function live(k)
  local b, z = bkey(k), zkey(k)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #gone > 0 then
    local drop = 0
    for i = 1, #gone do drop = drop + tonumber(string.match(gone[i], '|(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    if redis.call('EXISTS', b) == 1 then redis.call('HINCRBY', b, 'h', fmt(-drop)) end
  end
  local v = redis.call('HMGET', b, 's', 'h')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end
-- after spend was settled on specs: append each alert threshold its window reached, once (a marker)
-- (store.py's crossed: thresholds to the micro-dollar; a rolling window only when this cost crossed one)
local function alerts(specs, out, cost)
  for _, s in ipairs(specs) do
    if s.l and #s.t > 0 then
      local total = 0
      for _, k in ipairs(s.w) do total = total + (tonumber(redis.call('HGET', bkey(k), 's')) or 0) end
      local before = -1
      if #s.w > 1 then before = total - tonumber(cost) end
      for _, t in ipairs(s.t) do
        local at = math.floor(tonumber(t) * s.l + 0.5)
        if before < at and at <= total then
          local marker = tag .. ':a:' .. s.k .. '|' .. t
          local fresh
          if s.e then fresh = redis.call('SET', marker, '1', 'NX', 'PXAT', fmt(s.e))
          else fresh = redis.call('SET', marker, '1', 'NX') end
          if fresh then
            for _, x in ipairs({s.k, t, fmt(total), fmt(s.l)}) do out[#out + 1] = x end
          end
        end
      end
    end
  end
  return out
end
"""

RESERVE = (
    _COMMON
    + """
-- KEYS[1] record, KEYS[2..] buckets and sets (declared for routing)
-- ARGV: tag, now, reservation id, hold expiry ms, record expiry ms, holds JSON
local rec = KEYS[1]
local old = redis.call('HMGET', rec, 'st', 'rk', 'rs', 'rl')
if old[1] then return old end
local rid, exp, purge = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local specs = cjson.decode(ARGV[6])
local totals, pending = {}, {}
for _, s in ipairs(specs) do
  if s.l and not s.u then
    local total = 0
    for _, k in ipairs(s.w) do
      if totals[k] == nil then
        local settled, held = live(k)
        totals[k] = settled + held
      end
      total = total + totals[k] + (pending[k] or 0)
    end
    if total + s.a > s.l then
      local out = {'r', s.k, fmt(total), fmt(s.l)}
      redis.call('HSET', rec, 'st', 'r', 'rk', out[2], 'rs', out[3], 'rl', out[4], 'specs', '[]')
      redis.call('PEXPIREAT', rec, purge)
      return out
    end
  end
  pending[s.k] = (pending[s.k] or 0) + s.a
end
for _, s in ipairs(specs) do
  local b, z = bkey(s.k), zkey(s.k)
  redis.call('ZADD', z, exp, rid .. '|' .. fmt(s.a))
  redis.call('HINCRBY', b, 'h', fmt(s.a))
  redis.call('HSET', b, 'w', cjson.encode(s.w))
  if s.l then redis.call('HSET', b, 'l', fmt(s.l)) else redis.call('HDEL', b, 'l') end
  if s.n then redis.call('HSET', b, 'n', fmt(s.n)) end
  if s.e then
    local keep = fmt(math.max(s.e, exp))
    redis.call('PEXPIREAT', b, keep)
    redis.call('PEXPIREAT', z, keep)
  end
end
redis.call('HSET', rec, 'st', 'g', 'specs', ARGV[6])
redis.call('PEXPIREAT', rec, purge)
return {'g'}
"""
)

SETTLE = (
    _COMMON
    + """
-- KEYS[1] record; ARGV: tag, now, reservation id, cost micros ('' to release)
local rec = KEYS[1]
local v = redis.call('HMGET', rec, 'st', 'specs')
if not v[1] then return {'?'} end
if v[1] ~= 'g' then return {v[1]} end
local rid, cost = ARGV[3], ARGV[4]
local specs = cjson.decode(v[2])
redis.call('HSET', rec, 'st', cost == '' and 'x' or 's')
for _, s in ipairs(specs) do
  local b = bkey(s.k)
  if redis.call('ZREM', zkey(s.k), rid .. '|' .. fmt(s.a)) == 1 then redis.call('HINCRBY', b, 'h', fmt(-s.a)) end
  if cost ~= '' then
    redis.call('HINCRBY', b, 's', cost)
    if s.e then redis.call('PEXPIREAT', b, fmt(s.e)) end
  end
end
local out = {'s'}
if cost == '' then return out end
return alerts(specs, out, cost)
"""
)

CHARGE = (
    _COMMON
    + """
-- KEYS[1] record, KEYS[2..] buckets (declared for routing)
-- ARGV: tag, now, reservation id, cost micros, record expiry ms, holds JSON
local rec = KEYS[1]
if redis.call('EXISTS', rec) == 1 then return {'='} end
local cost = ARGV[4]
local specs = cjson.decode(ARGV[6])
for _, s in ipairs(specs) do
  local b = bkey(s.k)
  redis.call('HINCRBY', b, 's', cost)
  if s.e then redis.call('PEXPIREAT', b, fmt(s.e)) end
end
redis.call('HSET', rec, 'st', 's', 'specs', ARGV[6])
redis.call('PEXPIREAT', rec, tonumber(ARGV[5]))
return alerts(specs, {'s'}, cost)
"""
)

SPENT = (
    _COMMON
    + """
-- KEYS: buckets and sets (declared); ARGV: tag, now, logical keys...
local out = {}
for i = 3, #ARGV do
  local settled, held = live(ARGV[i])
  out[#out + 1] = fmt(settled)
  out[#out + 1] = fmt(held)
end
return out
"""
)


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
