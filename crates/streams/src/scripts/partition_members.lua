-- A member of a group on a partitioned topic says it is alive, and learns who else is
-- (`consumer/partitions.rs`). By Redis' clock, so members on hosts whose clocks disagree
-- agree on who is alive.
-- KEYS[1] the group's members (sorted set, scored by when each membership runs out, ms)
-- ARGV[1] this member, ARGV[2] how long its membership lasts (ms), ARGV[3] 1 to leave
-- Returns the live members (any order).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
