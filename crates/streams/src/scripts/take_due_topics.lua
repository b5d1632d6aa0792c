-- Takes the topics whose earliest scheduled message is due from the namespace's due index
-- (`<ns>:scheduled:{due}`), for a mover to move their messages: each gets a lease (its score
-- set to now + the lease), so no other mover takes it meanwhile, and a mover that dies or
-- never gets this reply only delays it by the lease. The mover then releases each topic and
-- indexes it again at its earliest message (see `schedule.rs`). "Now" is Redis' clock.
-- KEYS[1] due index
-- ARGV[1] most topics to take, ARGV[2] lease in ms
-- Returns {lease score, now, ms until the earliest topic left is due or -1, topic, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = now + tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  local args = {'ZADD', KEYS[1], 'XX'}
  for _, name in ipairs(due) do
    args[#args + 1] = lease
    args[#args + 1] = name
  end
  redis.call(unpack(args))
end
local reply = {lease, now, -1}
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  reply[3] = math.max(0, tonumber(next_due[2]) - now)
end
for _, name in ipairs(due) do
  reply[#reply + 1] = name
end
return reply
