-- Move scheduled messages whose time has come to the topic stream. Each is moved by exactly
-- one caller however many workers run this at once: the script is atomic, and a moved
-- message leaves the scheduled set in the same step. "Now" is Redis' clock, shared by all.
-- KEYS[1] scheduled set, KEYS[2] scheduled data hash, KEYS[3] topic stream (same hash tag)
-- ARGV[1] most messages to move
-- Returns {moved, ms until the next due message or -1 when none is left}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for _, id in ipairs(due) do
  local packed = redis.call('HGET', KEYS[2], id)
  if packed then
    local args = {'XADD', KEYS[3], '*'}
    local fields = cmsgpack.unpack(packed)
    for i = 1, #fields do
      args[#args + 1] = fields[i]
    end
    redis.call(unpack(args))
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  return {moved, math.max(0, tonumber(next_due[2]) - now)}
end
return {moved, -1}
