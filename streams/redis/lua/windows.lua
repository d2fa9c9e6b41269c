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
-- scope and window, a flat {field, value, ...} list; a value is an integer when it is a whole
-- number below 2^53 in magnitude (not -0), else %.17g text (exact doubles).
--
-- Cost: a window part visits only the buckets its scope's index lists in it (found by binary
-- search in the index's ascending starts), not every slot of its range; each bucket is read
-- and its numbers parsed once per scope, however many windows hold it. A scope without an
-- index (state written before indexes existed) has every slot of every part probed.
--
-- Multisets: a bucket holds one ``mx:<name>:<ms>`` field per distinct value (a busy queue's
-- hour: thousands), and all present() makes of them is, per name, the largest ms whose summed
-- count is above 0. The writer deletes a multiset field at 0, so every count is above 0 and
-- that largest ms is the largest of the buckets' own largest: each bucket's is found once,
-- when it is parsed, and a window returns one field per name, the largest (count 1), after its
-- other fields, in the order its names are first met (present()'s order). A window holding a
-- bucket with a count of 0 or below, or an ms that is not a plain integer of at most 15
-- digits, sums every field as the general rule says and returns them all.

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
local tiers = {'f', 'c', 'f'}  -- the tier of each window part: head, middle, tail
local steps = {fine, coarse, fine}
local out = {}
local ismax = {}
local fmt = string.format
local sub = string.sub
local match = string.match
local floor = math.floor
local WHOLE = 2 ^ 53

-- The first position in ascending ``starts`` whose value is >= x (#starts + 1 if none).
local function first_at_least(starts, x)
  local a, b = 1, #starts + 1
  while a < b do
    local m = math.floor((a + b) / 2)
    if starts[m] < x then a = m + 1 else b = m end
  end
  return a
end

-- A bucket's reply, parsed (see the loop below).
local function parse_bucket(key)
  local flat = redis.call('HGETALL', key)
  local plain, names, top, topf = {}, {}, {}, {}
  local odd = false
  for j = 1, #flat, 2 do
    local f = flat[j]
    local v = tonumber(flat[j + 1])
    flat[j + 1] = v
    if sub(f, 1, 3) == 'mx:' then
      local name, sign, digits = match(f, '^mx:(.*):(%-?)(%d+)$')
      if name == nil or #digits > 15 or v == nil or not (v > 0) then
        odd = true
      else
        local ms = tonumber(sign .. digits)
        local cur = top[name]
        if cur == nil then
          names[#names + 1] = name
          top[name] = ms
          topf[name] = f
        elseif ms > cur then
          top[name] = ms
          topf[name] = f
        end
      end
    else
      plain[#plain + 1] = f
      plain[#plain + 1] = v
    end
  end
  return {flat = flat, plain = plain, names = names, top = top, topf = topf, odd = odd}
end

for s = 5 + nwin * 6, #ARGV do
  local scope = ARGV[s]
  local prefixes = {f = tag .. ':b:f:' .. scope .. ':', c = tag .. ':b:c:' .. scope .. ':'}
  -- Per tier, the ascending starts of the buckets the index lists in [lo, hi); nil: no index.
  local listed = {}
  for _, tier in ipairs({'f', 'c'}) do
    local ikey = tag .. ':bi:' .. tier .. ':' .. scope
    local starts = {}
    for i, m in ipairs(redis.call('ZRANGEBYSCORE', ikey, lo, '(' .. hi)) do starts[i] = tonumber(m) end
    -- A zset with members exists: EXISTS only tells an index empty in [lo, hi) from none.
    if #starts > 0 or redis.call('EXISTS', ikey) == 1 then listed[tier] = starts end
  end
  -- Each bucket read and parsed once per scope: its fields but the multisets' (``plain``), its
  -- largest ms per multiset name (``names`` in first-met order, ``top``: that ms, ``topf``: its
  -- field), ``odd`` when a multiset field breaks the fast rule, and the whole reply (``flat``).
  local parsed = {f = {}, c = {}}
  for w = 1, nwin do
    local r = ranges[w]
    local held = {}
    local odd = false
    for part = 1, 3 do
      local first, stop = r[2 * part - 1], r[2 * part]
      if stop > first then
        local tier, step = tiers[part], steps[part]
        local starts = listed[tier]
        local cache, pf = parsed[tier], prefixes[tier]
        local i, t = 1, first
        if starts ~= nil then i = first_at_least(starts, first) end
        while true do
          if starts == nil then
            if t >= stop then break end
          else
            t = starts[i]
            if t == nil or t >= stop then break end
            i = i + 1
          end
          if starts == nil or (t - first) % step == 0 then
            local b = cache[t]
            if b == nil then
              b = parse_bucket(pf .. fmt('%d', t))
              cache[t] = b
            end
            held[#held + 1] = b
            odd = odd or b.odd
          end
          if starts == nil then t = t + step end
        end
      end
    end
    local sums = {}
    local order = {}
    local names, top, topf = {}, {}, {}
    for _, b in ipairs(held) do
      local flat = odd and b.flat or b.plain
      for j = 1, #flat, 2 do
        local f = flat[j]
        local v = flat[j + 1]
        local m = ismax[f]
        if m == nil then
          m = sub(f, 1, 4) == 'max_'
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
      if not odd then
        for _, name in ipairs(b.names) do
          local ms = b.top[name]
          local cur = top[name]
          if cur == nil then
            names[#names + 1] = name
            top[name] = ms
            topf[name] = b.topf[name]
          elseif ms > cur then
            top[name] = ms
            topf[name] = b.topf[name]
          end
        end
      end
    end
    local flat = {}
    for _, f in ipairs(order) do
      local v = sums[f]
      flat[#flat + 1] = f
      -- A whole number goes back as an integer reply (exact below 2^53, and no text to
      -- format: most sums are counts); anything else (fractions, -0, inf, nan) as %.17g text.
      if v == floor(v) and v > -WHOLE and v < WHOLE and (v ~= 0 or 1 / v > 0) then
        flat[#flat + 1] = v
      else
        flat[#flat + 1] = fmt('%.17g', v)
      end
    end
    for _, name in ipairs(names) do
      flat[#flat + 1] = topf[name]
      flat[#flat + 1] = 1
    end
    out[#out + 1] = flat
  end
end
return out
