-- merge_windows.lua: the read-time merge of entities' window values, and the
-- view's completeness watermark.
--
-- KEYS[1]    the view's completeness key
-- KEYS[2..]  the entities' tile hashes
-- ARGV[1]    the window end (epoch s)
-- ARGV[2..]  sinks.redis_windows.layout_args()
-- Returns {completeness or '', {merged value or '' per slot, then the pruned
-- mark or '', then the tile starting at the window end (the head of a read at
-- a time inside that tile) or ''} per entity}.
--
-- Atomic so the watermark and every entity's tiles are read at one instant,
-- and merged inside Redis by the same function the writers use: only the
-- merged slots travel, not the tiles.
-- parity:include windows_lib.lua
local c = layout(2)
local end_s = tonum(ARGV[1])
local out = {call('GET', KEYS[1]) or ''}
local head_field = string.format('%d', end_s)
for k = 2, #KEYS do
  local flat = call('HGETALL', KEYS[k])
  local res, _, pruned = merge(c, flat, end_s)
  res[#res + 1] = pruned and string.format('%d', pruned) or ''
  local head = ''
  for i = 1, #flat, 2 do
    if flat[i] == head_field then head = flat[i + 1] end
  end
  res[#res + 1] = head
  out[k] = res
end
return out
