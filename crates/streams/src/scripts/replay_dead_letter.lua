-- Put a dead letter back on its topic (the original fields, so the message keeps its id),
-- addressed to the group that gave up on it, and remove it from the dead-letter stream,
-- atomically.
-- The copy ends with the field `dlq:for` naming that group (the dead letter's `dlq:group`):
-- workers of other groups acknowledge it without handling it, so a replay never runs a
-- message again in a service that had handled it. A `dlq:for` among the original fields (a
-- message replayed before) is replaced.
-- A version 3 entry (`v` `3`) without `o` gains `o`, the entry id it had in the topic (the
-- dead letter's `dlq:id`): a message that carries no id or time of its own is known by the
-- entry it was first written at, so it keeps both through the replay.
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
local origin = false
for i = 1, meta, 2 do
  if f[i] == 'dlq:group' then
    group = f[i + 1]
  elseif f[i] == 'dlq:id' then
    origin = f[i + 1]
  end
end
local args = {'XADD', KEYS[2], '*'}
local lean, has_origin = false, false
for i = meta + 1, #f, 2 do
  if f[i] ~= 'dlq:for' then
    args[#args + 1] = f[i]
    args[#args + 1] = f[i + 1]
  end
  if f[i] == 'v' and f[i + 1] == '3' then
    lean = true
  elseif f[i] == 'o' then
    has_origin = true
  end
end
if #args == 3 then
  return redis.error_reply('NOFIELDS the dead letter has no original fields to replay')
end
if lean and origin and not has_origin then
  args[#args + 1] = 'o'
  args[#args + 1] = origin
end
if group then
  args[#args + 1] = 'dlq:for'
  args[#args + 1] = group
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
