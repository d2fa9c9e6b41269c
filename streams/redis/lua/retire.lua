-- Retirement (Engine.retire_series), one tenant's slot. KEYS: the kind's registry zset, the
-- tenant's scopes set, its count hash for ``sum:series_retired`` and its set of count names.
--   ARGV = kind, tag, RETIRED_SCOPE raw and encoded (a retiring queue's totals are added to
--          its totals), nlive, live-set names (encoded) ..., nstates, agent states ...,
--          nscopes, scopes (encoded; kind 'agent': every scope of the tenant) ..., then names
--          as four: admitted at ('' = no registry entry), name, scope, scope encoded.
-- A name is retired only while the registry still holds it at exactly that time (admitted
-- again meanwhile: left alone), or, for '', while it has no entry and no coarse bucket index
-- (no bucket kept). Retiring a queue or article drops its scope: totals, live sets, bucket
-- indexes and the buckets they list (and their multiset hashes), its scopes-set entry. An
-- agent: its members of every scope's agents set. Kind 'tenant' (the tenant's registry entry already removed): every
-- scope listed in ARGV, the scopes set, the seen set and the tenant's registries (KEYS[1] is
-- its scopes set); its records expire by TTL, its pipeline counters stay (they are summed
-- into ccmon_events_total and the like, which must not go down).
-- Counts one per name retired; returns how many.

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
    local keys = {}  -- each bucket and its multiset hash
    for i = 1, #starts do
      keys[2 * i - 1] = tag .. ':b:' .. tier .. ':' .. enc .. ':' .. starts[i]
      keys[2 * i] = tag .. ':bx:' .. tier .. ':' .. enc .. ':' .. starts[i]
    end
    for i = 1, #keys, 1000 do redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys))) end
    redis.call('DEL', ikey)
  end
  -- the window cache and the minute folds go with them
  redis.call('DEL', tag .. ':wv:' .. enc, tag .. ':wc:' .. enc, tag .. ':wv:f:' .. enc, tag .. ':mc:' .. enc)
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
        for _, state in ipairs(states) do redis.call('ZREM', key, state .. '\031' .. name) end
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
