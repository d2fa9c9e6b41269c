-- The window script (read side): sums a tenant's bucket hashes over many windows in one call,
-- in Redis, so a scrape moves a few numbers per (scope, window) instead of every bucket.
--   KEYS[1] = the tenant's scopes set (declares the hash slot; every key read shares its tag)
--   Reads only buckets listed in the scope's bucket indexes (``P:{t:..}:bi:<tier>:<scope>``).
--   ARGV = tag, fine size, coarse size, nwindows, then per window 6 numbers (fine head
--          first/stop, coarse middle first/stop, fine tail first/stop; stop exclusive), then
--          the encoded scopes.
-- Buckets are summed in window order (head, middle, tail, ascending), exactly as
-- MemoryState.read_window does; legacy ``max_*`` fields take the maximum, a maximum's multiset
-- fields (``mx:<name>:<ms>`` -> count) are summed like counts, which is the multisets' union
-- (kpi_core.state.present turns them into ``max_<name>`` in Python). Returns, per
-- scope and window, a flat {field, value, ...} list with values as %.17g text (exact doubles).

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
