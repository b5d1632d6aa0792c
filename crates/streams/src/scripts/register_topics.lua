-- Registers topics in the namespace's registry, each once, numbered in the order they were
-- first registered (what lets workers ask only for topics newer than the last they saw).
-- KEYS[1] registry (sorted set), KEYS[2] its counter (same hash tag)
-- ARGV topic names
-- Returns how many were new.
local added = 0
for _, name in ipairs(ARGV) do
  if not redis.call('ZSCORE', KEYS[1], name) then
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', KEYS[1], seq, name)
    added = added + 1
  end
end
return added
