-- windows_lib.lua: the window merge shared by merge_windows, set_tiles and
-- refresh_windows, which include it (the include rule is in sinks/lua_scripts.py).
-- Not a script of its own: it defines local functions and reads no KEYS.
--
-- layout(p) reads sinks.redis_windows.layout_args() from ARGV[p..]: the tile
-- size (s), the window count and sizes (s), the aggregation count and kinds
-- (c count, s sum, n min, x max), and '1' when sums must be added in start
-- order. c.after is the ARGV index just past it.
--
-- merge(c, flat, end_s) merges one entity's tiles (an HGETALL reply; fields
-- that are not numbers are skipped) for windows ending at end_s, selecting
-- tiles exactly as serving.assembly.window_values does (start >= end - W and
-- start + tile <= end, in start order), and returns the merged value per slot
-- ('' when no tile), the first later end at which any slot changes, and the
-- entity's pruned mark (the start of the newest tile pruning deleted, or nil).
--
-- NEVER is "no change ahead" (year 10000, epoch s): no tile left to enter or
-- leave a window. PRUNED is sinks.redis_layout.PRUNED_FIELD.
local find, sub, tonum, call = string.find, string.sub, tonumber, redis.call
local NEVER = 253402300800
local PRUNED = 'pruned'

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

-- The tiles of an HGETALL reply that start at or after `from_s`: the open
-- tiles of window ends from `from_s` on, as '#<start>=<tile>' each.
local function open_tiles(flat, from_s)
  local out = ''
  for i = 1, #flat, 2 do
    local s = tonum(flat[i])
    if s ~= nil and s >= from_s then
      out = out .. '#' .. flat[i] .. '=' .. flat[i + 1]
    end
  end
  return out
end

-- Recompute the window values of one entity (tile hash `key`, window key
-- `wkey`) for end `at` (epoch s, a string) and for the next end at which they
-- change, or mark them out of date when `at` is ''. Files the entity in the due
-- set under the end of what the two cover. The open tiles follow the values:
-- a read at t adds the one that starts at its end, the head of [end - W, t).
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
  call('SET', wkey, value .. open_tiles(flat, tonum(at)))
  if covered == NEVER then
    call('ZREM', due, member)
  else
    call('ZADD', due, covered, member)
  end
end
