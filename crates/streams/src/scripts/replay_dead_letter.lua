-- Put a dead letter back on its topic (the original fields, so the message keeps its id),
-- addressed to the group that gave up on it, and remove it from the dead-letter stream,
-- atomically.
-- The copy ends with the field `dlq:for` naming that group (the dead letter's `dlq:group`):
-- workers of other groups acknowledge it without handling it, so a replay never runs a
-- message again in a service that had handled it. A `dlq:for` among the original fields (a
-- message replayed before) is replaced.
-- KEYS[1] dead-letter stream, KEYS[2] topic stream (same hash tag)
-- ARGV[1] dead-letter entry id, ARGV[2] number of metadata field/value pairs to skip
-- Returns the new entry id, nil if the dead letter does not exist, or an error when it has
-- no original fields to replay.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not e[1] then
  return false
end
local f = e[1][2]
if f[1] ~= 'dlq:topic' then
  return redis.error_reply('UNREADABLE the entry is not a dead letter')
end
local meta = 2 * tonumber(ARGV[2])
if f[meta + 1] == 'dlq:truncated' then
  return redis.error_reply('TRUNCATED only a prefix of the original entry was kept')
end
local group = false
for i = 1, meta, 2 do
  if f[i] == 'dlq:group' then
    group = f[i + 1]
  end
end
local args = {'XADD', KEYS[2], '*'}
for i = meta + 1, #f, 2 do
  if f[i] ~= 'dlq:for' then
    args[#args + 1] = f[i]
    args[#args + 1] = f[i + 1]
  end
end
if #args == 3 then
  return redis.error_reply('NOFIELDS the dead letter has no original fields to replay')
end
if group then
  args[#args + 1] = 'dlq:for'
  args[#args + 1] = group
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
