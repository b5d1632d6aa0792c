-- Hand entries back at a graceful stop: those this consumer still owns stay pending under it
-- but are marked idle, so a live consumer's next sweep takes them over, with their delivery
-- count set to what was attempted (an entry read but never started does not count a delivery).
-- KEYS[1] topic stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] idle time to set (ms),
-- ARGV[4 ..] pairs of entry id and delivery count to set
-- Returns how many entries were handed back.
local n = 0
for i = 4, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    n = n + 1
  end
end
return n
