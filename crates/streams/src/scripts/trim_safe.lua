-- Safe retention: trim a stream to a length or minimum id, but never past the oldest entry
-- some consumer group has not yet delivered or acknowledged.
-- KEYS[1] topic stream
-- ARGV[1] 'maxlen' or 'minid', ARGV[2] the length or the minimum id to keep
-- Returns the number of entries removed.

-- Stream ids are '<ms>-<seq>' with up to 20 digits each: compare as numbers without
-- converting to Lua doubles, which lose precision past 2^53.
local function num_less(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end
local function id_less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if ams ~= bms then
    return num_less(ams, bms)
  end
  return num_less(aseq, bseq)
end
local function min_id(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if id_less(a, b) then return a end
  return b
end

-- The floor: nothing at or above it may go.
local floor = nil
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then
      name = g[i + 1]
    elseif g[i] == 'pending' then
      pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then
      last = g[i + 1]
    end
  end
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], name)
    floor = min_id(floor, summary[2])
  else
    -- Keeping the last delivered entry too is one entry of slack, and needs no id arithmetic.
    floor = min_id(floor, last)
  end
end

local cutoff
if ARGV[1] == 'maxlen' then
  local maxlen = tonumber(ARGV[2])
  local len = redis.call('XLEN', KEYS[1])
  if len <= maxlen then
    return 0
  end
  if maxlen == 0 then
    if floor == nil then
      return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
    end
    cutoff = floor
  else
    -- The first entry a plain MAXLEN would keep, read from the cheaper end.
    local excess = len - maxlen
    local first_kept
    if excess <= maxlen then
      local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess + 1)
      first_kept = r[#r][1]
    else
      local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', maxlen)
      first_kept = r[#r][1]
    end
    cutoff = min_id(first_kept, floor)
  end
else
  cutoff = min_id(ARGV[2], floor)
end
return redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
