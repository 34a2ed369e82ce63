-- count_late.lua: add late rows to the view's late-event total, each once.
--
-- KEYS[1]    the view's late-event total
-- KEYS[2]    the hash Kafka partition -> highest offset counted
-- ARGV[1..]  partition, offset pairs of late rows, each partition's in offset order
-- Returns the total.
--
-- Atomic because the marks move in one step with the total: a retried call or
-- rows read again after a restore find the marks already past them (the
-- late-count contract in sinks.redis_layout).
local marks, added = {}, 0
for i = 1, #ARGV, 2 do
  local partition, offset = ARGV[i], tonumber(ARGV[i + 1])
  local mark = marks[partition]
  if mark == nil then
    local stored = redis.call('HGET', KEYS[2], partition)
    mark = {tonumber(stored or '-1'), false}
    marks[partition] = mark
  end
  if offset > mark[1] then
    added = added + 1
    -- keep the offset's own text: Lua would print a large number in exponent form
    mark[1], mark[2] = offset, ARGV[i + 1]
  end
end
for partition, mark in pairs(marks) do
  if mark[2] then redis.call('HSET', KEYS[2], partition, mark[2]) end
end
return redis.call('INCRBY', KEYS[1], added)
