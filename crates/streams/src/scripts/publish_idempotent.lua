-- Idempotent publish: add the entry unless this idempotency key was seen, atomically.
-- KEYS[1] topic stream, KEYS[2] de-duplication key (same hash tag)
-- ARGV[1] de-duplication TTL in ms
-- ARGV[2] n, the number of trim arguments that follow (e.g. MAXLEN ~ 1000)
-- ARGV[3 .. 2+n] trim arguments, then the entry's field/value pairs
-- Returns {entry id, 1} when added, {first entry id, 0} when the key was seen.
local existing = redis.call('GET', KEYS[2])
if existing then
  return {existing, 0}
end
local ntrim = tonumber(ARGV[2])
local args = {'XADD', KEYS[1]}
for i = 3, 2 + ntrim do
  args[#args + 1] = ARGV[i]
end
args[#args + 1] = '*'
for i = 3 + ntrim, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 1}
