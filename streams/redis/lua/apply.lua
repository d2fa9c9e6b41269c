-- The batch script. KEYS are consumed in order by the operations in ARGV:
--   ARGV[1] = number of seen-set operations, which come first:
--     S ttl_ms below n hour id ..(key: a seen zset) -- checked, then ZADD NX; drop hours < below
--   ARGV[2] = test hook: 0 in production; k > 0 fails the script just before its k-th write,
--             -1 just after its last one (RedisState.fail_at_write); either way it rolls back
--   then any of:
--     H ttl_ms nsum nmax f v ... (key: a hash)      -- HINCRBY sums (a multiset field mx:* at 0
--                                                    deleted), max for legacy max_ fields
--     M ttl_ms bucket spill n f d ... (key: a bucket's multiset hash) -- HINCRBY the counts d
--                                                    (whole) of fields f = mx:<name>:<ms> (one
--                                                    at 0 deleted): in the bucket itself while
--                                                    it has no multiset hash and at most
--                                                    ``spill`` fields; else in the multiset
--                                                    hash (the bucket's moved there first), the
--                                                    bucket keeping its tops: ``mt:<name>`` =
--                                                    the largest ms counted above 0 (none: no
--                                                    field), ``mt:!`` = 1 once a count there
--                                                    fell below 0 (see below)
--     R ttl_ms value             (key: a record)    -- SET PX
--     D                          (key: a record)    -- DEL
--     Z n score member ...       (key: a zset)      -- ZADD
--     X n member ...             (key: a zset)      -- ZREM
--     A n member ...             (key: a set)       -- SADD
--     I ttl_ms below n start ... (key: a zset)      -- bucket index: ZADD start start, drop < below
--     G ttl_ms below n at name ..(key: a zset)      -- series registry: ZADD GT, drop < below
--     C sha1                     (key: a record)    -- check only: the record is as the batch read
--                                                    it (the SHA-1 hex of its value; '' absent)
--     W ttl_ms index start       (key: a window version) -- before a coarse bucket index's I:
--                                                    when ``start`` (the lowest the batch writes)
--                                                    is below the index's newest, or there is no
--                                                    index, the scope's window version moves on
--                                                    (what lua/windows.lua cached is stale)
-- A quiet bucket keeps its few multiset fields (a key of their own would cost more memory
-- than they do); a busy one has them moved out once it holds more than ``spill`` fields.
-- A bucket's tops are what a scrape reads of its maxima (lua/windows.lua): one field per name
-- instead of one per distinct value. A top only moves up on an addition; when the value it
-- names is no longer counted, it is found again from the multiset hash (a late event's
-- retraction: rare). ``mt:!`` tells readers a count there is below 0 (a retraction before its
-- addition), so they sum the multisets field by field (the general rule) for that bucket.
-- ttl_ms 0 means "no expiry" (H only). Returns 0, or {1, dup_count} without writing anything
-- when an event id is already in its seen set, {2, changed_count} without writing anything
-- when a record the batch read changed since (C), or an error reply "ccmon apply: ..." having
-- changed nothing (a malformed ARGV is refused before the first write; a failure among the
-- writes is rolled back from the undo log). Phases (streams/redis/write.py, the module header):
--   1. validate all of ARGV (numbers finite, counts and TTLs in range, ops known, #KEYS);
--   2. check the seen sets and the records read (reads only);
--   3. under pcall, every write, each preceded by what undoes it: the other ops in order,
--      then the seen-set ops last; on an error, the undo log is played back in reverse.

local nargv = #ARGV
local nkeys = #KEYS
local MAX_TTL_MS = 99999999999999  -- an integer Lua still prints as one (%.14g), ~3,000 years
local CHUNK = 5000  -- arguments per command built with unpack (Lua's C stack holds 8000)

-- 1. Validation: nothing below is written before all of ARGV has been checked. (Messages are
-- built only on an error: a string made per checked value would cost more than the check.)
local starts = {}
local multiset = {}  -- ARGV index of an M op's field -> {name, ms as text, ms}
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
    elseif op == 'M' then
      int(a + 1, 1, MAX_TTL_MS, 'ttl_ms', j)
      if a + 2 > nargv then invalid(a + 2, 'bucket', j, 'is required') end
      int(a + 3, 0, 1e9, 'spill', j)
      span = span_of(a, a + 4, 2, 5, j)
      for i = a + 5, a + span - 1, 2 do
        local name, sign, digits = string.match(ARGV[i], '^mx:(.+):(%-?)(%d+)$')
        if name == nil or #digits > 15 then invalid(i, 'field', j, 'must be mx:<name>:<ms>, ms of at most 15 digits') end
        multiset[i] = {name, sign .. digits, tonumber(sign .. digits)}
        int(i + 1, -1e15, 1e15, 'count', j)
      end
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
    elseif op == 'C' then
      span = 2
      if a + 1 > nargv then invalid(a + 1, 'sha1', j, 'is required') end
    elseif op == 'W' then
      int(a + 1, 1, MAX_TTL_MS, 'ttl_ms', j)
      if a + 2 > nargv then invalid(a + 2, 'index', j, 'is required') end
      finite(a + 3, 'start', j)
      span = 4
    else
      invalid(a, 'op #' .. j, nil, 'must be one of S H M R D Z X A I G C W')
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
-- And no record the batch read may have changed since (another writer of the same customer,
-- agent...): the batch would write what it computed from the old value.
local changed = 0
for j = nseen + 1, nkeys do
  local a = starts[j]
  if ARGV[a] == 'C' then
    local want = ARGV[a + 1]
    local v = redis.pcall('GET', KEYS[j])
    if type(v) == 'table' then v = false end  -- a key of another type: absent, as MGET read it
    local same
    if want == '' or not v then same = (want == '') == (not v) else same = redis.sha1hex(v) == want end
    if not same then changed = changed + 1 end
  end
end
if changed > 0 then return {2, changed} end

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
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
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

-- Op M (see the header): the counts into the bucket, or into its multiset hash ``key`` and
-- then the bucket's tops.
local function tops_of(flat, by)
  -- Per name in ``by``: the largest ms counted above 0 among the fields of ``flat``
  -- (mx:<name>:<ms>, count, ...) -> by[name].top, .toptext.
  for j = 1, #flat, 2 do
    local f = flat[j]
    if string.sub(f, 1, 3) == 'mx:' and tonumber(flat[j + 1]) > 0 then
      local name, sign, digits = string.match(f, '^mx:(.+):(%-?)(%d+)$')
      local st = name and by[name]
      if st and #digits <= 15 then
        local v = tonumber(sign .. digits)
        if st.top == nil or v > st.top then st.top, st.toptext = v, sign .. digits end
      end
    end
  end
end

local function multisets(key, a)
  local ttl_arg, bucket, spill, n = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if n == 0 then return end
  local fields = {}
  for i = 1, n do fields[i] = ARGV[a + 3 + 2 * i] end
  local beside = redis.call('EXISTS', key) == 1
  local into = beside and key or bucket
  local old = read('HMGET', into, fields)
  undo[#undo + 1] = {'h', into, fields, old}
  -- Per name (in first-met order): the largest value newly counted (``gain``, its ms and text)
  -- and the values no longer counted (``lost``).
  local names, by = {}, {}
  local below = false
  for i = 1, n do
    local f = fields[i]
    local p = multiset[a + 3 + 2 * i]
    step()
    local r = redis.call('HINCRBY', into, f, ARGV[a + 4 + 2 * i])
    if r == 0 then redis.call('HDEL', into, f) elseif r < 0 then below = true end
    local was = tonumber(old[i]) or 0
    local st = by[p[1]]
    if st == nil then
      st = {lost = {}}
      by[p[1]] = st
      names[#names + 1] = p[1]
    end
    if r > 0 and was <= 0 then
      if st.gain == nil or p[3] > st.gain then st.gain, st.text = p[3], p[2] end
    elseif r <= 0 and was > 0 then
      st.lost[p[3]] = true
    end
  end
  expire(bucket, ttl_arg)
  if not beside then
    if redis.call('HLEN', bucket) <= spill then return end
    -- Spill: every multiset field of the bucket moves to its multiset hash (which did not
    -- exist), and the bucket gets its tops.
    local flat = redis.call('HGETALL', bucket)
    local moved, put, back = {}, {}, {}
    for j = 1, #flat, 2 do
      if string.sub(flat[j], 1, 3) == 'mx:' then
        moved[#moved + 1] = flat[j]
        put[#put + 1] = flat[j]
        put[#put + 1] = flat[j + 1]
        back[#back + 1] = flat[j + 1]
        if tonumber(flat[j + 1]) < 0 then below = true end
      end
    end
    if #moved == 0 then return end
    local names_all, by_all = {}, {}
    for _, f in ipairs(moved) do
      local name = string.match(f, '^mx:(.+):%-?%d+$')
      if name and by_all[name] == nil then
        by_all[name] = {}
        names_all[#names_all + 1] = name
      end
    end
    tops_of(put, by_all)
    undo[#undo + 1] = {'h', bucket, moved, back}
    undo[#undo + 1] = {'h', key, moved, {}}
    step()
    for i = 1, #put, CHUNK do redis.call('HSET', key, unpack(put, i, math.min(i + CHUNK - 1, #put))) end
    for i = 1, #moved, CHUNK do redis.call('HDEL', bucket, unpack(moved, i, math.min(i + CHUNK - 1, #moved))) end
    local tput, tfields = {}, {}
    for _, name in ipairs(names_all) do
      local st = by_all[name]
      if st.toptext then
        tput[#tput + 1] = 'mt:' .. name
        tput[#tput + 1] = st.toptext
        tfields[#tfields + 1] = 'mt:' .. name
      end
    end
    if below then
      tput[#tput + 1] = 'mt:!'
      tput[#tput + 1] = '1'
      tfields[#tfields + 1] = 'mt:!'
    end
    if #tput > 0 then
      undo[#undo + 1] = {'h', bucket, tfields, redis.call('HMGET', bucket, unpack(tfields))}
      step()
      redis.call('HSET', bucket, unpack(tput))
    end
    expire(key, ttl_arg)
    return
  end
  local tfields = {}
  for i, name in ipairs(names) do tfields[i] = 'mt:' .. name end
  tfields[#names + 1] = 'mt:!'
  local tops = redis.call('HMGET', bucket, unpack(tfields))
  local put, out = {}, {}
  for i, name in ipairs(names) do
    local st, text = by[name], tops[i]
    local cur = text and tonumber(text) or nil
    local top, toptext = cur, text
    if cur and st.lost[cur] then  -- the top is no longer counted: the largest that is
      st.top, st.toptext = nil, nil
      tops_of(redis.call('HGETALL', key), {[name] = st})
      top, toptext = st.top, st.toptext or false
    end
    if st.gain ~= nil and (top == nil or st.gain > top) then top, toptext = st.gain, st.text end
    if toptext ~= text then
      if toptext then
        put[#put + 1] = tfields[i]
        put[#put + 1] = toptext
      else
        out[#out + 1] = tfields[i]
      end
    end
  end
  if below and not tops[#names + 1] then
    put[#put + 1] = 'mt:!'
    put[#put + 1] = '1'
  end
  if #put > 0 or #out > 0 then
    undo[#undo + 1] = {'h', bucket, tfields, tops}
    step()
    if #put > 0 then redis.call('HSET', bucket, unpack(put)) end
    if #out > 0 then redis.call('HDEL', bucket, unpack(out)) end
  end
  expire(key, ttl_arg)
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
        -- HINCRBY (integer arithmetic, exact, cheaper than HINCRBYFLOAT) for whole deltas: the engine's
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
  elseif op == 'M' then
    multisets(key, a)
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
  elseif op == 'C' then  -- checked in phase 2, nothing to write
    return
  elseif op == 'W' then
    -- A window version never comes back to a value it had: a new one starts at the clock in
    -- microseconds (above anything an earlier key of that name reached, one step a batch).
    local newest = redis.call('ZRANGE', ARGV[a + 2], -1, -1)
    if #newest == 0 or tonumber(ARGV[a + 3]) < tonumber(newest[1]) then
      local v = redis.pcall('GET', key)
      v = type(v) == 'string' and tonumber(v)
      record(key, string.format('%d', v and v + 1 or now_us), ARGV[a + 1])
    end
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
