-- Live sets summed up inside Redis, so a scrape never carries their members (a big tenant's
-- agents-by-state sets hold one member per agent and queue; open tickets pile up for days).
-- ARGV: tag, at, n, then n queries of four: kind, name (encoded), lo, hi; then the encoded
-- scopes. Every query is asked of every scope, scope after scope (the replies in that order):
-- a scrape asks every queue the same few questions, so it sends them once a call. Kinds:
-- ``n`` ZCARD; ``s`` members with lo <= score < hi: {count, smallest score or '', sum of
-- at - score in ascending score order}; ``a`` {part before \x1f, all, with score < at, ...}.
-- Doubles go back as %.17g strings (a Lua number would come back as an integer).

local tag = ARGV[1]
local at = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
for s = 4 + 4 * n, #ARGV do
  local scope = ARGV[s]
  for q = 4, 3 + 4 * n, 4 do
    local kind = ARGV[q]
    local key = tag .. ':live:' .. ARGV[q + 1] .. ':' .. scope
    if kind == 'n' then
      out[#out + 1] = redis.call('ZCARD', key)
    elseif kind == 's' then
      local hi = ARGV[q + 3]
      if hi ~= '+inf' then hi = '(' .. hi end
      local flat = redis.call('ZRANGEBYSCORE', key, ARGV[q + 2], hi, 'WITHSCORES')
      local sum = 0.0
      for i = 2, #flat, 2 do sum = sum + (at - tonumber(flat[i])) end
      local oldest = ''
      if #flat > 0 then oldest = flat[2] end
      out[#out + 1] = {#flat / 2, oldest, string.format('%.17g', sum)}
    else
      local flat = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local every, before, order = {}, {}, {}
      for i = 1, #flat, 2 do
        local state = string.match(flat[i], '^([^\031]*)')
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
end
return out
