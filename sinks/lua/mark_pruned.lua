-- mark_pruned.lua: record that an entity's tiles up to a start are gone.
--
-- KEYS[1]    the entity's tile hash
-- ARGV[1]    the start (epoch s) of a tile that is gone
-- Returns nothing.
-- Raises the hash's pruned mark (field 'pruned', sinks.redis_layout.PRUNED_FIELD),
-- never lowers it (see sinks.redis_windows).
--
-- Atomic so the mark only rises, also against a tile write pruning the same
-- hash at the same time.
local mark = tonumber(redis.call('HGET', KEYS[1], 'pruned') or '-1')
if tonumber(ARGV[1]) > mark then
  redis.call('HSET', KEYS[1], 'pruned', ARGV[1])
end
