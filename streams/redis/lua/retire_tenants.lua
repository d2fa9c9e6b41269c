-- The tenant part of retiring tenants, in the pipeline's slot: KEYS = the tenant registry and
-- the tenants set; ARGV = pairs (admitted at, tenant). Removes each tenant still admitted at
-- exactly that time from both; returns those removed (their state is dropped next, by
-- RETIRE_LUA in the tenant's own slot).

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
