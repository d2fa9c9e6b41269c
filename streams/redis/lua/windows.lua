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
-- search in the index's ascending starts), not every slot of its range; each tier's index is
-- read only over the span of that tier's parts (the fine one around the fine edges, not since
-- ``today``'s midnight); each bucket is read and its numbers parsed once per scope, however
-- many windows hold it, and each distinct field name is classified once per call. A scope
-- without an index (state written before indexes existed) has every slot of every part probed.
--
-- Multisets: a maximum keeps one ``mx:<name>:<ms>`` count per distinct value (a busy queue's
-- hour: thousands), and all present() makes of them is, per name, the largest ms whose summed
-- count is above 0. A busy bucket's are kept beside it, in its multiset hash (``P:{t:..}:bx:``,
-- apply.lua's op M), and the bucket holds ``mt:<name>`` = its largest ms counted (its top).
-- The writer deletes a count at 0, so every count is above 0 and the window's largest is the
-- largest of its buckets' tops: a window returns one field per name, the largest (count 1),
-- after its other fields, in the order its names are first met (present()'s order). A quiet
-- bucket (or one written before the multiset hashes) holds the fields themselves: its largest
-- is found when it is parsed. A window holding a bucket marked ``mt:!`` (a count below 0 in its multiset hash),
-- one with a count of 0 or below, or an ms that is not a plain integer of at most 15 digits,
-- sums every field as the general rule says, the multiset hashes' too, and returns them all.
--
-- The window cache: per scope, the fold (sums in first-met order, the multisets' largest) of
-- the longest window's coarse middle from its first bucket up to, not including, the scope's
-- newest coarse bucket (``P:{t:..}:wc:<scope>``, msgpack, expiring with the coarse index),
-- made at the scope's window version (``P:{t:..}:wv:<scope>``). The batch script moves the
-- version on when a batch writes a coarse bucket below the index's newest or makes a new
-- index (apply.lua, op W), so a cache at the current version holds exactly what the buckets
-- hold; the fold goes on from it over the later buckets, the same additions in the same order
-- as without it. Not cached: a window with a fine head, an odd bucket, a sum that is -0, not
-- finite, or whole beyond 2^53 (msgpack would not give it back as it is). A read-only replica
-- refuses the write: the script goes on without a cache.
--
-- The minute folds: per scope, the fold of each closed minute of fine buckets (a minute below
-- the one of the fine index's newest start), made when a window's fine part first holds that
-- whole minute and kept in ``P:{t:..}:mc:<scope>`` (msgpack, expiring with the fine index) at
-- the scope's minute version (``P:{t:..}:wv:f:<scope>``). The batch script moves that version
-- on when a batch writes a fine bucket in a minute below the index's newest one's, or makes a
-- new index (apply.lua's W, given the minute's last second), so a fold at the current version
-- holds what its buckets hold. A window then folds a whole minute as one item instead of its
-- buckets: 5m reads 5 items where it read 30. Summing by minutes groups the additions
-- differently, so it is used only where grouping cannot change a bit: every number of the
-- window's buckets whole, the largest magnitudes of its items (and of the window cache it
-- goes on from) summing below 2^53 (no partial sum, in any grouping, reaches it), no odd
-- bucket; otherwise the window is folded bucket by bucket, as without the folds. Like the
-- window cache, it assumes every worker writing the prefix moves the versions (this release).

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
-- lo[tier], hi[tier]: the span of the window parts of that tier (bucket starts in [lo, hi) can
-- matter): the fine index is read only around the fine edges, not since ``today``'s midnight.
local tiers = {'f', 'c', 'f'}  -- the tier of each window part: head, middle, tail
local lo, hi = {}, {}
for w = 1, nwin do
  local r = ranges[w]
  for part = 1, 3 do
    local first, stop, tier = r[2 * part - 1], r[2 * part], tiers[part]
    if stop > first then
      if lo[tier] == nil or first < lo[tier] then lo[tier] = first end
      if hi[tier] == nil or stop > hi[tier] then hi[tier] = stop end
    end
  end
end
local steps = {fine, coarse, fine}
local out = {}
local ismax = {}
local fmt = string.format
local sub = string.sub
local match = string.match
local floor = math.floor
local WHOLE = 2 ^ 53
-- Minute folds (see the header), where fine buckets tile a minute.
local MINUTE = 60
local minutes_on = fine < MINUTE and MINUTE % fine == 0

-- The first position in ascending ``starts`` whose value is >= x (#starts + 1 if none).
local function first_at_least(starts, x)
  local a, b = 1, #starts + 1
  while a < b do
    local m = math.floor((a + b) / 2)
    if starts[m] < x then a = m + 1 else b = m end
  end
  return a
end

-- What a field name is, worked out once per call (a name recurs across buckets and scopes):
-- true for a plain field, {name, ms} for a multiset field that keeps the fast rule, false for
-- one that does not (not ``mx:<name>:<ms>``, or an ms of more than 15 digits).
-- A bucket's top of a multiset (``mt:<name>``, its value the ms) is {name, nil, true}; its
-- marker (``mt:!``) is 'odd'.
local kinds = {}
local function kind_of(f)
  local k
  local head = sub(f, 1, 3)
  if head == 'mx:' then
    local name, sign, digits = match(f, '^mx:(.*):(%-?)(%d+)$')
    if name == nil or #digits > 15 then k = false else k = {name, tonumber(sign .. digits)} end
  elseif head == 'mt:' then
    if f == 'mt:!' then k = 'odd' else k = {sub(f, 4), nil, true} end
  else
    k = true
  end
  kinds[f] = k
  return k
end

-- A bucket's reply, parsed (see the loop below). A multiset count of ``1`` (nearly all of
-- them) is known to be above 0 without converting it; the whole reply (``flat``) is converted
-- to numbers only for a window the general rule sums (``numbers``). ``xkey``: the bucket's
-- multiset hash, read only by the general rule (and only when the bucket names a top).
local function parse_bucket(key, xkey)
  local flat = redis.call('HGETALL', key)
  local plain, names, top, topf = {}, {}, {}, {}
  local odd, tops = false, false
  for j = 1, #flat, 2 do
    local f = flat[j]
    local k = kinds[f]
    if k == nil then k = kind_of(f) end
    if k == true then
      plain[#plain + 1] = f
      plain[#plain + 1] = tonumber(flat[j + 1])
    elseif k == 'odd' then
      odd, tops = true, true
    else
      local raw = flat[j + 1]
      local name, ms = nil, nil
      if k ~= false then
        name, ms = k[1], k[2]
        if k[3] then  -- a top: its value is the ms, counted once (not an integer: odd)
          tops = true
          local digits = match(raw, '^%-?(%d+)$')
          ms = digits and #digits <= 15 and tonumber(raw) or nil
          f = 'mx:' .. name .. ':' .. raw
          raw = '1'
        end
      end
      if ms == nil or (raw ~= '1' and not (tonumber(raw) and tonumber(raw) > 0)) then
        odd = true
      else
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
    end
  end
  return {flat = flat, plain = plain, names = names, top = top, topf = topf, odd = odd, numbers = false,
          xkey = tops and xkey}
end

-- A bucket's fields as numbers, for a window the general rule sums (converted once): its own
-- but the tops, and its multiset hash's, field by field.
local function numbers(b)
  if not b.numbers then
    local flat, out = b.flat, {}
    for j = 1, #flat, 2 do
      local f = flat[j]
      if sub(f, 1, 3) ~= 'mt:' then
        out[#out + 1] = f
        out[#out + 1] = tonumber(flat[j + 1])
      end
    end
    if b.xkey then
      local x = redis.call('HGETALL', b.xkey)
      for j = 1, #x, 2 do
        out[#out + 1] = x[j]
        out[#out + 1] = tonumber(x[j + 1])
      end
    end
    b.numbers = out
  end
  return b.numbers
end

-- ``largest_whole``: the largest magnitude among list[first], list[first + step]..., nil when
-- one is not a whole number. ``whole_mag``: whether every number of a parsed bucket's plain
-- fields is whole, and the largest magnitude among them (worked out once). Whole numbers sum
-- to the same bits in any grouping when no partial sum reaches 2^53: ensured when the
-- magnitudes summed over a window's items stay below it (any partial sum of a field is at
-- most that).
local function largest_whole(list, first, step)
  local mag = 0
  for k = first, #list, step do
    local v = list[k]
    if type(v) ~= 'number' or v ~= floor(v) then return nil end
    if v < 0 then v = -v end
    if v > mag then mag = v end
  end
  return mag
end

local function whole_mag(b)
  if b.whole == nil then
    local mag = largest_whole(b.plain, 2, 2)
    b.whole, b.mag = mag ~= nil, mag or 0
  end
  return b.whole, b.mag
end

-- Adds a flat {field, value, ...} list into ``sums``, each field's first meeting appended to
-- ``order``: counts and sums added (from 0), a legacy ``max_*`` field the larger.
local function add_fields(sums, order, flat)
  for k = 1, #flat, 2 do
    local f, v = flat[k], flat[k + 1]
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
end

-- Merges item ``b``'s multisets' largest (``names``, ``top``, ``topf``) into the fold's.
local function add_largest(names, top, topf, b)
  for _, name in ipairs(b.names) do
    local ms, cur = b.top[name], top[name]
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

-- The fold of parsed buckets, in order, as the window loop below folds them, kept compact:
-- ``p`` the sums as a flat {field, value, ...} list in first-met order, ``n`` the multiset
-- names in first-met order, ``t`` and ``f`` each name's largest ms and its field, ``m`` the
-- sum of the buckets' largest magnitudes (a bound on any partial sum of a field).
local function fold_buckets(buckets)
  local sums, order, names, top, topf = {}, {}, {}, {}, {}
  local mag = 0
  for _, b in ipairs(buckets) do
    local _, m = whole_mag(b)
    mag = mag + m
    add_fields(sums, order, b.plain)
    add_largest(names, top, topf, b)
  end
  local p = {}
  for _, f in ipairs(order) do
    p[#p + 1] = f
    p[#p + 1] = sums[f]
  end
  return {p = p, n = names, t = top, f = topf, m = mag}
end

-- A compact fold as an item the window loop folds like a bucket; nil when it is malformed.
local function fold_item(c)
  if type(c) ~= 'table' or type(c.p) ~= 'table' or type(c.n) ~= 'table' or type(c.t) ~= 'table'
      or type(c.f) ~= 'table' or type(c.m) ~= 'number' then
    return nil
  end
  return {plain = c.p, names = c.n, top = c.t, topf = c.f, odd = false, whole = true, mag = c.m}
end

for s = 5 + nwin * 6, #ARGV do
  local scope = ARGV[s]
  local prefixes = {f = tag .. ':b:f:' .. scope .. ':', c = tag .. ':b:c:' .. scope .. ':'}
  local xprefixes = {f = tag .. ':bx:f:' .. scope .. ':', c = tag .. ':bx:c:' .. scope .. ':'}
  -- Per tier, the ascending starts of the buckets the index lists in [lo, hi); nil: no index
  -- (or no window part of that tier).
  local listed = {}
  for _, tier in ipairs({'f', 'c'}) do
    if lo[tier] ~= nil then
      local ikey = tag .. ':bi:' .. tier .. ':' .. scope
      local starts = {}
      for i, m in ipairs(redis.call('ZRANGEBYSCORE', ikey, lo[tier], '(' .. hi[tier])) do starts[i] = tonumber(m) end
      -- A zset with members exists: EXISTS only tells an index empty in [lo, hi) from none.
      if #starts > 0 or redis.call('EXISTS', ikey) == 1 then listed[tier] = starts end
    end
  end
  -- Each bucket read and parsed once per scope: its fields but the multisets' (``plain``), its
  -- largest ms per multiset name (``names`` in first-met order, ``top``: that ms, ``topf``: its
  -- field), ``odd`` when a multiset field breaks the fast rule, and the whole reply (``flat``).
  local parsed = {f = {}, c = {}}
  -- The minute folds (see the header), at the scope's minute version; nil: not used here.
  local mfolds, mnewest, mkey, mversion = nil, nil, nil, nil
  local mitems, mbad, mnew = {}, {}, false
  if minutes_on and listed.f ~= nil then
    local newest = tonumber(redis.call('ZRANGE', tag .. ':bi:f:' .. scope, -1, -1)[1])
    if newest ~= nil then
      mnewest = newest - newest % MINUTE  -- the minutes below this one may be folded
      mkey = tag .. ':mc:' .. scope
      mversion = redis.pcall('GET', tag .. ':wv:f:' .. scope)
      if type(mversion) ~= 'string' then mversion = '' end
      mfolds = {}
      local blob = redis.pcall('GET', mkey)
      if type(blob) == 'string' then
        local ok, c = pcall(cmsgpack.unpack, blob)
        if ok and type(c) == 'table' and c.version == mversion and type(c.minutes) == 'table' then
          mfolds = c.minutes
        end
      end
    end
  end
  -- Minute m's fold as an item, from the cache or from its buckets (then cached); nil when one
  -- of its buckets is odd or holds a fraction (they are then folded one by one).
  local function minute_item(m)
    local item = mitems[m]
    if item ~= nil or mbad[m] then return item end
    item = fold_item(mfolds[m])
    if item == nil then
      local starts, buckets = listed.f, {}
      local k = first_at_least(starts, m)
      while starts[k] ~= nil and starts[k] < m + MINUTE do
        local t = starts[k]
        if t % fine == 0 then  -- a start off the bucket grid is in no window
          local b = parsed.f[t]
          if b == nil then
            b = parse_bucket(prefixes.f .. fmt('%d', t), xprefixes.f .. fmt('%d', t))
            parsed.f[t] = b
          end
          if b.odd or not whole_mag(b) then
            mbad[m] = true
            return nil
          end
          buckets[#buckets + 1] = b
        end
        k = k + 1
      end
      local c = fold_buckets(buckets)
      mfolds[m] = c
      mnew = true
      item = fold_item(c)
    end
    mitems[m] = item
    return item
  end
  -- The buckets of window w in fold order (head, middle, tail, ascending), each with its part
  -- and start; the middle's below ``skip`` left out (they are in the cache). ``odd``: one is.
  local function gather(r, skip, minutes, base)
    local held, parts, at = {}, {}, {}
    local odd, folded, last = false, false, nil
    for part = 1, 3 do
      local first, stop = r[2 * part - 1], r[2 * part]
      if part == 2 and skip ~= nil then first = skip end
      if stop > first then
        local tier, step = tiers[part], steps[part]
        local starts = listed[tier]
        local cache, pf, xf = parsed[tier], prefixes[tier], xprefixes[tier]
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
          if starts == nil or (t - r[2 * part - 1]) % step == 0 then
            -- A whole closed minute of a fine part goes in as its fold, at its first bucket.
            local m, item = t - t % MINUTE, nil
            if minutes and tier == 'f' and m >= first and m + MINUTE <= stop and m < mnewest then
              item = minute_item(m)
            end
            if item ~= nil then
              if m ~= last then
                held[#held + 1] = item
                parts[#held] = part
                at[#held] = m
                folded, last = true, m
              end
            else
              local b = cache[t]
              if b == nil then
                b = parse_bucket(pf .. fmt('%d', t), xf .. fmt('%d', t))
                cache[t] = b
              end
              held[#held + 1] = b
              parts[#held] = part
              at[#held] = t
              odd = odd or b.odd
            end
          end
          if starts == nil then t = t + step end
        end
      end
    end
    -- Minute folds stand only where any grouping sums alike: whole numbers, the magnitudes of
    -- the items (and ``base``, the largest of a cache the fold goes on from) summing below
    -- 2^53. Else the caller gathers the window again bucket by bucket.
    local grouped = folded and not odd
    if grouped then
      local total = base or 0
      for _, b in ipairs(held) do
        local whole, mag = whole_mag(b)
        total = total + mag
        if not whole or total >= WHOLE then
          grouped = false
          break
        end
      end
    end
    return held, parts, at, odd, folded, grouped
  end
  -- The window cache (see the header): the window with the longest coarse middle and no fine
  -- head, where the scope has a coarse index.
  local cw, cwlen = nil, 0
  if listed.c ~= nil then
    for w = 1, nwin do
      local r = ranges[w]
      if r[2] <= r[1] and r[4] - r[3] > cwlen then cw, cwlen = w, r[4] - r[3] end
    end
  end
  local cached, ckey, cikey, version, newest
  if cw ~= nil then
    ckey = tag .. ':wc:' .. scope
    cikey = tag .. ':bi:c:' .. scope
    version = redis.pcall('GET', tag .. ':wv:' .. scope)
    if type(version) ~= 'string' then version = '' end
    newest = tonumber(redis.call('ZRANGE', cikey, -1, -1)[1])
    local blob = redis.pcall('GET', ckey)
    if type(blob) == 'string' then
      local ok, c = pcall(cmsgpack.unpack, blob)
      if ok and type(c) == 'table' and c.c0 == ranges[cw][3] and c.version == version
          and type(c.upto) == 'number' and c.upto <= ranges[cw][4] and type(c.order) == 'table'
          and type(c.vals) == 'table' and type(c.names) == 'table' and type(c.top) == 'table'
          and type(c.topf) == 'table' then
        cached = c
      end
    end
  end
  -- The largest magnitude among the cache's sums (WHOLE when one is not a whole number): the
  -- minute folds after it stand only if it leaves room below 2^53.
  local cached_mag = cached ~= nil and largest_whole(cached.vals, 1, 1) or WHOLE
  local minutes = mfolds ~= nil
  for w = 1, nwin do
    local r = ranges[w]
    local held, parts, at, odd, folded, grouped
    local use = w == cw and cached ~= nil
    if use then
      held, parts, at, odd, folded, grouped = gather(r, cached.upto, minutes, cached_mag)
      if folded and not grouped then
        held, parts, at, odd = gather(r, cached.upto, false)
      end
      if odd then use = false end  -- the general rule from the start: every bucket read
    end
    if not use then
      held, parts, at, odd, folded, grouped = gather(r, nil, minutes)
      if folded and not grouped then held, parts, at, odd = gather(r, nil, false) end
    end
    local sums = {}
    local order = {}
    local names, top, topf = {}, {}, {}
    if use then  -- the fold as it stood after the cached buckets
      for i, f in ipairs(cached.order) do
        order[i] = f
        sums[f] = cached.vals[i]
      end
      for i, name in ipairs(cached.names) do
        names[i] = name
        top[name] = cached.top[i]
        topf[name] = cached.topf[i]
      end
    end
    -- Where to cache the fold: after the middle's buckets below its end and below the index's
    -- newest start (a write below that one moves the version on, apply.lua's W).
    local capture = nil
    if w == cw and not odd and newest ~= nil then
      local upto = math.min(r[4], newest)
      if upto > r[3] and (not use or upto > cached.upto) then capture = upto end
    end
    local function keep(upto)
      local vals, tops, topfs = {}, {}, {}
      for i, f in ipairs(order) do
        local v = sums[f]
        -- Only numbers msgpack gives back as they are: no -0, nan, inf or whole beyond 2^53.
        if v ~= v or v >= WHOLE or v <= -WHOLE or (v == 0 and 1 / v < 0) then return end
        vals[i] = v
      end
      for i, name in ipairs(names) do
        tops[i] = top[name]
        topfs[i] = topf[name]
      end
      local expiry = redis.call('PEXPIRETIME', cikey)
      if expiry <= 0 then return end
      local blob = cmsgpack.pack({c0 = r[3], upto = upto, version = version, order = order, vals = vals,
                                  names = names, top = tops, topf = topfs})
      redis.pcall('SET', ckey, blob, 'PXAT', expiry)  -- refused on a read-only replica: no cache
    end
    for k, b in ipairs(held) do
      if capture ~= nil and (parts[k] ~= 2 or at[k] >= capture) then
        keep(capture)
        capture = nil
      end
      add_fields(sums, order, odd and numbers(b) or b.plain)
      if not odd then add_largest(names, top, topf, b) end
    end
    if capture ~= nil then keep(capture) end
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
  -- New minute folds kept, with those still in reach (a read-only replica refuses: no cache).
  if mnew then
    local kept, from = {}, lo.f - lo.f % MINUTE
    for m, c in pairs(mfolds) do
      if type(m) == 'number' and m >= from then kept[m] = c end
    end
    local expiry = redis.call('PEXPIRETIME', tag .. ':bi:f:' .. scope)
    if expiry > 0 then
      redis.pcall('SET', mkey, cmsgpack.pack({version = mversion, minutes = kept}), 'PXAT', expiry)
    end
  end
end
return out
