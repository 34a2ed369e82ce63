-- set_tiles.lua: set one entity's tiles, prune its old ones, and recompute its
-- window values.
--
-- KEYS[1]    the entity's tile hash
-- KEYS[2]    the entity's window key
-- KEYS[3]    the view's due set
-- KEYS[4]    optional, only from an armed sink: the view's epoch key, set to
--            'lost' when absent (the epoch contract in sinks.redis_layout)
-- ARGV[1]    prune tiles starting before this (epoch s)
-- ARGV[2]    recompute the window values for this end (epoch s), or '' to
--            mark them out of date
-- ARGV[3]    the entity
-- ARGV[4..]  sinks.redis_windows.layout_args(), then field, value pairs of
--            tiles (a value starts with its event count: the tile's version)
-- Deleted tiles raise the hash's pruned mark (see sinks.redis_windows).
-- Returns the number of tiles applied.
--
-- Atomic because a tile is set only if it is not older than the stored one:
-- a check and a write apart would let a retried older write land between
-- them. The window values are computed from exactly the tiles just written,
-- and a write never lands on a lost Redis without marking it lost.
-- parity:include windows_lib.lua
local c = layout(4)
if KEYS[4] ~= nil and call('EXISTS', KEYS[4]) == 0 then
  call('SET', KEYS[4], 'lost')
end
local applied = 0
for i = c.after, #ARGV, 2 do
  local version = tonum(string.match(ARGV[i + 1], '^[^|]*'))
  local current = call('HGET', KEYS[1], ARGV[i])
  if current == false or tonum(string.match(current, '^[^|]*')) <= version then
    call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    applied = applied + 1
  end
end
local prune_before = tonum(ARGV[1])
local newest_pruned = nil
for _, field in ipairs(call('HKEYS', KEYS[1])) do
  local start = tonum(field)
  if start ~= nil and start < prune_before then
    call('HDEL', KEYS[1], field)
    if newest_pruned == nil or start > newest_pruned then newest_pruned = start end
  end
end
if newest_pruned ~= nil then
  local mark = tonum(call('HGET', KEYS[1], PRUNED))
  if mark == nil or newest_pruned > mark then
    call('HSET', KEYS[1], PRUNED, string.format('%d', newest_pruned))
  end
end
store(c, KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[2])
return applied
