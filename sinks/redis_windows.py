"""Window values in Redis: the one Lua merge, run at write time by the sink and at read time as fallback.

Next to its tile hash, each entity has a string key
``<prefix>:<view>:v<version>:w:<entity>`` holding the view's window aggregates
merged for two consecutive ranges of window ends, so an online read of many
entities is one MGET:

    <from>|<until>|<slot 1>|...|<slot n>[|<until 2>|<slot 1>|...|<slot n>]

- ``from``: the window end (epoch s) the first values were merged for;
- ``until``: the first later end at which any of them changes, given the
  entity's tiles (a tile entering or leaving a window); ``0`` while the values
  are out of date and wait for a refresh;
- a slot per aggregation and window, window-major (``slot_names``), as the
  merge returns it: ``''`` when no tile is in the window;
- then, unless nothing changes after ``from``, the values for the ends from
  ``until`` up to ``until 2``.

For every window end E in one of the two ranges the stored values are exactly
what the merge returns for E over the entity's tiles: no tile enters or leaves
a window inside a range, and every tile write recomputes them in the same
script that sets the tile. Any other E (a past ``as_of``, or values that
decayed before a refresh) is merged from the tiles at read time, by the same
Lua function. An entity without the key has no tiles: the script that writes
a tile always sets it.

Why two ranges: the job refreshes values when its completeness watermark
advances, which is a tile period plus the allowed lateness behind the clock.
Values that change at the next tile boundary are read from the second range
until then, instead of being merged at read time.

Pruning and the horizon: a tile write deletes the entity's tiles that start
before its newest tile end minus (longest window + prune margin), and keeps
in the tile hash field ``pruned`` the start of the newest tile it ever
deleted. A window end E whose longest window starts at or before that tile,
``E - longest <= pruned``, may be missing deleted tiles: the read merge
returns the field so the reader answers ``beyond_horizon`` instead of an
undercount. Stored values never cover such an end: ``store`` marks them out of
date instead (only reachable with tiles far ahead of the sink's clock), so
the reader sees every such end through the merge.

A string, not fields in the tile hash: Redis finds a field of a small hash by
scanning it, and a tile hash holds up to a few hundred tiles.

``<prefix>:<view>:v<version>:due`` is a sorted set of entities by the end of
what their stored values cover: the event-time timers of the design. When the
view's completeness watermark advances, the sink recomputes the entities whose
coverage ends within the next tile period.
"""

from __future__ import annotations

from features.definition import AggKind, FeatureView, duration_label
from sinks.redis_layout import EPOCH_LOST, PRUNED_FIELD

# "No change ahead" (year 10000): no tile left to enter or leave a window.
NEVER_S = 253_402_300_800

_KIND_CODES = {AggKind.COUNT: "c", AggKind.SUM: "s", AggKind.MIN: "n", AggKind.MAX: "x"}


def slot_names(view: FeatureView) -> tuple[str, ...]:
    """Window aggregates in the merge's order: window-major, aggregation-minor."""
    return tuple(f"{a.name}_{duration_label(w)}" for w in view.windows for a in view.aggregations)


def layout_args(view: FeatureView) -> tuple[str | int, ...]:
    """The view's window layout as the scripts' ``layout()`` reads it from ARGV."""
    kinds = [_KIND_CODES[a.kind] for a in view.aggregations]
    # Float sums depend on the order of addition; assemble adds in start order.
    ordered = any(a.kind is AggKind.SUM for a in view.aggregations)
    return (
        view.tile_ms // 1000,
        len(view.windows),
        *(int(w.total_seconds()) for w in view.windows),
        len(kinds),
        *kinds,
        "1" if ordered else "0",
    )


