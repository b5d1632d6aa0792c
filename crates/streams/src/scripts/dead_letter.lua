-- Move one entry to the dead-letter stream: copy it, with the reason, to the dead-letter
-- stream, then ack it in its group, atomically, so it is neither lost nor duplicated.
-- The append comes first: if it fails (a dead-letter key of the wrong type, out of memory),
-- the script stops before the ack and the entry stays pending, to be moved later.
-- An entry larger than ARGV[4] bytes (names and values; larger than any valid envelope) is
-- not copied whole: `dlq:truncated` <its size> comes first, then its fields with the values
-- cut so that at most ARGV[5] bytes are kept, for inspection.
-- KEYS[1] topic stream, KEYS[2] dead-letter stream (same hash tag)
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] dead-letter MAXLEN (0: unbounded),
-- ARGV[4] largest entry copied whole (bytes), ARGV[5] bytes kept of a larger one
-- ARGV[6 ..] metadata field/value pairs, written before the entry's own fields
-- Of a partition (`consumer/partitions.rs`): KEYS[3] the group's lease on it, and ARGV[6] the
-- caller's fencing token before the pairs; nothing is moved unless the lease is the caller's.
-- Returns 1 when moved, 0 when the entry was no longer pending (someone else settled it),
-- -1 when the caller lost the partition's lease.
local first = 6
if KEYS[3] then
  if redis.call('GET', KEYS[3]) ~= ARGV[6] then
    return -1
  end
  first = 7
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not pending[1] then
  return 0
end
local args = {'XADD', KEYS[2]}
if tonumber(ARGV[3]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[3]
end
args[#args + 1] = '*'
for i = first, #ARGV do
  args[#args + 1] = ARGV[i]
end
-- The raw fields, exactly as stored: a malformed entry is kept for inspection.
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if entry[1] then
  local fields = entry[1][2]
  local size = 0
  for i = 1, #fields do
    size = size + #fields[i]
  end
  if size <= tonumber(ARGV[4]) then
    for i = 1, #fields do
      args[#args + 1] = fields[i]
    end
  else
    args[#args + 1] = 'dlq:truncated'
    args[#args + 1] = tostring(size)
    local left = tonumber(ARGV[5])
    for i = 1, #fields - 1, 2 do
      if left <= #fields[i] then
        break
      end
      local value = string.sub(fields[i + 1], 1, left - #fields[i])
      args[#args + 1] = fields[i]
      args[#args + 1] = value
      left = left - #fields[i] - #value
    end
  end
end
redis.call(unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
