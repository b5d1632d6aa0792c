-- Registers topics in the namespace's registry, each once, numbered in the order they were
-- first registered (what lets workers ask only for topics newer than the last they saw).
-- A registry started afresh (the counter's first number: a new namespace, or Redis lost its
-- data) gets a new epoch, so workers that saw an older registry read this one from the start.
-- KEYS[1] registry (sorted set), KEYS[2] its counter, KEYS[3] its epoch (same hash tag)
-- ARGV topic names
-- Returns how many were new.
local added = 0
for _, name in ipairs(ARGV) do
  if not redis.call('ZSCORE', KEYS[1], name) then
    local seq = redis.call('INCR', KEYS[2])
    if seq == 1 then
      local t = redis.call('TIME')
      redis.call('SET', KEYS[3], t[1] .. '.' .. t[2])
    end
    redis.call('ZADD', KEYS[1], seq, name)
    added = added + 1
  end
end
return added
