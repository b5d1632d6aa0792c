-- Ends a mover's lease on a topic of the due index: removes the topic if its score is still
-- the lease (a producer indexing it meanwhile lowered the score, and it stays). The mover
-- then looks at the topic's earliest message and indexes it at that time.
-- KEYS[1] due index
-- ARGV[1] topic, ARGV[2] lease score
-- Returns 1 when removed, 0 otherwise.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
