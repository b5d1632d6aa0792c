-- Replace a topic's stored retention in one step, so a producer reading it never sees the
-- old fields mixed with the new ones, or no retention in between.
-- KEYS[1] the topic's retention hash (`<ns>:{<topic>}:retention`)
-- ARGV field, value, field, value, ... (see docs/keys.md)
-- Returns the number of fields written.
redis.call('DEL', KEYS[1])
return redis.call('HSET', KEYS[1], unpack(ARGV))
