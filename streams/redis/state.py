"""The engine's :class:`~kpi_core.state.StateStore` in Redis, with the semantics of
:class:`~kpi_core.state.MemoryState`.

Key layout (``P`` is the prefix, ``ccmon`` by default; ``<x>`` is a name encoded by
:func:`encode`, so no key part ever holds ``:``, ``{`` or ``}``)::

    P:{t:<tenant>}:scopes                   set   scope names (raw), for listing
    P:{t:<tenant>}:b:f:<scope>:<start>      hash  fine bucket: field -> number (TTL)
    P:{t:<tenant>}:b:c:<scope>:<start>      hash  coarse bucket (TTL)
    P:{t:<tenant>}:tot:<scope>              hash  lifetime totals (no TTL)
    P:{t:<tenant>}:live:<name>:<scope>      zset  member -> score
    P:{t:<tenant>}:rec:<kind>:<key>         string JSON record (TTL = its expiry)
    P:{t:<tenant>}:seen                     zset  digests of the event ids seen -> hour of first ts
    P:{p}:tenants                           set   tenant names (raw)
    P:{p}:counts                            set   pipeline count names
    P:{p}:count:<name>                      hash  label -> number

``{t:<tenant>}`` is a Redis Cluster hash tag: all of a tenant's keys share one slot.

Writes happen in batches (:meth:`RedisState.batch`). Inside one, records are read through a
per-batch cache, and every record key read is ``WATCH``ed; all writes are buffered and merged
in Python (one value per key and field), and leave in one ``MULTI``/``EXEC`` that runs one
Lua script (:data:`APPLY_LUA`). The script first checks that none of the batch's event ids is
already in its ``seen`` set, then applies everything. The batch fails with
:class:`BatchConflict`, having changed nothing, when a watched record changed meanwhile or
another worker applied one of its events first: the caller recomputes the batch from
scratch. Because the ``seen`` sets are written in the same transaction as the counters, a
batch that is run again after a crash finds its events already seen and counts nothing twice.

The batch script is all-or-nothing, whatever fails inside it (Redis does not roll a script
back: what it wrote before an error stays). In three phases:

1. *Validation* of all of ARGV before anything else: every number parses and is finite,
   TTLs are whole milliseconds in ``1..MAX_TTL_MS`` (an integer Lua still prints as one),
   counts fit ARGV, every op is known, the seen-set ops come first and the ops match
   ``#KEYS``. A malformed batch gets an error ``ccmon apply: invalid batch, nothing
   written: ARGV[i] (what of op X #j) ..., got <value>``.
2. *Duplicates*: the batch's event ids are looked up in their ``seen`` sets (``ZMSCORE``);
   one found returns ``{1, count}`` (a :class:`BatchConflict`), nothing written.
3. *Writes*, under ``pcall``, every other op first and the ``seen`` ids last. Before each
   write, an undo log keeps what restores the state it changes: a hash's fields as text
   (one ``HMGET`` per hash, which also serves the ``max_`` comparisons), a record's value
   and expiry (``PEXPIRETIME`` then ``SET ... GET`` / ``GETDEL``; a key of another type is
   kept by ``DUMP``), a zset's members' scores (one ``ZMSCORE`` per op), a set's members
   (``SMISMEMBER``), the members a prune removes (read only when ``ZCOUNT`` finds some: an
   hour's seen ids once an hour), and an expiry as the instant it was (``PEXPIRETIME``).
   The ``seen`` ids were checked absent in phase 2, so undoing their ``ZADD NX`` is
   removing them: a big seen set is never copied. On an error, the log is played back in
   reverse (old text back with ``HSET``, so floats are exact; members and fields that were
   absent removed, so keys the batch created disappear; ``PEXPIREAT``/``PERSIST``/``SET
   PXAT``/``RESTORE ABSTTL``), and the script returns ``ccmon apply: <error> (after n
   write(s); all rolled back)``; Redis refusing writes (``OOM``, ``READONLY``...) comes back
   with its own code, so the worker waits for Redis instead of dead-lettering the batch.
   A ``ccmon apply`` error is the data's: the worker (``BatchProcessor._resilient``) narrows
   it down to the one event, dead-letters it, and applies the rest, exactly once.

The cost: one read per hash, record and zset op touched (the reads the writes need anyway
are shared), a validation pass over ARGV: about 1.3x the script's time of a version without
them. A test-only hook, :attr:`RedisState.fail_at_write` (``ARGV[2]``, 0 in production: a
counter compared once per write), makes the script fail just before its k-th write, or after
its last one (-1), to show the rollback at every step (tests/integration/test_batch_atomicity.py).

Bucket arithmetic (``kpi_core.state``, "Exact arithmetic"): the engine's deltas are whole
numbers (durations in ms, maxima as ``mx:<name>:<ms>`` multiset counts), sent as integer text
and added by ``HINCRBY`` as they are (int64, never through a Lua double), so Redis holds the
very integers :class:`~kpi_core.state.MemoryState` does, whatever the batching and order; a
multiset field that reaches 0 is deleted, and the totals hashes get no multiset field. A
fractional delta (the retraction of a contribution applied before the upgrade, under its
legacy float name) still takes ``HINCRBYFLOAT``, and a legacy ``max_*`` field still takes the
maximum. The read side (``read_window``, ``totals``, the snapshot reader, whose window
script sums multiset counts like any field) returns what :func:`~kpi_core.state.present`
makes of the raw sums: the legacy field names, in seconds.

Expiry is by TTL, computed from the store's clock: a bucket lives as long as
:meth:`MemoryState.maintain <kpi_core.state.MemoryState.maintain>` would keep it, a record
until its ``expire_at`` (at least :data:`MIN_TTL_SECONDS`), so :meth:`RedisState.maintain`
has nothing to do.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from kpi_core import windows
from kpi_core.config import Config
from kpi_core.engine import series_retention_seconds
from kpi_core.errors import CcmonError
from kpi_core.state import (
    KB_SCOPE_PREFIX,
    RETIRED_SCOPE,
    LiveSummary,
    Record,
    add_into,
    count_states,
    is_queue_scope,
    present,
    summarize_live,
)

#: A key (record, bucket, seen set) that by the engine's clock is already due to expire
#: still lives this long, so a record is never dropped while its batch is being written.
MIN_TTL_SECONDS = 3600.0
#: Bytes of blake2b digest kept per event id (a false duplicate needs ~2^64 ids).
SEEN_DIGEST_BYTES = 16

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: The customer key of a store given none (tests, ``--insecure-dev``): public, so its record
#: names can be recomputed from a customer id. Production passes a secret
#: (:func:`streams.security.customer_key`).
INSECURE_DEV_CUSTOMER_KEY = b"ccmon-insecure-dev-customer-key"


class BatchConflict(CcmonError):
    """A batch could not be applied because another writer got there first (a watched
    record changed, or one of its events was applied). Nothing was written: recompute the
    whole batch and try again."""


@functools.lru_cache(maxsize=65536)
def encode(name: str) -> str:
    """A key part for ``name``: itself when it is plain (letters, digits, ``_.-``), else
    ``~`` + urlsafe base64 of its UTF-8. Injective; never contains ``:``, ``{`` or ``}``."""
    if _SAFE_NAME.fullmatch(name):
        return name
    data = name.encode("utf-8", "surrogatepass")
    return "~" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode(part: str) -> str:
    if not part.startswith("~"):
        return part
    body = part[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8", "surrogatepass")


def _num(value: float) -> str:
    """A float as text that Redis and Lua read back exactly."""
    return repr(float(value))


# The batch script. KEYS are consumed in order by the operations in ARGV:
#   ARGV[1] = number of seen-set operations, which come first:
#     S ttl_ms below n hour id ..(key: a seen zset) -- checked, then ZADD NX; drop hours < below
#   ARGV[2] = test hook: 0 in production; k > 0 fails the script just before its k-th write,
#             -1 just after its last one (see RedisState.fail_at_write); either way it rolls back
#   then any of:
#     H ttl_ms nsum nmax f v ... (key: a hash)      -- HINCRBY sums (a multiset field mx:* at 0
#                                                    deleted), max for legacy max_ fields
#     R ttl_ms value             (key: a record)    -- SET PX
#     D                          (key: a record)    -- DEL
#     Z n score member ...       (key: a zset)      -- ZADD
#     X n member ...             (key: a zset)      -- ZREM
#     A n member ...             (key: a set)       -- SADD
#     I ttl_ms below n start ... (key: a zset)      -- bucket index: ZADD start start, drop < below
#     G ttl_ms below n at name ..(key: a zset)      -- series registry: ZADD GT, drop < below
# ttl_ms 0 means "no expiry" (H only). Returns 0, or {1, dup_count} without writing anything
# when an event id is already in its seen set, or an error reply "ccmon apply: ..." having
# changed nothing (a malformed ARGV is refused before the first write; a failure among the
# writes is rolled back from the undo log). Phases (see the module header):
#   1. validate all of ARGV (numbers finite, counts and TTLs in range, ops known, #KEYS);
#   2. check the seen sets (reads only);
#   3. under pcall, every write, each preceded by what undoes it: the other ops in order,
#      then the seen-set ops last; on an error, the undo log is played back in reverse.
APPLY_LUA = """
local nargv = #ARGV
local nkeys = #KEYS
local MAX_TTL_MS = 99999999999999  -- an integer Lua still prints as one (%.14g), ~3,000 years
local CHUNK = 5000  -- arguments per command built with unpack (Lua's C stack holds 8000)

-- 1. Validation: nothing below is written before all of ARGV has been checked. (Messages are
-- built only on an error: a string made per checked value would cost more than the check.)
local starts = {}
local nseen, failat
local huge = math.huge
local function invalid(i, what, j, rule)
  local v = ARGV[i]
  if v == nil then v = '(missing)' elseif #v > 40 then v = string.sub(v, 1, 40) .. '...' end
  if j then what = what .. ' of op ' .. string.sub(ARGV[starts[j]], 1, 8) .. ' #' .. j end
  error('ARGV[' .. i .. '] (' .. what .. ') ' .. rule .. ', got ' .. v, 0)
end
local function int(i, lo, hi, what, j)
  local n = tonumber(ARGV[i])
  if n == nil or n ~= math.floor(n) or n < lo or n > hi then
    invalid(i, what, j, 'must be an integer in ' .. lo .. '..' .. hi)
  end
  return n
end
local function finite(i, what, j)
  local n = tonumber(ARGV[i])
  if n == nil or n ~= n or n == huge or n == -huge then invalid(i, what, j, 'must be a finite number') end
end
-- The span of the op at ARGV[a]: fixed + per * count, within ARGV.
local function span_of(a, i, per, fixed, j)
  local span = fixed + per * int(i, 0, nargv, 'count', j)
  if a + span - 1 > nargv then invalid(i, 'count', j, 'needs ARGV up to ' .. (a + span - 1) .. ' but there are ' .. nargv) end
  return span
end
local function validate()
  nseen = int(1, 0, nkeys, 'number of seen-set operations')
  failat = int(2, -1, 1e9, 'test hook')
  local a = 3
  local j = 0
  while a <= nargv do
    j = j + 1
    if j > nkeys then error('ARGV[' .. a .. ']: more operations than the ' .. nkeys .. ' KEYS', 0) end
    starts[j] = a
    local op = ARGV[a]
    if (j <= nseen) ~= (op == 'S') then
      invalid(a, 'op #' .. j, nil, 'must be S for exactly the first ' .. nseen .. ' ops')
    end
    local span
    if op == 'H' then
      int(a + 1, 0, MAX_TTL_MS, 'ttl_ms', j)
      local nsum = int(a + 2, 0, nargv, 'nsum', j)
      span = span_of(a, a + 3, 2, 4 + 2 * nsum, j)
      for i = a + 5, a + span - 1, 2 do finite(i, 'value', j) end
    elseif op == 'R' then
      int(a + 1, 1, MAX_TTL_MS, 'ttl_ms', j)
      span = 3
      if a + 2 > nargv then invalid(a + 2, 'value', j, 'is required') end
    elseif op == 'D' then
      span = 1
    elseif op == 'S' or op == 'I' or op == 'G' then
      int(a + 1, 1, MAX_TTL_MS, 'ttl_ms', j)
      finite(a + 2, 'below', j)
      if op == 'I' then
        span = span_of(a, a + 3, 1, 4, j)
        for i = a + 4, a + span - 1 do finite(i, 'start', j) end
      else
        span = span_of(a, a + 3, 2, 4, j)
        for i = a + 4, a + span - 1, 2 do finite(i, op == 'S' and 'hour' or 'score', j) end
      end
    elseif op == 'Z' then
      span = span_of(a, a + 1, 2, 2, j)
      for i = a + 2, a + span - 1, 2 do finite(i, 'score', j) end
    elseif op == 'X' or op == 'A' then
      span = span_of(a, a + 1, 1, 2, j)
    else
      invalid(a, 'op #' .. j, nil, 'must be one of S H R D Z X A I G')
    end
    a = a + span
  end
  if j ~= nkeys then error(nkeys .. ' KEYS but ' .. j .. ' operations in ARGV', 0) end
end
local vok, verr = pcall(validate)
if not vok then
  return redis.error_reply('ccmon apply: invalid batch, nothing written: ' .. tostring(verr))
end

-- Reads a list in chunks: cmd key list[i..] -> one flat reply.
local function read(cmd, key, list)
  if #list <= CHUNK then return redis.call(cmd, key, unpack(list)) end
  local out = {}
  for i = 1, #list, CHUNK do
    local part = redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    for x = 1, #part do out[#out + 1] = part[x] end
  end
  return out
end

-- 2. Duplicates: no event of the batch may be in its seen set already.
local dups = 0
for j = 1, nseen do
  local a = starts[j]
  local ids = {}
  for i = 1, tonumber(ARGV[a + 3]) do ids[i] = ARGV[a + 3 + 2 * i] end
  if #ids > 0 then
    for _, score in ipairs(read('ZMSCORE', KEYS[j], ids)) do if score then dups = dups + 1 end end
  end
end
if dups > 0 then return {1, dups} end

-- 3. Writes. Before each write, the undo log gets what restores the state it changes:
--   {'h', key, fields, old}   hash fields back to their old text (HSET), or out (HDEL)
--   {'t', key, at}            the expiry (PEXPIRETIME) before a PEXPIRE (-1: none, PERSIST)
--   {'z', key, members, old}  zset members back to their old score (ZADD), or out (ZREM)
--   {'a', key, members, old}  set members that were not in the set: out (SREM)
--   {'r', key, flat}          zset members a ZREMRANGEBYSCORE removed (member, score, ...)
--   {'s', key, value, at}     a string key's old value and expiry; {'x', key}: it did not exist;
--   {'d', key, dump, at}      a key of another type (DUMP/RESTORE)
local undo = {}
local nw = 0
local cur = 0  -- the op being applied (KEYS index), named by the test hook's error
local function step()
  nw = nw + 1
  if nw == failat then
    local op = ARGV[starts[cur]]
    error('injected failure before write ' .. nw .. ' (test hook; op ' .. op .. ' on KEYS[' .. cur .. '])', 0)
  end
end
local function write(cmd, key, opt, list)
  for i = 1, #list, CHUNK do
    step()
    if opt then
      redis.call(cmd, key, opt, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    else
      redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    end
  end
end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- A TTL only ever extends. The expiry is read as an instant (PEXPIRETIME: -1 none, -2 no key),
-- which is what the undo log restores (PTTL then PEXPIRE would drift by the script's runtime).
local function expire(key, ttl_arg)
  local at = redis.call('PEXPIRETIME', key)
  if at == -1 or (at >= 0 and at - now_ms < tonumber(ttl_arg)) then
    step()
    undo[#undo + 1] = {'t', key, at}
    redis.call('PEXPIRE', key, ttl_arg)
  end
end
local function prune(key, below)
  local bound = '(' .. below
  if redis.call('ZCOUNT', key, '-inf', bound) > 0 then
    step()
    undo[#undo + 1] = {'r', key, redis.call('ZRANGEBYSCORE', key, '-inf', bound, 'WITHSCORES')}
    redis.call('ZREMRANGEBYSCORE', key, '-inf', bound)
  end
end
-- ZADD (opt: NX, GT or nil) of n (score, member) pairs from ARGV[first..]; old: their scores
-- before (nil: look them up).
local function zadd(key, opt, first, n, old)
  local members, pairs_ = {}, {}
  for i = 0, n - 1 do
    members[i + 1] = ARGV[first + 2 * i + 1]
    pairs_[2 * i + 1] = ARGV[first + 2 * i]
    pairs_[2 * i + 2] = members[i + 1]
  end
  if n == 0 then return end
  undo[#undo + 1] = {'z', key, members, old or read('ZMSCORE', key, members)}
  write('ZADD', key, opt, pairs_)
end
-- A record's SET (value) or DEL (value nil): two commands, its expiry and the write that
-- returns the old value (SET ... GET, GETDEL); a key of another type is kept whole (DUMP).
local function record(key, value, ttl_arg)
  local at = redis.call('PEXPIRETIME', key)
  step()
  if at == -2 then
    undo[#undo + 1] = {'x', key}
    if value then redis.call('SET', key, value, 'PX', ttl_arg) end
    return
  end
  local old
  if value then old = redis.pcall('SET', key, value, 'PX', ttl_arg, 'GET') else old = redis.pcall('GETDEL', key) end
  if type(old) ~= 'table' then
    if old then undo[#undo + 1] = {'s', key, old, at} else undo[#undo + 1] = {'x', key} end
    return
  end
  undo[#undo + 1] = {'d', key, redis.call('DUMP', key), at}  -- not a string, or the write failed
  if value then redis.call('SET', key, value, 'PX', ttl_arg) else redis.call('DEL', key) end
end

local function apply(j)
  cur = j
  local key = KEYS[j]
  local a = starts[j]
  local op = ARGV[a]
  if op == 'H' then
    local ttl_arg = ARGV[a + 1]
    local nsum = tonumber(ARGV[a + 2])
    local nf = nsum + tonumber(ARGV[a + 3])
    local fields = {}
    for i = 1, nf do fields[i] = ARGV[a + 2 + 2 * i] end
    if nf > 0 then
      local old = read('HMGET', key, fields)
      undo[#undo + 1] = {'h', key, fields, old}
      for i = 1, nsum do
        -- HINCRBY (integer arithmetic, exact, ~3x cheaper) for whole deltas: the engine's
        -- are all whole (integers as text, passed as they are, never through a Lua double).
        -- A field that holds a fraction (state from before) refuses it (known beforehand when
        -- its text has a '.'), and takes HINCRBYFLOAT as every fractional delta does. A
        -- multiset field (mx:*) that reaches 0 is deleted, so a bucket keeps only values
        -- still counted (the undo log above restores it).
        local d = ARGV[a + 3 + 2 * i]
        local was = old[i]
        local f = fields[i]
        step()
        if string.find(d, '^%-?%d+$') and not (was and string.find(was, '.', 1, true)) then
          local r = redis.pcall('HINCRBY', key, f, d)
          if type(r) == 'table' then
            redis.call('HINCRBYFLOAT', key, f, d)
          elseif r == 0 and string.sub(f, 1, 3) == 'mx:' then
            redis.call('HDEL', key, f)
          end
        else
          local n = tonumber(d)
          if n ~= math.floor(n) or n >= 1e15 or n <= -1e15 or (was and string.find(was, '.', 1, true))
              or type(redis.pcall('HINCRBY', key, f, string.format('%d', n))) == 'table' then
            redis.call('HINCRBYFLOAT', key, f, d)
          end
        end
      end
      for i = nsum + 1, nf do
        local v = ARGV[a + 3 + 2 * i]
        local was = old[i]
        if (not was) or tonumber(was) < tonumber(v) then
          step()
          redis.call('HSET', key, fields[i], v)
        end
      end
    end
    if tonumber(ttl_arg) > 0 then expire(key, ttl_arg) end
  elseif op == 'R' then
    record(key, ARGV[a + 2], ARGV[a + 1])
  elseif op == 'D' then
    record(key, nil, nil)
  elseif op == 'Z' then
    zadd(key, nil, a + 2, tonumber(ARGV[a + 1]))
  elseif op == 'X' or op == 'A' then
    local members = {}
    for i = 1, tonumber(ARGV[a + 1]) do members[i] = ARGV[a + 1 + i] end
    if #members > 0 then
      if op == 'X' then
        undo[#undo + 1] = {'z', key, members, read('ZMSCORE', key, members)}
        write('ZREM', key, nil, members)
      else
        undo[#undo + 1] = {'a', key, members, read('SMISMEMBER', key, members)}
        write('SADD', key, nil, members)
      end
    end
  elseif op == 'I' then
    local n = tonumber(ARGV[a + 3])
    local pairs_, members = {}, {}
    for i = 1, n do
      members[i] = ARGV[a + 3 + i]
      pairs_[2 * i - 1] = members[i]
      pairs_[2 * i] = members[i]
    end
    if n > 0 then
      undo[#undo + 1] = {'z', key, members, read('ZMSCORE', key, members)}
      write('ZADD', key, nil, pairs_)
    end
    prune(key, ARGV[a + 2])
    expire(key, ARGV[a + 1])
  elseif op == 'G' then
    zadd(key, 'GT', a + 4, tonumber(ARGV[a + 3]))
    prune(key, ARGV[a + 2])
    expire(key, ARGV[a + 1])
  elseif op == 'S' then
    -- Phase 2 found none of these ids in the set: undoing their ZADD NX is removing them.
    zadd(key, 'NX', a + 4, tonumber(ARGV[a + 3]), {})
    prune(key, ARGV[a + 2])
    expire(key, ARGV[a + 1])
  end
end

local UNDO_COMMANDS = {h = {'HSET', 'HDEL'}, z = {'ZADD', 'ZREM'}, a = {'SADD', 'SREM'}}
local function rollback()
  for u = #undo, 1, -1 do
    local e = undo[u]
    local kind, key = e[1], e[2]
    if kind == 'h' or kind == 'z' or kind == 'a' then
      local put, out = {}, {}
      for i, m in ipairs(e[3]) do
        local old = e[4][i]
        if kind == 'a' then
          if old == 0 then out[#out + 1] = m end
        elseif not old then
          out[#out + 1] = m
        elseif kind == 'h' then
          put[#put + 1] = m
          put[#put + 1] = old
        else
          put[#put + 1] = old
          put[#put + 1] = m
        end
      end
      local cmds = UNDO_COMMANDS[kind]
      for i = 1, #put, CHUNK do redis.call(cmds[1], key, unpack(put, i, math.min(i + CHUNK - 1, #put))) end
      for i = 1, #out, CHUNK do redis.call(cmds[2], key, unpack(out, i, math.min(i + CHUNK - 1, #out))) end
    elseif kind == 't' then
      if e[3] == -1 then redis.call('PERSIST', key) elseif e[3] > 0 then redis.call('PEXPIREAT', key, e[3]) end
    elseif kind == 'r' then
      local flat, put = e[3], {}
      for i = 1, #flat, 2 do
        put[#put + 1] = flat[i + 1]
        put[#put + 1] = flat[i]
      end
      for i = 1, #put, CHUNK do redis.call('ZADD', key, unpack(put, i, math.min(i + CHUNK - 1, #put))) end
    elseif kind == 's' then
      if e[4] > 0 then redis.call('SET', key, e[3], 'PXAT', e[4]) else redis.call('SET', key, e[3]) end
    elseif kind == 'd' then
      if e[4] > 0 then
        redis.call('RESTORE', key, e[4], e[3], 'REPLACE', 'ABSTTL')
      else
        redis.call('RESTORE', key, 0, e[3], 'REPLACE')
      end
    else
      redis.call('DEL', key)
    end
  end
end

local ok, err = pcall(function()
  for j = nseen + 1, nkeys do apply(j) end
  for j = 1, nseen do apply(j) end  -- the seen ids last
  if failat == -1 then error('injected failure after the last write (' .. nw .. ' writes) (test hook)', 0) end
end)
if ok then return 0 end
local msg = type(err) == 'table' and err.err or tostring(err)
local rok, rerr = pcall(rollback)
if not rok then
  rerr = type(rerr) == 'table' and rerr.err or tostring(rerr)
  return redis.error_reply('ccmon apply: ' .. msg .. '; ROLLBACK FAILED, the store may hold part of the batch: ' .. rerr)
end
-- Redis refusing writes (out of memory, a read-only replica...) is an outage, not bad data:
-- its own error code goes back, so the worker waits and retries instead of dead-lettering.
for _, code in ipairs({'OOM', 'READONLY', 'NOREPLICAS', 'MASTERDOWN', 'MISCONF', 'BUSY', 'LOADING', 'CLUSTERDOWN'}) do
  if string.sub(msg, 1, #code + 1) == code .. ' ' then return redis.error_reply(msg .. ' (ccmon: batch rolled back)') end
end
return redis.error_reply('ccmon apply: ' .. msg .. ' (after ' .. nw .. ' write(s); all rolled back)')
"""


# The window script (read side): sums a tenant's bucket hashes over many windows in one call,
# in Redis, so a scrape moves a few numbers per (scope, window) instead of every bucket.
#   KEYS[1] = the tenant's scopes set (declares the hash slot; every key read shares its tag)
#   Reads only buckets listed in the scope's bucket indexes (``P:{t:..}:bi:<tier>:<scope>``).
#   ARGV = tag, fine size, coarse size, nwindows, then per window 6 numbers (fine head
#          first/stop, coarse middle first/stop, fine tail first/stop; stop exclusive), then
#          the encoded scopes.
# Buckets are summed in window order (head, middle, tail, ascending), exactly as
# MemoryState.read_window does; legacy ``max_*`` fields take the maximum, a maximum's multiset
# fields (``mx:<name>:<ms>`` -> count) are summed like counts, which is the multisets' union
# (kpi_core.state.present turns them into ``max_<name>`` in Python). Returns, per
# scope and window, a flat {field, value, ...} list with values as %.17g text (exact doubles).
WINDOWS_LUA = """
local tag = ARGV[1]
local fine = tonumber(ARGV[2])
local coarse = tonumber(ARGV[3])
local nwin = tonumber(ARGV[4])
local ranges = {}
for w = 1, nwin do
  local b = 4 + (w - 1) * 6
  ranges[w] = {tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
               tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])}
end
-- lo, hi: the span of every window (bucket starts in [lo, hi) can matter)
local lo, hi = nil, nil
for w = 1, nwin do
  local r = ranges[w]
  for p = 1, 5, 2 do
    if r[p + 1] > r[p] then
      if lo == nil or r[p] < lo then lo = r[p] end
      if hi == nil or r[p + 1] > hi then hi = r[p + 1] end
    end
  end
end
lo = lo or 0
hi = hi or 0
local out = {}
local ismax = {}
for s = 5 + nwin * 6, #ARGV do
  local scope = ARGV[s]
  local fine_pf = tag .. ':b:f:' .. scope .. ':'
  local coarse_pf = tag .. ':b:c:' .. scope .. ':'
  -- The scope's bucket indexes (see the apply script's I op) say which buckets exist; a
  -- scope without one (state written before indexes existed) has every bucket probed.
  local exists = {}
  for _, tier in ipairs({'f', 'c'}) do
    local ikey = tag .. ':bi:' .. tier .. ':' .. scope
    if redis.call('EXISTS', ikey) == 1 then
      local set = {}
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', ikey, lo, '(' .. hi)) do set[tonumber(m)] = true end
      exists[tier] = set
    end
  end
  local cache = {}
  local function bucket(tier, pf, start)
    local set = exists[tier]
    if set ~= nil and not set[start] then return {} end
    local key = pf .. string.format('%d', start)
    local flat = cache[key]
    if flat == nil then
      flat = redis.call('HGETALL', key)
      cache[key] = flat
    end
    return flat
  end
  for w = 1, nwin do
    local r = ranges[w]
    local sums = {}
    local order = {}
    local function add(flat)
      for i = 1, #flat, 2 do
        local f = flat[i]
        local v = tonumber(flat[i + 1])
        local m = ismax[f]
        if m == nil then
          m = string.sub(f, 1, 4) == 'max_'
          ismax[f] = m
        end
        local cur = sums[f]
        if cur == nil then
          order[#order + 1] = f
          if m then sums[f] = v else sums[f] = 0 + v end
        elseif m then
          if v > cur then sums[f] = v end
        else
          sums[f] = cur + v
        end
      end
    end
    for t = r[1], r[2] - 1, fine do add(bucket('f', fine_pf, t)) end
    for t = r[3], r[4] - 1, coarse do add(bucket('c', coarse_pf, t)) end
    for t = r[5], r[6] - 1, fine do add(bucket('f', fine_pf, t)) end
    local flat = {}
    for _, f in ipairs(order) do
      flat[#flat + 1] = f
      flat[#flat + 1] = string.format('%.17g', sums[f])
    end
    out[#out + 1] = flat
  end
end
return out
"""

# Retirement (Engine.retire_series), one tenant's slot. KEYS: the kind's registry zset, the
# tenant's scopes set, its count hash for ``sum:series_retired`` and its set of count names.
#   ARGV = kind, tag, RETIRED_SCOPE raw and encoded (a retiring queue's totals are added to
#          its totals), nlive, live-set names (encoded) ..., nstates, agent states ...,
#          nscopes, scopes (encoded; kind 'agent': every scope of the tenant) ..., then names
#          as four: admitted at ('' = no registry entry), name, scope, scope encoded.
# A name is retired only while the registry still holds it at exactly that time (admitted
# again meanwhile: left alone), or, for '', while it has no entry and no coarse bucket index
# (no bucket kept). Retiring a queue or article drops its scope: totals, live sets, bucket
# indexes and the buckets they list, its scopes-set entry. An agent: its members of every
# scope's agents set. Kind 'tenant' (the tenant's registry entry already removed): every
# scope listed in ARGV, the scopes set, the seen set and the tenant's registries (KEYS[1] is
# its scopes set); its records expire by TTL, its pipeline counters stay (they are summed
# into ccmon_events_total and the like, which must not go down).
# Counts one per name retired; returns how many.
RETIRE_LUA = """
local kind, tag, retired_raw, retired_enc = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local a = 5
local nlive = tonumber(ARGV[a]); local lives = {unpack(ARGV, a + 1, a + nlive)}; a = a + 1 + nlive
local nstates = tonumber(ARGV[a]); local states = {unpack(ARGV, a + 1, a + nstates)}; a = a + 1 + nstates
local nscopes = tonumber(ARGV[a]); local scopes = {unpack(ARGV, a + 1, a + nscopes)}; a = a + 1 + nscopes
local function drop(enc)
  if kind == 'queue' then  -- the tenant's counters keep what the queue counted
    local flat = redis.call('HGETALL', tag .. ':tot:' .. enc)
    local into = tag .. ':tot:' .. retired_enc
    for i = 1, #flat, 2 do
      if string.sub(flat[i], 1, 4) == 'max_' then
        local cur = redis.call('HGET', into, flat[i])
        if (not cur) or tonumber(cur) < tonumber(flat[i + 1]) then redis.call('HSET', into, flat[i], flat[i + 1]) end
      else
        redis.call('HINCRBYFLOAT', into, flat[i], flat[i + 1])
      end
    end
    if #flat > 0 then redis.call('SADD', KEYS[2], retired_raw) end
  end
  redis.call('DEL', tag .. ':tot:' .. enc)
  for _, name in ipairs(lives) do redis.call('DEL', tag .. ':live:' .. name .. ':' .. enc) end
  for _, tier in ipairs({'f', 'c'}) do
    local ikey = tag .. ':bi:' .. tier .. ':' .. enc
    local starts = redis.call('ZRANGE', ikey, 0, -1)
    for i = 1, #starts do starts[i] = tag .. ':b:' .. tier .. ':' .. enc .. ':' .. starts[i] end
    for i = 1, #starts, 1000 do redis.call('DEL', unpack(starts, i, math.min(i + 999, #starts))) end
    redis.call('DEL', ikey)
  end
end
local retired = 0
if kind == 'tenant' then
  for _, enc in ipairs(scopes) do drop(enc) end
  redis.call('DEL', KEYS[2], tag .. ':seen')  -- ids older than the horizon: too late anyway
  for _, k in ipairs({'queue', 'agent', 'article'}) do redis.call('DEL', tag .. ':series:' .. k) end
  retired = 1
end
for i = a, #ARGV, 4 do
  local at, name, scope, enc = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local score = redis.call('ZSCORE', KEYS[1], name)
  local go = false
  if at == '' then
    go = (not score) and redis.call('EXISTS', tag .. ':bi:c:' .. enc) == 0
         and redis.call('SISMEMBER', KEYS[2], scope) == 1
  elseif score and tonumber(score) == tonumber(at) then
    redis.call('ZREM', KEYS[1], name)
    go = true
  end
  if go then
    if kind == 'agent' then
      for _, senc in ipairs(scopes) do
        local key = tag .. ':live:agents:' .. senc
        for _, state in ipairs(states) do redis.call('ZREM', key, state .. '\\031' .. name) end
      end
    else
      drop(enc)
      redis.call('SREM', KEYS[2], scope)
    end
    retired = retired + 1
  end
end
if retired > 0 then
  redis.call('HINCRBY', KEYS[3], kind, retired)
  redis.call('SADD', KEYS[4], 'sum:series_retired')
end
return retired
"""

# The tenant part of retiring tenants, in the pipeline's slot: KEYS = the tenant registry and
# the tenants set; ARGV = pairs (admitted at, tenant). Removes each tenant still admitted at
# exactly that time from both; returns those removed (their state is dropped next, by
# RETIRE_LUA in the tenant's own slot).
RETIRE_TENANTS_LUA = """
local out = {}
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if score and tonumber(score) == tonumber(ARGV[i]) then
    redis.call('ZREM', KEYS[1], ARGV[i + 1])
    redis.call('SREM', KEYS[2], ARGV[i + 1])
    out[#out + 1] = ARGV[i + 1]
  end
end
return out
"""

#: Names per call of the retirement script (an agent: fewer, see RedisState.series_retire).
RETIRE_NAMES_PER_CALL = 20

#: Scopes per call of the window script: bounds the time Redis spends in one script.
WINDOW_SCOPES_PER_CALL = 50
#: Live-set queries per LIVE_LUA call in a scrape (each call runs alone in Redis: a few
#: milliseconds, so a scrape never holds up the workers' transactions long).
LIVE_QUERIES_PER_CALL = 40


@dataclass
class _Hash:
    """Buffered changes to one hash: summed deltas and maxima. Bucket hashes keep both in
    ``sums`` (added by :func:`~kpi_core.state.add_into`: whole deltas stay ints, a multiset
    field whose deltas cancel out is dropped, legacy ``max_*`` fields take the max)."""

    ttl_at: float | None  # engine-clock expiry, None = keep
    sums: dict[str, float] = field(default_factory=dict)
    maxes: dict[str, float] = field(default_factory=dict)

    def split(self) -> tuple[dict[str, float], dict[str, float]]:
        sums = {k: v for k, v in self.sums.items() if not k.startswith("max_")}
        maxes = {k: v for k, v in self.sums.items() if k.startswith("max_")}
        maxes.update(self.maxes)
        return sums, maxes


@dataclass
class _Batch:
    pipe: Any  # redis.client.Pipeline in WATCH mode (Redis Cluster: the first group's)
    pipes: dict[str, Any] = field(default_factory=dict)  # hash-slot group -> its WATCH pipeline
    records: dict[str, Record | None] = field(default_factory=dict)  # key -> cached value
    watched: set[str] = field(default_factory=set)
    dirty_records: dict[str, tuple[Record | None, float]] = field(default_factory=dict)
    seen_known: set[tuple[str, bytes]] = field(default_factory=set)  # (seen key, digest) in Redis
    seen_checked: set[tuple[str, bytes]] = field(default_factory=set)  # looked up this batch
    seen_new: dict[str, dict[bytes, int]] = field(default_factory=dict)  # seen key -> digest -> hour
    hashes: dict[str, _Hash] = field(default_factory=dict)
    index: dict[str, tuple[float, float, set[int]]] = field(default_factory=dict)  # key -> (expire, keep from, starts)
    add_targets: dict[tuple[str, str, int], tuple[_Hash, ...]] = field(default_factory=dict)  # (tenant, scope, fine start)
    series_seen: dict[tuple[str, str, str], float | None] = field(default_factory=dict)  # committed, as read
    series_counts: dict[tuple[str, str, float], int] = field(default_factory=dict)  # committed, as read
    series_new: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (kind, tenant) -> name -> at
    live: dict[str, dict[str, float | None]] = field(default_factory=dict)  # key -> member -> score/None
    scopes: dict[str, set[str]] = field(default_factory=dict)  # tenant -> new scopes
    counts: dict[tuple[str, str], _Hash] = field(default_factory=dict)  # (tenant, "sum:"/"max:" name) -> changes


#: Live sets summed up inside Redis, so a scrape never carries their members (a big tenant's
#: agents-by-state sets hold one member per agent and queue; open tickets pile up for days).
#: ARGV: tag, at, then queries of five: kind, name, scope (both encoded), lo, hi. Kinds:
#: ``n`` ZCARD; ``s`` members with lo <= score < hi: {count, smallest score or '', sum of
#: at - score in ascending score order}; ``a`` {part before \x1f, all, with score < at, ...}.
#: Doubles go back as %.17g strings (a Lua number would come back as an integer).
LIVE_LUA = """
local tag = ARGV[1]
local at = tonumber(ARGV[2])
local out = {}
for q = 3, #ARGV, 5 do
  local kind = ARGV[q]
  local key = tag .. ':live:' .. ARGV[q + 1] .. ':' .. ARGV[q + 2]
  if kind == 'n' then
    out[#out + 1] = redis.call('ZCARD', key)
  elseif kind == 's' then
    local hi = ARGV[q + 4]
    if hi ~= '+inf' then hi = '(' .. hi end
    local flat = redis.call('ZRANGEBYSCORE', key, ARGV[q + 3], hi, 'WITHSCORES')
    local sum = 0.0
    for i = 2, #flat, 2 do sum = sum + (at - tonumber(flat[i])) end
    local oldest = ''
    if #flat > 0 then oldest = flat[2] end
    out[#out + 1] = {#flat / 2, oldest, string.format('%.17g', sum)}
  else
    local flat = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local every, before, order = {}, {}, {}
    for i = 1, #flat, 2 do
      local state = string.match(flat[i], '^([^\\031]*)')
      if every[state] == nil then
        every[state] = 0
        before[state] = 0
        order[#order + 1] = state
      end
      every[state] = every[state] + 1
      if tonumber(flat[i + 1]) < at then before[state] = before[state] + 1 end
    end
    local reply = {}
    for _, state in ipairs(order) do
      reply[#reply + 1] = state
      reply[#reply + 1] = every[state]
      reply[#reply + 1] = before[state]
    end
    out[#out + 1] = reply
  end
end
return out
"""


def _score_arg(x: float) -> str:
    """A score bound for ZRANGEBYSCORE that round-trips the double."""
    return "-inf" if x == -math.inf else "+inf" if x == math.inf else repr(x)


def _live_reply(kind: str, reply: Any) -> Any:
    if kind == "n":
        return int(reply)
    if kind == "s":
        size, oldest, age_sum = reply
        return LiveSummary(int(size), float(oldest) if oldest not in (b"", "") else None, float(age_sum))
    every: dict[str, int] = {}
    before: dict[str, int] = {}
    for i in range(0, len(reply), 3):
        state = _text(reply[i])
        every[state], before[state] = int(reply[i + 1]), int(reply[i + 2])
    return every, {state: n for state, n in before.items() if n}


class RedisState:
    """A :class:`~kpi_core.state.StateStore` in Redis. Reads outside a batch may come from
    many threads (the exporter); a batch belongs to one thread (the worker's)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        config: Config,
        *,
        prefix: str = "ccmon",
        clock: Callable[[], float] = time.time,
        cluster: bool = False,
        customer_key: bytes | None = None,
    ) -> None:
        """``customer_key``: the secret that names customer records (HMAC-SHA256 of the id);
        every writer of one prefix must use the same, and another orphans the records written
        so far. ``None``: :data:`INSECURE_DEV_CUSTOMER_KEY` (development and tests only)."""
        if not prefix or any(ch in prefix for ch in "{}:"):
            raise ValueError(f"redis prefix must be non-empty without '{{', '}}' or ':', got {prefix!r}")
        self.client = client
        #: Redis Cluster: a batch commits one transaction per hash-slot group (tenant) instead
        #: of one for all; see docs/STREAMS.md.
        self.cluster = cluster
        self.config = config
        self.prefix = prefix
        self.clock = clock
        self.fine_seconds = config.bucket_seconds
        self.coarse_seconds = config.coarse_bucket_seconds
        # How long MemoryState keeps buckets (Engine.maintain passes these).
        self.fine_keep_seconds = config.longest_sliding_seconds + 3600.0
        self.coarse_keep_seconds = config.horizon_seconds + 3600.0
        # The guard's registry keeps a name until it retires (Engine.retire_series); a day
        # more before the batch script trims it, for an upkeep that was late.
        self.series_keep_seconds = max(config.horizon_seconds, series_retention_seconds(config))
        self._batch: _Batch | None = None
        #: Tests only (production never sets it): the batch script fails just before its k-th
        #: write (-1: after its last one) and rolls back, as on any failure among its writes.
        self.fail_at_write = 0
        self._pipeline_tag = f"{prefix}:{{p}}"
        self._tenant_tags: dict[str, str] = {}
        if customer_key is not None and not customer_key:
            raise ValueError("customer_key must not be empty")
        self._customer_mac = hmac.new(customer_key or INSECURE_DEV_CUSTOMER_KEY, b"ccmon-customer\x00", hashlib.sha256)

    @classmethod
    def from_url(cls, url: str, config: Config, *, cluster: bool = False, connection: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> RedisState:  # fmt: skip
        """A store on ``url``; with ``cluster``, ``url`` is any node of a Redis Cluster.
        ``connection``: more keyword arguments for redis-py's client (TLS files, a password:
        :func:`streams.security.redis_connection_kwargs`)."""
        extra = dict(connection or {})
        if cluster:
            from redis.cluster import RedisCluster

            cluster_client = RedisCluster.from_url(url, socket_timeout=30, socket_connect_timeout=5, **extra)
            return cls(cluster_client, config, cluster=True, **kwargs)
        client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30, **extra)
        return cls(client, config, **kwargs)

    # -- keys ------------------------------------------------------------------------------
    def _tag(self, tenant: str) -> str:
        tag = self._tenant_tags.get(tenant)
        if tag is None:
            tag = self._tenant_tags[tenant] = f"{self.prefix}:{{t:{encode(tenant)}}}"
        return tag

    def _scopes_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:scopes"

    def _bucket_key(self, tenant: str, tier: str, scope: str, start: int) -> str:
        return f"{self._tag(tenant)}:b:{tier}:{encode(scope)}:{start}"

    def _series_key(self, kind: str, tenant: str) -> str:
        tag = self._pipeline_tag if kind == "tenant" else self._tag(tenant)
        return f"{tag}:series:{encode(kind)}"

    def _index_key(self, tenant: str, tier: str, scope: str) -> str:
        return f"{self._tag(tenant)}:bi:{tier}:{encode(scope)}"

    def _totals_key(self, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:tot:{encode(scope)}"

    def _live_key(self, name: str, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:live:{encode(name)}:{encode(scope)}"

    def _record_key(self, kind: str, tenant: str, key: str) -> str:
        if kind == "customer":
            # Key names are listed by SCAN, KEYS and monitoring tools: a customer's record is
            # named by a keyed digest of the id (HMAC-SHA256 with the deployment's secret, 128
            # bits kept), never the id (a phone number, an e-mail) itself, nor a plain hash
            # (phone numbers are few enough to hash them all and look the digest up).
            mac = self._customer_mac.copy()
            mac.update(key.encode("utf-8", "surrogatepass"))
            return f"{self._tag(tenant)}:rec:customer:#{mac.hexdigest()[:32]}"
        return f"{self._tag(tenant)}:rec:{encode(kind)}:{encode(key)}"

    def _seen_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:seen"

    @property
    def _tenants_key(self) -> str:
        return f"{self._pipeline_tag}:tenants"

    @property
    def _count_tenants_key(self) -> str:
        return f"{self._pipeline_tag}:count-tenants"

    def _count_names_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:counts"

    def _count_key(self, tenant: str, name: str) -> str:
        """Pipeline counters live with the tenant whose events they count (rejections with
        the pipeline's own namespace), so each tenant's part of a batch is self-contained."""
        return f"{self._tag(tenant)}:count:{encode(name)}"

    def history_key(self, tenant: str, name: str) -> str:
        """The key of a tenant's board history (:class:`streams.web.api.RedisSlHistory`)."""
        return f"{self._tag(tenant)}:history:{encode(name)}"

    def events_version(self) -> tuple[tuple[str, bytes], ...]:
        """What changes whenever a batch of events lands: each tenant's ``events`` counters
        (the engine counts every event it applies), as raw bytes. Two round trips, whatever
        the traffic: the exporter polls it a few times a second to push the board
        (:mod:`streams.web.push`) only when something changed."""
        tenants = sorted(_text(m) for m in self.client.smembers(self._count_tenants_key))
        with self.client.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.hgetall(self._count_key(tenant, "sum:events"))
            replies = pipe.execute()
        return tuple((tenant, repr(sorted(reply.items())).encode()) for tenant, reply in zip(tenants, replies, strict=True))

    def _group(self, key: str) -> str:
        """The hash-slot group of ``key`` (its hash tag) on Redis Cluster; one group otherwise."""
        if not self.cluster:
            return ""
        start = key.index("{")
        return key[start:key.index("}", start) + 1]

    # -- batches ---------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[RedisState]:
        """One unit of work: every write inside leaves in one transaction at the end, or,
        on an exception (including :class:`BatchConflict`), not at all."""
        if self._batch is not None:
            raise RuntimeError("RedisState.batch() does not nest")
        pipe = self.client.pipeline(transaction=True)
        self._batch = b = _Batch(pipe)
        try:
            yield self
            self._commit(b)
        finally:
            self._batch = None
            pipe.reset()
            for other in b.pipes.values():
                if other is not pipe:
                    other.reset()

    def _pipe(self, b: _Batch, key: str) -> Any:
        """The batch's WATCH pipeline for ``key``: the one pipeline, or on Redis Cluster one per
        hash-slot group (a transaction cannot span slots there)."""
        if not self.cluster:
            return b.pipe
        group = self._group(key)
        pipe = b.pipes.get(group)
        if pipe is None:
            pipe = b.pipes[group] = b.pipe if not b.pipes else self.client.pipeline(transaction=True)
        return pipe

    @property
    def in_batch(self) -> bool:
        return self._batch is not None

    def _autocommit(self, write: Callable[[], Any]) -> Any:
        with self.batch():
            return write()

    def prefetch_records(self, kind: str, tenant: str, keys: Iterable[str]) -> None:
        """Read (and watch) many records in one round trip, for the batch's cache."""
        b = self._batch
        if b is None:
            return
        wanted = [k for k in dict.fromkeys(self._record_key(kind, tenant, key) for key in keys) if k not in b.records]
        if wanted:
            self._read_records(b, wanted)

    def _read_records(self, b: _Batch, keys: list[str]) -> None:
        groups: dict[int, tuple[Any, list[str]]] = {}
        for key in keys:
            pipe = self._pipe(b, key)
            groups.setdefault(id(pipe), (pipe, []))[1].append(key)
        for pipe, group in groups.values():
            pipe.watch(*group)  # WATCH first: a change after it, before EXEC, aborts the batch
            b.watched.update(group)
            values = pipe.execute_command("MGET", *group)
            for key, raw in zip(group, values, strict=True):
                b.records[key] = _load_record(raw) if raw is not None else None

    def prefetch_seen(self, items: Iterable[tuple[str, str, float]]) -> None:
        """Look up many ``(tenant, event_id, ts)`` in the seen sets in one round trip."""
        b = self._batch
        if b is None:
            return
        by_key: dict[str, list[bytes]] = {}
        for tenant, event_id, _ts in items:
            key = self._seen_key(tenant)
            digest = _digest(event_id)
            if (key, digest) not in b.seen_checked:
                b.seen_checked.add((key, digest))
                by_key.setdefault(key, []).append(digest)
        if not by_key:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for key, digests in by_key.items():
                pipe.zmscore(key, digests)  # type: ignore[arg-type]  # bytes are fine
            results = pipe.execute()
        for (key, digests), scores in zip(by_key.items(), results, strict=True):
            for digest, score in zip(digests, scores, strict=True):
                if score is not None:
                    b.seen_known.add((key, digest))

    def _commit(self, b: _Batch) -> None:
        seen_ops, ops = self._encode(b)
        # One script call per group: KEYS in operation order, ARGV = number of seen-set
        # operations (they come first: the script checks them before writing, and writes
        # them last), the test hook, then the ops.
        ordered: dict[str, tuple[list[str], list[Any]]] = {}
        for key, args in seen_ops:
            keys, argv = ordered.setdefault(self._group(key), ([], [0, self.fail_at_write]))
            keys.append(key)
            argv[0] += 1
            argv.extend(args)
        for key, args in ops:
            keys, argv = ordered.setdefault(self._group(key), ([], [0, self.fail_at_write]))
            keys.append(key)
            argv.extend(args)
        for group, (keys, argv) in ordered.items():
            pipe = self._pipe(b, keys[0]) if self.cluster else b.pipe
            pipe.multi()
            # EVAL, not EVALSHA: a script missing from the server's cache cannot fail inside
            # MULTI (Redis caches it by its SHA anyway).
            pipe.execute_command("EVAL", APPLY_LUA, len(keys), *keys, *argv)
            try:
                (result,) = pipe.execute()
            except redis.WatchError:
                raise BatchConflict(f"{len(b.watched)} watched record(s): one changed before the batch "
                                    f"was applied{self._partly(ordered, group)}") from None  # fmt: skip
            if result != 0:
                raise BatchConflict(f"{result[1]} event(s) of the batch were applied by another writer "
                                    f"first{self._partly(ordered, group)}")  # fmt: skip

    @staticmethod
    def _partly(ordered: Mapping[str, Any], failed: str) -> str:
        done = list(ordered).index(failed)
        return f" (Redis Cluster: {done} of {len(ordered)} slot groups were committed)" if done else ""

    def _ttl_ms(self, expire_at: float, now: float) -> int:
        return int(max(expire_at - now, MIN_TTL_SECONDS) * 1000)

    def _encode(self, b: _Batch) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any]]]]:
        """The batch as script operations ``(key, args)``: seen-set ones, then the rest."""
        now = self.clock()
        # MemoryState forgets an hour once it ends before now - coarse_keep - coarse.
        forget_before = int((now - self.coarse_keep_seconds - self.coarse_seconds) // 3600) - 1
        seen_ops: list[tuple[str, list[Any]]] = []
        for key, digests in b.seen_new.items():
            expire_at = (max(digests.values()) + 1) * 3600 + self.coarse_keep_seconds + self.coarse_seconds
            seen_args: list[Any] = ["S", self._ttl_ms(expire_at, now), forget_before, len(digests)]
            for digest, hour in digests.items():
                seen_args += [hour, digest]
            seen_ops.append((key, seen_args))
        ops: list[tuple[str, list[Any]]] = []
        for key, h in b.hashes.items():
            ops.append((key, self._encode_hash(h, now)))
        for key, (expire_at, keep_from, starts) in b.index.items():
            ops.append((key, ["I", self._ttl_ms(expire_at, now), int(keep_from), len(starts), *sorted(starts)]))
        keep = self.series_keep_seconds
        for (kind, tenant), names in b.series_new.items():
            args: list[Any] = ["G", self._ttl_ms(now + keep + 86400, now), _num(now - keep - 86400), len(names)]
            for name, at in names.items():
                args += [_num(at), _utf8(name)]
            ops.append((self._series_key(kind, tenant), args))
        count_names: dict[str, list[str]] = {}
        for (tenant, name), h in b.counts.items():
            ops.append((self._count_key(tenant, name), self._encode_hash(h, now, split=False)))
            count_names.setdefault(tenant, []).append(name)
        for tenant, counted in count_names.items():
            ops.append((self._count_names_key(tenant), ["A", len(counted), *map(_utf8, counted)]))
        if count_names:
            ops.append((self._count_tenants_key, ["A", len(count_names), *map(_utf8, count_names)]))
        for key, (record, expire_at) in b.dirty_records.items():
            if record is None:
                ops.append((key, ["D"]))
            else:
                ops.append((key, ["R", self._ttl_ms(expire_at, now), _dump_record(record)]))
        for key, members in b.live.items():
            puts = [(m, s) for m, s in members.items() if s is not None]
            removes = [m for m, s in members.items() if s is None]
            if puts:
                args = ["Z", len(puts)]
                for member, score in puts:
                    args += [_num(score), _utf8(member)]
                ops.append((key, args))
            if removes:
                ops.append((key, ["X", len(removes), *map(_utf8, removes)]))
        for tenant, scopes in b.scopes.items():
            ops.append((self._scopes_key(tenant), ["A", len(scopes), *map(_utf8, scopes)]))
        if b.scopes:
            ops.append((self._tenants_key, ["A", len(b.scopes), *map(_utf8, b.scopes)]))
        return seen_ops, ops

    def _encode_hash(self, h: _Hash, now: float, split: bool = True) -> list[Any]:
        sums, maxes = h.split() if split else (h.sums, h.maxes)
        ttl = self._ttl_ms(h.ttl_at, now) if h.ttl_at is not None else 0
        args: list[Any] = ["H", ttl, len(sums), len(maxes)]
        for fld, value in sums.items():
            # ints as themselves: the script passes whole numbers to HINCRBY as text (exact)
            args += [_utf8(fld), str(value) if type(value) is int else _num(value)]
        for fld, value in maxes.items():
            args += [_utf8(fld), _num(value)]
        return args

    # -- write side ------------------------------------------------------------------------
    # Outside ``batch()`` every write is a batch of its own (tests, tools); the worker always
    # writes inside one.
    def claim_event(self, tenant: str, event_id: str, ts: float) -> bool:
        b = self._batch
        if b is None:
            return bool(self._autocommit(lambda: self.claim_event(tenant, event_id, ts)))
        # Idempotent on event_id alone, whatever ts a re-sent event carries: one sorted set
        # per tenant, member = digest, score = hour of the ts it was first seen with, so ids
        # are forgotten with their hour's state (as MemoryState.maintain does).
        key = self._seen_key(tenant)
        digest = _digest(event_id)
        pending = b.seen_new.get(key)
        if pending is not None and digest in pending:
            return False
        if (key, digest) not in b.seen_checked:
            b.seen_checked.add((key, digest))
            if self.client.zscore(key, digest) is not None:
                b.seen_known.add((key, digest))
        if (key, digest) in b.seen_known:
            return False
        if pending is None:
            pending = b.seen_new[key] = {}
        pending[digest] = int(ts // 3600)
        return True

    def get_record(self, kind: str, tenant: str, key: str) -> Record | None:
        rkey = self._record_key(kind, tenant, key)
        b = self._batch
        if b is None:
            raw = self.client.get(rkey)
            return _load_record(raw) if raw is not None else None
        if rkey not in b.records:
            self._read_records(b, [rkey])
        return b.records[rkey]

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.put_record(kind, tenant, key, record, expire_at))
        rkey = self._record_key(kind, tenant, key)
        b.records[rkey] = record
        b.dirty_records[rkey] = (record, expire_at)

    def delete_record(self, kind: str, tenant: str, key: str) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.delete_record(kind, tenant, key))
        rkey = self._record_key(kind, tenant, key)
        b.records[rkey] = None
        b.dirty_records[rkey] = (None, 0.0)

    def add(self, tenant: str, scope: str, ts: float, deltas: Mapping[str, float]) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.add(tenant, scope, ts, deltas))
        fine = self.fine_seconds
        fstart = int(ts // fine) * fine
        targets = b.add_targets.get((tenant, scope, fstart))
        if targets is None:
            targets = b.add_targets[(tenant, scope, fstart)] = self._add_targets(b, tenant, scope, fstart, ts)
        fine_h, coarse_h, totals_h = targets
        add_into(fine_h.sums, deltas)
        add_into(coarse_h.sums, deltas)
        add_into(totals_h.sums, deltas, multisets=False)  # maxima are windowed only

    def _add_targets(self, b: _Batch, tenant: str, scope: str, fstart: int, ts: float) -> tuple[_Hash, ...]:
        """The hashes an ``add`` at ``ts`` changes: its fine and coarse buckets and the totals."""
        self._note_scope(b, tenant, scope)
        fine, coarse = self.fine_seconds, self.coarse_seconds
        cstart = int(ts // coarse) * coarse
        hashes = b.hashes
        targets = []
        for tier, bstart, keep, size in (
            (windows.FINE, fstart, self.fine_keep_seconds, fine),
            (windows.COARSE, cstart, self.coarse_keep_seconds, coarse),
        ):
            key = self._bucket_key(tenant, tier, scope, bstart)
            h = hashes.get(key)
            if h is None:
                h = hashes[key] = _Hash(bstart + keep + size)
                self._index_bucket(b, tenant, tier, scope, bstart, keep + size)
            targets.append(h)
        key = self._totals_key(tenant, scope)
        h = hashes.get(key)
        if h is None:
            h = hashes[key] = _Hash(None)
        targets.append(h)
        return tuple(targets)

    def _index_bucket(self, b: _Batch, tenant: str, tier: str, scope: str, start: int, keep: float) -> None:
        """Note bucket ``start`` in its scope's bucket index, so a scrape reads the buckets
        that exist instead of probing every possible one (most are empty for a quiet queue)."""
        key = self._index_key(tenant, tier, scope)
        entry = b.index.get(key)
        if entry is None:
            entry = b.index[key] = (start + keep, start - keep, set())
        elif start + keep > entry[0]:
            entry = b.index[key] = (start + keep, start - keep, entry[2])
        entry[2].add(start)

    def live_put(self, name: str, tenant: str, scope: str, member: str, score: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.live_put(name, tenant, scope, member, score))
        self._note_scope(b, tenant, scope)
        b.live.setdefault(self._live_key(name, tenant, scope), {})[member] = float(score)

    def live_remove(self, name: str, tenant: str, scope: str, member: str) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.live_remove(name, tenant, scope, member))
        b.live.setdefault(self._live_key(name, tenant, scope), {})[member] = None

    def count(self, name: str, label: str, delta: float = 1.0, tenant: str = "") -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.count(name, label, delta, tenant))
        h = b.counts.get((tenant, f"sum:{name}"))
        if h is None:
            h = b.counts[(tenant, f"sum:{name}")] = _Hash(None)
        h.sums[label] = h.sums.get(label, 0.0) + delta

    def count_max(self, name: str, label: str, value: float, tenant: str = "") -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.count_max(name, label, value, tenant))
        h = b.counts.get((tenant, f"max:{name}"))
        if h is None:
            h = b.counts[(tenant, f"max:{name}")] = _Hash(None)
        if value > h.maxes.get(label, -math.inf):
            h.maxes[label] = value

    # -- the cardinality guard's registry ---------------------------------------------------
    def prefetch_series(self, items: Iterable[tuple[str, str, str]], since: float) -> None:
        """Read many names' last admission and their kinds' counts in one round trip."""
        b = self._batch
        if b is None:
            return
        by_key: dict[tuple[str, str], list[str]] = {}
        for kind, tenant, name in items:
            if (kind, tenant, name) not in b.series_seen:
                b.series_seen[(kind, tenant, name)] = None
                by_key.setdefault((kind, tenant), []).append(name)
        if not by_key:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for (kind, tenant), names in by_key.items():
                pipe.zmscore(self._series_key(kind, tenant), names)
                pipe.zcount(self._series_key(kind, tenant), since, "+inf")
            replies = iter(pipe.execute())
        for (kind, tenant), names in by_key.items():
            for name, score in zip(names, next(replies), strict=True):
                b.series_seen[(kind, tenant, name)] = float(score) if score is not None else None
            b.series_counts[(kind, tenant, since)] = int(next(replies))

    def series_seen(self, kind: str, tenant: str, name: str) -> float | None:
        b = self._batch
        if b is None:
            score = self.client.zscore(self._series_key(kind, tenant), name)
            return float(score) if score is not None else None
        pending = b.series_new.get((kind, tenant), {}).get(name)
        if (kind, tenant, name) not in b.series_seen:
            score = self.client.zscore(self._series_key(kind, tenant), name)
            b.series_seen[(kind, tenant, name)] = float(score) if score is not None else None
        seen = b.series_seen[(kind, tenant, name)]
        if pending is not None and (seen is None or pending > seen):
            return pending
        return seen

    def series_count(self, kind: str, tenant: str, since: float) -> int:
        b = self._batch
        key = self._series_key(kind, tenant)
        if b is None:
            return int(self.client.zcount(key, since, "+inf"))
        count = b.series_counts.get((kind, tenant, since))
        if count is None:
            count = b.series_counts[(kind, tenant, since)] = int(self.client.zcount(key, since, "+inf"))
        for name, at in b.series_new.get((kind, tenant), {}).items():
            seen = b.series_seen.get((kind, tenant, name))
            if at >= since and (seen is None or seen < since):
                count += 1  # admitted in this batch, not counted in Redis yet
        return count

    def series_touch(self, kind: str, tenant: str, name: str, at: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.series_touch(kind, tenant, name, at))
        names = b.series_new.setdefault((kind, tenant), {})
        if at > names.get(name, -math.inf):
            names[name] = at

    def series_oldest(self, kind: str, tenant: str, n: int) -> tuple[int, list[tuple[str, float]]]:
        key = self._series_key(kind, tenant)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, 0, n - 1, withscores=True)
            total, pairs = pipe.execute()
        return int(total), [(_text(name), float(at)) for name, at in pairs]

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        return self.series_live_many([(kind, tenant, list(names), limit)])[0]

    def series_live_many(self, queries: Sequence[tuple[str, str, list[str], int]]) -> list[set[str]]:
        """:meth:`series_live` of many ``(kind, tenant, names, limit)`` in one round trip."""
        asked = [q for q in queries if q[2]]
        if not asked:
            return [set() for _q in queries]
        with self.client.pipeline(transaction=False) as pipe:
            for kind, tenant, names, limit in asked:
                pipe.zmscore(self._series_key(kind, tenant), [_utf8(n) for n in names])  # type: ignore[misc]
                # The limit-th newest name: a registered name is exported if it is not older.
                pipe.zrevrange(self._series_key(kind, tenant), max(limit - 1, 0), max(limit - 1, 0), withscores=True)
            replies = iter(pipe.execute())
        answers: dict[int, set[str]] = {}
        for query in asked:
            _kind, _tenant, names, limit = query
            scores, last = next(replies), next(replies)
            threshold = (float(last[0][1]), _utf8(_text(last[0][0]))) if last and limit > 0 else None
            answers[id(query)] = {
                name for name, score in zip(names, scores, strict=True)
                if score is None or (limit > 0 and (threshold is None or (float(score), _utf8(name)) >= threshold))
            }  # fmt: skip
        return [answers.get(id(q), set()) for q in queries]

    def series_retire(self, kind: str, tenant: str, names: Mapping[str, float | None]) -> int:
        from kpi_core.config import REASON_OTHER
        from kpi_core.engine import AGENTS, CALLBACKS, REASON_SEP, TICKETS, WAITING
        from kpi_core.events import AGENT_STATES

        if not names:
            return 0
        script = self.client.register_script(RETIRE_LUA)
        lives = [encode(n) for n in (WAITING, CALLBACKS, TICKETS, AGENTS)]
        into: list[Any] = [_utf8(RETIRED_SCOPE), encode(RETIRED_SCOPE)]
        if kind == "tenant":
            flat: list[Any] = []
            for name, at in names.items():
                flat += [_num(at if at is not None else math.nan), _utf8(name)]
            gone = self.client.register_script(RETIRE_TENANTS_LUA)(
                keys=[self._series_key("tenant", ""), self._tenants_key], args=flat)
            for raw in gone:
                gone_tenant = _text(raw)
                scopes = [_utf8(encode(_text(s))) for s in self.client.smembers(self._scopes_key(gone_tenant))]
                script(keys=self._retire_keys("tenant", gone_tenant, self._scopes_key(gone_tenant)),
                       args=["tenant", self._tag(gone_tenant), *into, len(lives), *lives, 0, len(scopes), *scopes])
                self.client.sadd(self._count_tenants_key, _utf8(gone_tenant))
            return len(gone)
        scope_args: list[Any] = []
        per_call = RETIRE_NAMES_PER_CALL
        # An agent's members: its state, or away with a reason label (kpi_core.engine.agent_member).
        states = [*AGENT_STATES, *(f"away{REASON_SEP}{r}" for r in (*self.config.pause_reasons(tenant), REASON_OTHER))]
        if kind == "agent":
            scope_args = [_utf8(encode(s)) for s in self.scopes().get(tenant, ())]
            per_call = max(1, 4000 // (len(scope_args) * len(states) + 1))
        keys = self._retire_keys(kind, tenant, self._series_key(kind, tenant))
        head = [kind, self._tag(tenant), *into, len(lives), *lives, len(states), *states,
                len(scope_args), *scope_args]  # fmt: skip
        items = list(names.items())
        retired = 0
        for i in range(0, len(items), per_call):
            args = list(head)
            for name, at in items[i:i + per_call]:
                scope = KB_SCOPE_PREFIX + name if kind == "article" else name
                args += ["" if at is None else _num(at), _utf8(name), _utf8(scope), _utf8(encode(scope))]
            retired += int(script(keys=keys, args=args))
        if retired:
            self.client.sadd(self._count_tenants_key, _utf8(tenant))
        return retired

    def _retire_keys(self, kind: str, tenant: str, first: str) -> list[str]:
        return [first, self._scopes_key(tenant), self._count_key(tenant, "sum:series_retired"),
                self._count_names_key(tenant)]  # fmt: skip

    def _note_scope(self, b: _Batch, tenant: str, scope: str) -> None:
        scopes = b.scopes.get(tenant)
        if scopes is None:
            scopes = b.scopes[tenant] = set()
        scopes.add(scope)

    # -- read side -------------------------------------------------------------------------
    # Outside a batch these read Redis. Inside one, records and live sets include the batch's
    # own pending changes (and are watched); bucket, total and count reads show what is
    # committed.
    def scopes(self) -> Mapping[str, Iterable[str]]:
        tenants = sorted(_text(m) for m in self.client.smembers(self._tenants_key))
        result: dict[str, set[str]] = {}
        if tenants:
            with self.client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    pipe.smembers(self._scopes_key(tenant))
                for tenant, members in zip(tenants, pipe.execute(), strict=True):
                    result[tenant] = {_text(m) for m in members}
        if self._batch is not None:
            for tenant, scopes in self._batch.scopes.items():
                result.setdefault(tenant, set()).update(scopes)
        return {tenant: sorted(scopes) for tenant, scopes in sorted(result.items()) if scopes}

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        head, middle, tail = windows.cover(start, end, self.fine_seconds, self.coarse_seconds)
        keys = [self._bucket_key(tenant, windows.FINE, scope, s) for s in head]
        keys += [self._bucket_key(tenant, windows.COARSE, scope, s) for s in middle]
        keys += [self._bucket_key(tenant, windows.FINE, scope, s) for s in tail]
        result: dict[str, float] = {}
        if not keys:
            return result
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            for bucket in pipe.execute():
                if bucket:
                    add_into(result, _floats(bucket))
        return present(result)

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        return present(_floats(self.client.hgetall(self._totals_key(tenant, scope))))

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]:
        key = self._live_key(name, tenant, scope)
        b = self._batch
        if b is None:
            pairs: list[Any] = self.client.zrange(key, 0, -1, withscores=True)
            return {_text(member): float(score) for member, score in pairs}
        # Inside a batch (the upkeep), watch the set: two workers must not both expire a call.
        pipe = self._pipe(b, key)
        pipe.watch(key)
        b.watched.add(key)
        result = {_text(member): float(score) for member, score in pipe.zrange(key, 0, -1, withscores=True)}
        for member, score in b.live.get(key, {}).items():
            if score is None:
                result.pop(member, None)
            else:
                result[member] = score
        return result

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        if self._batch is not None:
            return len(self.live(name, tenant, scope))
        return int(self.client.zcard(self._live_key(name, tenant, scope)))

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        if self._batch is not None:
            return summarize_live(self.live(name, tenant, scope), lo, hi, at)
        result: LiveSummary = self._live_query(tenant, at, [("s", name, scope, lo, hi)])[0]
        return result

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        if self._batch is not None:
            return count_states(self.live(name, tenant, scope), at)
        result: tuple[dict[str, int], dict[str, int]] = self._live_query(tenant, at, [("a", name, scope, 0.0, 0.0)])[0]
        return result

    def _live_query(self, tenant: str, at: float, queries: Sequence[tuple[str, str, str, float, float]]) -> list[Any]:
        """:data:`LIVE_LUA` for ``queries`` of one tenant: ``(kind, name, scope, lo, hi)``."""
        args: list[Any] = [self._tag(tenant), repr(at)]
        for kind, name, scope, lo, hi in queries:
            args += [kind, _utf8(encode(name)), _utf8(encode(scope)), _score_arg(lo), _score_arg(hi)]
        replies = self.client.register_script(LIVE_LUA)(keys=[self._scopes_key(tenant)], args=args)
        return [_live_reply(q[0], reply) for q, reply in zip(queries, replies, strict=True)]

    def counts(self) -> dict[str, dict[str, float]]:
        """The pipeline counters, summed (``max:`` ones: maximum) over every tenant."""
        tenants = sorted(_text(m) for m in self.client.smembers(self._count_tenants_key))
        if not tenants:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.smembers(self._count_names_key(tenant))
            pairs = [(tenant, _text(name)) for tenant, names in zip(tenants, pipe.execute(), strict=True)
                     for name in sorted(names)]  # fmt: skip
        with self.client.pipeline(transaction=False) as pipe:
            for tenant, name in pairs:
                pipe.hgetall(self._count_key(tenant, name))
            values = pipe.execute()
        result: dict[str, dict[str, float]] = {}
        for (_tenant, name), raw in zip(pairs, values, strict=True):
            kind, _sep, bare = name.partition(":")
            labels = result.setdefault(bare, {})
            for label, value in _floats(raw).items():
                if kind == "max":
                    labels[label] = max(labels.get(label, -math.inf), value)
                else:
                    labels[label] = labels.get(label, 0.0) + value
        return result

    def snapshot_reader(self, config: Config, at: float) -> SnapshotReader:
        """This store's read side for one snapshot at ``at``, prefetched (see SnapshotReader)."""
        return SnapshotReader(self, config, at)

    # -- consumer lag (written by a worker, served by the exporter) ------------------------
    #: Lag figures older than this are dropped: no figure rather than a stale one.
    LAG_TTL_SECONDS = 60

    def put_consumer_lag(self, lag: Mapping[tuple[str, int], float]) -> None:
        """Replace the consumer group's lag, ``(topic, partition) -> messages behind``."""
        key = f"{self._pipeline_tag}:consumer-lag"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if lag:
                pipe.hset(key, mapping={f"{topic}\x1f{partition}": _num(value) for (topic, partition), value in lag.items()})
                pipe.expire(key, self.LAG_TTL_SECONDS)
            pipe.execute()

    def consumer_lag(self) -> dict[tuple[str, int], float]:
        return self._partition_map("consumer-lag")

    def _partition_map(self, name: str) -> dict[tuple[str, int], float]:
        """A pipeline hash of ``topic\x1fpartition -> number`` as ``(topic, partition) -> number``."""
        result: dict[tuple[str, int], float] = {}
        for fld, value in _floats(self.client.hgetall(f"{self._pipeline_tag}:{name}")).items():
            topic, _sep, partition = fld.rpartition("\x1f")
            result[(topic, int(partition))] = value
        return result

    #: How long a partition the worker's watchdog found stuck stays on record (streams/watchdog.py).
    STUCK_TTL_SECONDS = 3600

    def put_stuck_partitions(self, stuck: Mapping[tuple[str, int], float]) -> None:
        """Record partitions a worker's watchdog found stuck, ``(topic, partition) -> unix time``;
        the record is kept :data:`STUCK_TTL_SECONDS` after the latest one."""
        key = f"{self._pipeline_tag}:stuck-partitions"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={f"{topic}\x1f{partition}": _num(when) for (topic, partition), when in stuck.items()})
            pipe.expire(key, self.STUCK_TTL_SECONDS)
            pipe.execute()

    def stuck_partitions(self) -> dict[tuple[str, int], float]:
        return self._partition_map("stuck-partitions")

    # -- upkeep ----------------------------------------------------------------------------
    def maintain(self, now: float, fine_keep_seconds: float, coarse_keep_seconds: float) -> None:
        """Nothing to do: buckets, records and seen sets expire by TTL."""


class SnapshotReader:
    """The read side of a :class:`RedisState` for one scrape, prefetched in a few round trips:
    scopes, every scope's totals and live sets in one pipeline, and the window sums of every
    (scope, window) the snapshot will ask for from :data:`WINDOWS_LUA`. Reads it was not
    prepared for fall through to the store, so results never differ from the store's own.
    """

    def __init__(self, state: RedisState, config: Config, at: float) -> None:
        from kpi_core.engine import AGENTS, ALL, CALLBACKS, TICKETS, WAITING

        self.state = state
        self.fine_seconds = state.fine_seconds
        self.coarse_seconds = state.coarse_seconds
        self.at = at
        # The scopes exported (kpi_core.kpis.exported_scopes), with the guard's registry read
        # in one round trip; series_live answers from it.
        from kpi_core.kpis import guarded_names, split_scopes

        self._scopes = state.scopes()
        questions = guarded_names(config, self._scopes)
        self._series_live = {(kind, tenant, limit): (set(names), live) for (kind, tenant, names, limit), live
                             in zip(questions, state.series_live_many(questions), strict=True)}  # fmt: skip
        # What the snapshot reads, prefetched below; of the scopes it leaves out, queues' totals
        # (still summed into their tenant's _all until they retire).
        exported, hidden = split_scopes(config, self)
        self._windows: dict[tuple[str, str, float, float], dict[str, float]] = {}
        self._totals: dict[tuple[str, str], dict[str, float]] = {}
        # Live sets summed up in Redis (LIVE_LUA) for exactly the queries kpi_core.kpis makes.
        self._live_sizes: dict[tuple[str, str, str], int] = {}
        self._live_summaries: dict[tuple[str, str, str, float, float], LiveSummary] = {}
        self._live_states: dict[tuple[str, str, str], tuple[dict[str, int], dict[str, int]]] = {}
        names = (WAITING, CALLBACKS, TICKETS, AGENTS)
        pairs = [(tenant, scope) for tenant, scopes in exported.items() for scope in scopes]
        pairs += [(tenant, scope) for tenant, scopes in hidden.items() for scope in scopes if is_queue_scope(scope)]
        client = state.client
        with client.pipeline(transaction=False) as pipe:
            for tenant, scope in pairs:
                pipe.hgetall(state._totals_key(tenant, scope))
            replies = iter(pipe.execute())
        fields = self._fields = _FieldNames()
        for tenant, scope in pairs:
            self._totals[(tenant, scope)] = fields.floats(next(replies))
        script = client.register_script(LIVE_LUA)
        calls: list[tuple[str, list[tuple[str, str, str, float, float]]]] = []
        for tenant, scopes in exported.items():
            queries: list[tuple[str, str, str, float, float]] = []
            for scope in scopes:
                queries += [("n", name, scope, 0.0, 0.0) for name in names]
                queries.append(("a", AGENTS, scope, 0.0, 0.0))
                if is_queue_scope(scope) and scope != ALL:
                    target = config.queue(tenant, scope).callback_target_seconds
                    queries += [
                        ("s", WAITING, scope, at - config.max_call_age_seconds, at),
                        ("s", CALLBACKS, scope, -math.inf, at),
                        ("s", CALLBACKS, scope, -math.inf, at - target),
                        ("s", TICKETS, scope, -math.inf, at),
                    ]
            for i in range(0, len(queries), LIVE_QUERIES_PER_CALL):
                calls.append((tenant, queries[i:i + LIVE_QUERIES_PER_CALL]))
        # ~45,000 arguments at 1,000 queues: each name and bound encoded once, handed over as bytes.
        names_bytes: dict[str, bytes] = {}
        bounds_bytes: dict[float, bytes] = {}

        def name_bytes(name: str) -> bytes:
            found = names_bytes.get(name)
            if found is None:
                found = names_bytes[name] = _utf8(encode(name))
            return found

        def bound_bytes(bound: float) -> bytes:
            found = bounds_bytes.get(bound)
            if found is None:
                found = bounds_bytes[bound] = _score_arg(bound).encode("ascii")
            return found

        def live_args(tenant: str, chunk: list[tuple[str, str, str, float, float]]) -> list[Any]:
            args: list[Any] = [state._tag(tenant), repr(at)]
            for kind, name, scope, lo, hi in chunk:
                args += [kind, name_bytes(name), name_bytes(scope), bound_bytes(lo), bound_bytes(hi)]
            return args

        if isinstance(client, RedisCluster):  # a cluster refuses scripts in a pipeline
            results = [script(keys=[state._scopes_key(t)], args=live_args(t, chunk)) for t, chunk in calls]
        else:
            with client.pipeline(transaction=False) as pipe:
                for tenant, chunk in calls:
                    script(keys=[state._scopes_key(tenant)], args=live_args(tenant, chunk), client=pipe)
                results = pipe.execute()
        for (tenant, chunk), replies_ in zip(calls, results, strict=True):
            for (kind, name, scope, lo, hi), reply in zip(chunk, replies_, strict=True):
                value = _live_reply(kind, reply)
                if kind == "n":
                    self._live_sizes[(name, tenant, scope)] = value
                elif kind == "s":
                    self._live_summaries[(name, tenant, scope, lo, hi)] = value
                else:
                    self._live_states[(name, tenant, scope)] = value
        for tenant, scopes in exported.items():
            ranges = [windows.window_range(window, at, config.timezone(tenant)) for window in config.windows]
            self._prefetch_windows(tenant, list(scopes), ranges)

    def _prefetch_windows(self, tenant: str, scopes: list[str], ranges: list[tuple[float, float]]) -> None:
        state = self.state
        covers = [windows.cover(start, end, self.fine_seconds, self.coarse_seconds) for start, end in ranges]
        args: list[Any] = [state._tag(tenant), self.fine_seconds, self.coarse_seconds, len(ranges)]
        for head, middle, tail in covers:
            for part in (head, middle, tail):
                args += [part.start, part.stop] if len(part) else [0, 0]
        script = state.client.register_script(WINDOWS_LUA)
        for i in range(0, len(scopes), WINDOW_SCOPES_PER_CALL):
            chunk = scopes[i:i + WINDOW_SCOPES_PER_CALL]
            replies = script(keys=[state._scopes_key(tenant)], args=[*args, *(_utf8(encode(s)) for s in chunk)])
            it = iter(replies)
            flat_floats = self._fields.flat
            for scope in chunk:
                for start, end in ranges:
                    self._windows[(tenant, scope, start, end)] = flat_floats(next(it))

    def scopes(self) -> Mapping[str, Iterable[str]]:
        return self._scopes

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        found = self._windows.get((tenant, scope, start, end))
        return present(found) if found is not None else self.state.read_window(tenant, scope, start, end)

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        found = self._totals.get((tenant, scope))
        return present(found) if found is not None else self.state.totals(tenant, scope)

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]:
        return self.state.live(name, tenant, scope)

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        found = self._live_sizes.get((name, tenant, scope))
        return found if found is not None else self.state.live_size(name, tenant, scope)

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        found = self._live_summaries.get((name, tenant, scope, lo, hi)) if at == self.at else None
        return found if found is not None else self.state.live_summary(name, tenant, scope, lo, hi, at)

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        found = self._live_states.get((name, tenant, scope)) if at == self.at else None
        return found if found is not None else self.state.live_states(name, tenant, scope, at)

    def counts(self) -> dict[str, dict[str, float]]:
        return self.state.counts()

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        wanted = set(names)
        found = self._series_live.get((kind, tenant, limit))
        if found is not None and wanted <= found[0]:
            return wanted & found[1]
        return self.state.series_live(kind, tenant, wanted, limit)

    def __getattr__(self, name: str) -> Any:  # consumer_lag and the like: the store's own
        return getattr(self.state, name)


class _FieldNames:
    """Replies of field names and numbers as ``{name: float}``, each distinct name decoded
    once: a scrape of 1,000 queues parses ~120,000 fields of ~100 distinct names."""

    def __init__(self) -> None:
        self._text: dict[Any, str] = {}

    def _learn(self, names: Iterable[Any]) -> None:
        known = self._text
        for name in names:
            if name not in known:
                known[name] = _text(name)

    def floats(self, raw: Mapping[Any, Any]) -> dict[str, float]:
        """A hash (``HGETALL``): :func:`_floats`."""
        try:
            return dict(zip(map(self._text.__getitem__, raw), map(float, raw.values()), strict=True))
        except KeyError:
            self._learn(raw)
            return dict(zip(map(self._text.__getitem__, raw), map(float, raw.values()), strict=True))

    def flat(self, flat: Sequence[Any]) -> dict[str, float]:
        """A flat ``[name, value, ...]`` list."""
        try:
            return dict(zip(map(self._text.__getitem__, flat[0::2]), map(float, flat[1::2]), strict=True))
        except KeyError:
            self._learn(flat[0::2])
            return dict(zip(map(self._text.__getitem__, flat[0::2]), map(float, flat[1::2]), strict=True))


def _dump_record(record: Record) -> bytes:
    """A record as compact JSON: orjson (10x json's speed) for what it can take, else json,
    which also writes lone surrogates (ids may hold them) as escapes. NaN never reaches a
    record (events are validated finite), but json's refusal of it is kept as the check."""
    try:
        return orjson.dumps(record)
    except TypeError:  # a str orjson will not encode (lone surrogate), or a non-str key
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")


def _load_record(raw: bytes | str) -> Record:
    try:
        record: Record = orjson.loads(raw)
    except orjson.JSONDecodeError:  # lone surrogates written by json (see _dump_record)
        record = json.loads(raw)
    return record


def _utf8(text: str) -> bytes:
    # Names may hold lone surrogates (JSON "\\ud800"): keep them, as Python's own str does.
    return text.encode("utf-8", "surrogatepass")


def _digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=SEEN_DIGEST_BYTES).digest()


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _floats(raw: Mapping[Any, Any]) -> dict[str, float]:
    return {_text(k): float(v) for k, v in raw.items()}

