-- Re-claim entries this consumer still owns, skipping any another consumer took over.
-- KEYS[1] topic stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] mode, ARGV[4 ..] entry ids
-- mode 'lease': reset the idle time only (XCLAIM JUSTID does not count a delivery), so
--               live work is not reclaimed by others while it runs or waits for a retry.
-- mode 'retry': count a new delivery (plain XCLAIM increments the delivery counter).
-- Returns two lists: the ids still owned (and, for 'retry', still present in the stream),
-- and, as id, consumer pairs, the ids now pending under another consumer. Ids in neither
-- are no longer pending (acknowledged or deleted meanwhile).
local owned = {}
local taken = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    if ARGV[3] == 'lease' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
      owned[#owned + 1] = ARGV[i]
    else
      local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i])
      if claimed[1] then
        owned[#owned + 1] = ARGV[i]
      end
    end
  elseif p[1] then
    taken[#taken + 1] = ARGV[i]
    taken[#taken + 1] = p[1][2]
  end
end
return {owned, taken}
