-- Give up a partition lease (`consumer/partitions.rs`), only while it is still the caller's.
-- KEYS[1] the lease; ARGV[1] the caller's fencing token. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
