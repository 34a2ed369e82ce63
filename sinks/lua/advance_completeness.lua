-- advance_completeness.lua: move the view's completeness watermark forward
-- (the live tile writer moves the view's head watermark with it too).
--
-- KEYS[1]    the view's completeness key, or its head key
-- KEYS[2]    optional, only from an armed sink: the view's epoch key, set to
--            'lost' when absent (the epoch contract in sinks.redis_layout)
-- ARGV[1]    a tile end (epoch ms)
-- Returns 1 if the watermark moved, else 0.
--
-- Atomic so it only ever moves forward: a compare and a set apart would let a
-- slower, older advance set it back.
if KEYS[2] ~= nil and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], 'lost')
end
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
