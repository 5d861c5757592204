"""The Redis ledger's Lua scripts (``redis.py`` holds the client and the key layout): one script,
one round trip, per reserve, settle, charge and lookup; ``_COMMON`` is prepended to each.

**No background work.** Expired holds are purged lazily inside the scripts: before a bucket is
summed, the members of its sorted set whose expiry is at or before ``now`` are removed and their
amounts subtracted from ``h`` (``ZRANGEBYSCORE`` + ``ZREMRANGEBYSCORE``). A hold removed by
settle is not subtracted twice (``ZREM`` reports whether it was still there). Buckets and their
sets expire (``PEXPIREAT``) a day after the last window that reads them ends; records expire
``record_grace_s`` after their TTL; markers with their bucket. Amounts are integers in Lua
doubles (exact below 2**53 micro-dollars, about nine billion dollars) and are always formatted
with ``%.0f`` so Redis never sees ``1e+15``.
"""

from __future__ import annotations

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


__all__ = ["CHARGE", "RESERVE", "SETTLE", "SPENT"]