# Shared by every script below. `layout(p)` reads layout_args() from ARGV[p..].
# `merge(c, flat, end_s)` merges one entity's tiles (an HGETALL reply; fields
# that are not numbers are skipped) for windows ending at end_s, selecting
# tiles exactly as assembly.window_values does (start >= end - W and
# start + tile <= end, in start order), and returns the merged value per slot
# ('' when no tile), the first later end at which any slot changes, and the
# entity's pruned mark (the start of the newest tile pruning deleted, or nil).
_LIB = """
local find, sub, tonum, call = string.find, string.sub, tonumber, redis.call
local NEVER = @NEVER@
local PRUNED = '@PRUNED@'

local function layout(p)
  local c = {tile = tonum(ARGV[p]), nw = tonum(ARGV[p + 1]), sizes = {}, kinds = {}}
  c.longest = 0
  for w = 1, c.nw do
    c.sizes[w] = tonum(ARGV[p + 1 + w])
    if c.sizes[w] > c.longest then c.longest = c.sizes[w] end
  end
  c.na = tonum(ARGV[p + 2 + c.nw])
  for j = 1, c.na do c.kinds[j] = ARGV[p + 2 + c.nw + j] end
  c.ordered = ARGV[p + 3 + c.nw + c.na] == '1'
  c.after = p + 4 + c.nw + c.na
  return c
end

local function merge(c, flat, end_s)
  local lows, lo, hi = {}, end_s, end_s - c.tile
  for w = 1, c.nw do
    lows[w] = end_s - c.sizes[w]
    if lows[w] < lo then lo = lows[w] end
  end
  local changes = NEVER
  local starts, rows, n, pruned = {}, {}, 0, nil
  for i = 1, #flat, 2 do
    local s = tonum(flat[i])
    if s == nil then
      if flat[i] == PRUNED then pruned = tonum(flat[i + 1]) end
    else
      if s > hi then
        -- not yet complete at end_s: enters every window at s + tile
        if s + c.tile < changes then changes = s + c.tile end
      elseif s >= lo then
        n = n + 1
        starts[n] = s
        rows[n] = flat[i + 1]
        for w = 1, c.nw do
          local leaves = s + c.sizes[w] + c.tile
          if s >= lows[w] and leaves < changes then changes = leaves end
        end
      end
    end
  end
  local order = nil
  if c.ordered and n > 1 then
    order = {}
    for i = 1, n do order[i] = i end
    table.sort(order, function(a, b) return starts[a] < starts[b] end)
  end
  local na, kinds, acc, vals = c.na, c.kinds, {}, {}
  for oi = 1, n do
    local i = oi
    if order then i = order[oi] end
    local s, row = starts[i], rows[i]
    local pos = find(row, '|', 1, true)
    for j = 1, na do
      local nxt = find(row, '|', pos + 1, true)
      vals[j] = tonum(sub(row, pos + 1, (nxt or 0) - 1))
      pos = nxt
    end
    for w = 1, c.nw do
      if s >= lows[w] then
        local base = (w - 1) * na
        for a = 1, na do
          local v = vals[a]
          if v ~= nil then
            local slot = base + a
            local cur = acc[slot]
            if cur == nil then
              acc[slot] = v
            else
              local kind = kinds[a]
              if kind == 'n' then
                if v < cur then acc[slot] = v end
              elseif kind == 'x' then
                if v > cur then acc[slot] = v end
              else
                acc[slot] = cur + v
              end
            end
          end
        end
      end
    end
  end
  local res = {}
  for slot = 1, c.nw * na do
    local v = acc[slot]
    if v == nil then
      res[slot] = ''
    elseif kinds[(slot - 1) % na + 1] == 'c' then
      res[slot] = string.format('%d', v)
    else
      res[slot] = string.format('%.17g', v)
    end
  end
  return res, changes, pruned
end

-- Recompute the window values of one entity (tile hash `key`, window key
-- `wkey`) for end `at` (epoch s, a string) and for the next end at which they
-- change, or mark them out of date when `at` is ''. Files the entity in the due
-- set under the end of what the two cover.
local function store(c, key, wkey, due, member, at)
  if at == '' then
    call('SET', wkey, '0|0')
    call('ZADD', due, 0, member)
    return
  end
  local flat = call('HGETALL', key)
  local res, changes, pruned = merge(c, flat, tonum(at))
  if pruned ~= nil and tonum(at) - c.longest <= pruned then
    -- Values at `at` may lack pruned tiles: leave such ends to the read merge, which
    -- says so, and come due at the first end whose windows start after the mark
    -- (never within the refresh that runs this, which would take it again and again).
    call('SET', wkey, '0|0')
    call('ZADD', due, string.format('%d', pruned + c.longest + 2 * c.tile), member)
    return
  end
  local value = at .. '|' .. string.format('%d', changes) .. '|' .. table.concat(res, '|')
  local covered = changes
  if changes ~= NEVER then
    local later
    res, later = merge(c, flat, changes)
    value = value .. '|' .. string.format('%d', later) .. '|' .. table.concat(res, '|')
    covered = later
  end
  call('SET', wkey, value)
  if covered == NEVER then
    call('ZREM', due, member)
  else
    call('ZADD', due, covered, member)
  end
end
""".replace("@NEVER@", str(NEVER_S)).replace("@PRUNED@", PRUNED_FIELD)

# KEYS[1]: completeness key; KEYS[2..]: entity hashes.
# ARGV[1]: window end (epoch s); ARGV[2..]: layout_args().
# Returns {completeness or '', {merged value or '' per slot, then the pruned mark or ''}
# per entity}.
MERGE_SCRIPT = (
    _LIB
    + """
local c = layout(2)
local end_s = tonum(ARGV[1])
local out = {call('GET', KEYS[1]) or ''}
for k = 2, #KEYS do
  local res, _, pruned = merge(c, call('HGETALL', KEYS[k]), end_s)
  res[#res + 1] = pruned and string.format('%d', pruned) or ''
  out[k] = res
end
return out
"""
)

# KEYS[1]: the entity's tile hash; KEYS[2]: its window key; KEYS[3]: the view's due set;
# KEYS[4], only from an armed sink: the view's epoch key, set to 'lost' when absent
# (see sinks.redis_layout). ARGV[1]: prune tiles starting before this (epoch s); ARGV[2]: recompute the
# window values for this end (epoch s), or '' to mark them out of date;
# ARGV[3]: the entity; ARGV[4..]: layout_args(), then field, value pairs of
# tiles (a value starts with its event count: the tile's version).
# Deleted tiles raise the hash's pruned mark (see the module docstring).
# Returns the number of tiles applied.
SET_TILES_SCRIPT = (
    _LIB
    + """
local c = layout(4)
if KEYS[4] ~= nil and call('EXISTS', KEYS[4]) == 0 then
  call('SET', KEYS[4], '@LOST@')
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
"""
).replace("@LOST@", EPOCH_LOST)

# KEYS[1]: the view's due set. ARGV[1]: window end (epoch s); ARGV[2]: take the
# entities whose values are covered up to this end or less; ARGV[3]: at most this
# many; ARGV[4], ARGV[5]: the tile and window key heads (<prefix>:<view>:v<N>:e:
# and :w:); ARGV[6..]: layout_args(). Recomputes them for ARGV[1] and returns how
# many it took from the due set. It names keys it was not passed, so it needs a
# single Redis, not Redis Cluster.
REFRESH_SCRIPT = (
    _LIB
    + """
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
"""
)

# KEYS[1]: the view's late-event total; KEYS[2]: the hash Kafka partition -> highest
# offset counted. ARGV: partition, offset pairs of late rows, each partition's in
# offset order. Adds the rows above their partition's mark and moves the marks, in
# one step with the total (the contract in sinks.redis_layout). Returns the total.
COUNT_LATE_SCRIPT = """
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
"""
