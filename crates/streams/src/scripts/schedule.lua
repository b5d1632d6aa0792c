-- Schedule a message: keep its entry fields until its due time, when move_due.lua adds them
-- to the topic stream. With an idempotency key, a repeated schedule returns the first id.
-- KEYS[1] scheduled set, KEYS[2] scheduled data hash, KEYS[3] (optional) de-duplication key,
-- all with the topic's hash tag
-- ARGV[1] due time in ms, ARGV[2] schedule id, ARGV[3] de-duplication TTL in ms,
-- ARGV[4 ..] the entry's field/value pairs
-- Returns {schedule id, 1} when scheduled, {first schedule id, 0} for a repeat.
if KEYS[3] then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return {existing, 0}
  end
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], ARGV[2], cmsgpack.pack(fields))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
end
return {ARGV[2], 1}
