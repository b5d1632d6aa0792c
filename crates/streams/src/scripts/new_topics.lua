-- The topics registered after number ARGV[2] of epoch ARGV[1], for a worker that saw the
-- registry up to there. Another epoch (the registry was started afresh: Redis lost its data)
-- or a counter below that number means: every topic in the registry.
-- KEYS[1] registry (sorted set), KEYS[2] its counter, KEYS[3] its epoch (same hash tag)
-- ARGV[1] the epoch seen, ARGV[2] the last number seen
-- Returns {the epoch, the counter now, topic, ...}.
local epoch = redis.call('GET', KEYS[3]) or ''
local seen = tonumber(ARGV[2])
local now = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch ~= ARGV[1] or now < seen then
  seen = 0
end
local reply = {epoch, now}
if now > seen then
  local names = redis.call('ZRANGE', KEYS[1], '(' .. seen, '+inf', 'BYSCORE')
  for _, name in ipairs(names) do
    reply[#reply + 1] = name
  end
end
return reply
