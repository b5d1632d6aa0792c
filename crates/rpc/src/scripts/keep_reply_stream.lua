-- Keep a client's reply stream: create it, empty, if it is missing (new client, or a Redis
-- restart without persistence lost it), and give it its expiry. Servers write replies with
-- NOMKSTREAM, so only this script creates a reply stream, and never without an expiry.
-- KEYS[1] reply stream
-- ARGV[1] expiry (ms)
-- Returns 1 when the stream had to be created.
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '0', '*', 'created', '1')
  created = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return created
