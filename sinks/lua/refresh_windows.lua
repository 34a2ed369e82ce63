-- refresh_windows.lua: recompute the window values of the entities that come
-- due, taken from the view's due set.
--
-- KEYS[1]    the view's due set
-- ARGV[1]    the window end (epoch s) to recompute for
-- ARGV[2]    take the entities whose values are covered up to this end or less
-- ARGV[3]    at most this many
-- ARGV[4]    the tile key head: <prefix>:{<view>:v<N>}:e:
-- ARGV[5]    the window key head: <prefix>:{<view>:v<N>}:w:
-- ARGV[6..]  sinks.redis_windows.layout_args()
-- Returns how many entities it took from the due set.
-- It names keys it was not passed; on Redis Cluster they share the due set's
-- hash tag (sinks.redis_layout), so they live in its slot, on its node.
--
-- Atomic so values computed from an entity's tiles cannot overwrite those of a
-- tile write that came in between, and the due set stays in step with them.
-- parity:include windows_lib.lua
local c = layout(6)
local due = call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonum(ARGV[3]))
for _, member in ipairs(due) do
  local key = ARGV[4] .. member
  if call('EXISTS', key) == 1 then
    store(c, key, ARGV[5] .. member, KEYS[1], member, ARGV[1])
  else
    call('ZREM', KEYS[1], member)
  end
end
return #due
