-- Acknowledge entries of a partition, only while the caller holds its lease: a consumer
-- that lost the partition (its lease ran out while it was cut off or frozen) cannot settle
-- what the new owner now handles (`consumer/partitions.rs`).
-- KEYS[1] the partition's stream, KEYS[2] the group's lease on it (same hash tag).
-- ARGV[1] the caller's fencing token, ARGV[2] group, ARGV[3 ..] entry ids.
-- Returns the number acknowledged, or -1 when the lease is not the caller's.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
return redis.call('XACK', KEYS[1], ARGV[2], unpack(ARGV, 3))
