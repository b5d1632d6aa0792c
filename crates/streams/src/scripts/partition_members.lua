-- A member of a group on a partitioned topic says it is alive (or that it leaves), and learns
-- who else is (`consumer/partitions.rs`). By Redis' clock, so members on hosts whose clocks
-- disagree agree on who is alive. It also puts the topic's partition count back if it is gone
-- (Redis restarted without persistence, or lost the key): producers would otherwise stop
-- partitioning the topic.
-- KEYS[1] the group's members (sorted set: a live member scored by when its membership runs
-- out, ms; one that left scored by minus the time it left)
-- KEYS[2] the topic's partition count (same hash tag)
-- ARGV[1] this member, ARGV[2] how long its membership lasts (ms), ARGV[3] 1 to leave,
-- ARGV[4] the partition count this member consumes
-- Putting the count back means Redis lost the topic's keys, the leases with them, while their
-- holders may still run for up to a lease: the member named "" (no consumer's name: those have
-- 1 to 200 bytes), scored by when that lease is over, tells every member to take no partition
-- it does not hold until then.
-- Returns 1 if the count was put back (else 0), Redis' time (ms), then each member and score.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], -now, ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
end
-- Memberships that ran out, and leaves older than a lease (every member has seen them).
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. -(now - lease), '(0')
redis.call('PEXPIRE', KEYS[1], 2 * lease)
local restored = 0
if ARGV[3] ~= '1' and redis.call('SET', KEYS[2], ARGV[4], 'NX') then
  restored = 1
  redis.call('ZADD', KEYS[1], now + lease, '')
end
local reply = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(reply, 1, now)
table.insert(reply, 1, restored)
return reply
