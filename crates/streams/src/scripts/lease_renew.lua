-- Renew a partition lease (`consumer/partitions.rs`): only while it is still the caller's.
-- KEYS[1] the lease; ARGV[1] the caller's fencing token, ARGV[2] lease time (ms).
-- Returns 1 when renewed, 0 when the lease is gone or another consumer's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
