-- Remove consumers of a group that hold nothing (empty PEL) and have been idle a long time,
-- so consumer lists do not grow with every instance that ever ran. Check and delete are
-- atomic: a consumer that still holds entries is never deleted (that would drop them).
-- KEYS[1] topic stream
-- ARGV[1] group, ARGV[2] minimum idle ms, ARGV[3] a consumer to keep (the caller)
-- Returns the number of consumers deleted.
local deleted = 0
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local min_idle = tonumber(ARGV[2])
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then
      name = c[i + 1]
    elseif c[i] == 'pending' then
      pending = c[i + 1]
    elseif c[i] == 'idle' then
      idle = c[i + 1]
    end
  end
  if name ~= ARGV[3] and pending == 0 and idle >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    deleted = deleted + 1
  end
end
return deleted
