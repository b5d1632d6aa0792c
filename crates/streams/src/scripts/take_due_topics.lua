-- Takes the topics whose earliest scheduled message is due from the namespace's due index
-- (`<ns>:scheduled:{due}`), for a mover to move their messages. Taking them out first is what
-- makes a wake-up never lost: a producer indexes a topic after storing its message, so an
-- index entry it writes after this runs is a new entry, and one written before it is seen
-- by the move that follows (the mover re-indexes what is left). "Now" is Redis' clock.
-- KEYS[1] due index
-- ARGV[1] most topics to take
-- Returns {topic, ..., ms until the earliest entry left is due or -1 when none is left} .
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  due[#due + 1] = math.max(0, tonumber(next_due[2]) - now)
else
  due[#due + 1] = -1
end
return due
