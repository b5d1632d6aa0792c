-- The topics registered after number ARGV[1], for a worker that saw the registry up to there.
-- A counter below that number means the registry was lost (Redis restarted without
-- persistence) and is being filled again: then every topic in it is returned.
-- KEYS[1] registry (sorted set), KEYS[2] its counter (same hash tag)
-- ARGV[1] the last number seen
-- Returns {the counter now, topic, ...}.
local seen = tonumber(ARGV[1])
local now = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < seen then
  seen = 0
end
local reply = {now}
if now > seen then
  local names = redis.call('ZRANGE', KEYS[1], '(' .. seen, '+inf', 'BYSCORE')
  for _, name in ipairs(names) do
    reply[#reply + 1] = name
  end
end
return reply
