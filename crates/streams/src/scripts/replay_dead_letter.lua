-- Put a dead letter back on its topic (the original fields, so the message keeps its id)
-- and remove it from the dead-letter stream, atomically.
-- KEYS[1] dead-letter stream, KEYS[2] topic stream (same hash tag)
-- ARGV[1] dead-letter entry id, ARGV[2] number of metadata field/value pairs to skip
-- Returns the new entry id, nil if the dead letter does not exist, or an error when it has
-- no original fields to replay.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not e[1] then
  return false
end
local f = e[1][2]
local args = {'XADD', KEYS[2], '*'}
for i = 2 * tonumber(ARGV[2]) + 1, #f do
  args[#args + 1] = f[i]
end
if #args == 3 then
  return redis.error_reply('NOFIELDS the dead letter has no original fields to replay')
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
