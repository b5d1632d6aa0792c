-- Cancel a scheduled message that has not been moved yet.
-- KEYS[1] scheduled set, KEYS[2] scheduled data hash
-- ARGV[1] schedule id
-- Returns 1 when cancelled, 0 when it was not scheduled (already delivered or unknown).
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
