-- merge_windows.lua: the read-time merge of entities' window values, and the
-- view's completeness watermark.
--
-- KEYS[1]    the view's completeness key
-- KEYS[2..]  the entities' tile hashes
-- ARGV[1]    the window end (epoch s)
-- ARGV[2..]  sinks.redis_windows.layout_args()
-- Returns {completeness or '', {merged value or '' per slot, then the pruned
-- mark or ''} per entity}.
--
-- Atomic so the watermark and every entity's tiles are read at one instant,
-- and merged inside Redis by the same function the writers use: only the
-- merged slots travel, not the tiles.
-- parity:include windows_lib.lua
local c = layout(2)
local end_s = tonum(ARGV[1])
local out = {call('GET', KEYS[1]) or ''}
for k = 2, #KEYS do
  local res, _, pruned = merge(c, call('HGETALL', KEYS[k]), end_s)
  res[#res + 1] = pruned and string.format('%d', pruned) or ''
  out[k] = res
end
return out
