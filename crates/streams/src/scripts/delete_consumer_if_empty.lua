-- Remove one consumer from its group, only if its PEL is empty (checked atomically).
-- KEYS[1] topic stream
-- ARGV[1] group, ARGV[2] consumer
-- Returns 1 when deleted, 0 when it still holds entries.
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if held[1] then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
