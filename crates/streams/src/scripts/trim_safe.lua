-- Safe retention: trim a stream to a length or minimum id, but never past the oldest entry
-- some consumer group has not yet delivered or acknowledged.
-- KEYS[1] topic stream
-- ARGV[1] 'maxlen' or 'minid', ARGV[2] the length or the minimum id to keep
-- Returns {removed, length after, and when a group held entries back: its name, 'pending' or
-- 'undelivered', and the id of the first entry it held}.

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
-- The floor: nothing at or above it may go. `holder` is the group that set it, and why.
local floor, holder, reason = nil, nil, nil
local function hold(id, group, why)
  if id ~= nil and (floor == nil or id_less(id, floor)) then
    floor, holder, reason = id, group, why
  end
end
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
    hold(redis.call('XPENDING', KEYS[1], name)[2], name, 'pending')
  end
  -- The first entry the group has not read yet (none: it read everything).
  local next_entry = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)[1]
  if next_entry then
    hold(next_entry[1], name, 'undelivered')
  end
end

local function done(removed)
  local len = redis.call('XLEN', KEYS[1])
  if holder == nil then
    return {removed, len}
  end
  return {removed, len, holder, reason, floor}
end

local cutoff
if ARGV[1] == 'maxlen' then
  local maxlen = tonumber(ARGV[2])
  local len = redis.call('XLEN', KEYS[1])
  if len <= maxlen then
    holder = nil
    return done(0)
  end
  if maxlen == 0 then
    if floor == nil then
      return done(redis.call('XTRIM', KEYS[1], 'MAXLEN', 0))
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
    if floor == nil or not id_less(floor, first_kept) then
      holder = nil
      cutoff = first_kept
    else
      cutoff = floor
    end
  end
else
  if floor == nil or not id_less(floor, ARGV[2]) then
    holder = nil
    cutoff = ARGV[2]
  else
    cutoff = floor
  end
end
return done(redis.call('XTRIM', KEYS[1], 'MINID', cutoff))
