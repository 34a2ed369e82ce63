"""Window values in Redis: the one Lua merge, run at write time by the sink and at read time as fallback.

Next to its tile hash, each entity has a string key
``<prefix>:{<view>:v<version>}:w:<entity>`` holding the view's window aggregates
merged for two consecutive ranges of window ends, so an online read of many
entities is one MGET:

    <from>|<until>|<slot 1>|...|<slot n>[|<until 2>|<slot 1>|...|<slot n>][#<start>=<tile>...]

- ``from``: the window end (epoch s) the first values were merged for;
- ``until``: the first later end at which any of them changes, given the
  entity's tiles (a tile entering or leaving a window); ``0`` while the values
  are out of date and wait for a refresh;
- a slot per aggregation and window, window-major (``slot_names``), as the
  merge returns it: ``''`` when no tile is in the window;
- then, unless nothing changes after ``from``, the values for the ends from
  ``until`` up to ``until 2``;
- then the entity's open tiles, those starting at or after ``from``, each as
  ``#<start>=<tile value>`` (the tile hash's field and value). A read at now,
  at a time t in the tile starting at E, adds the one starting at E, the head
  of its window ``[E - W, t)``; live tiles keep it current (``jobs.redis_sink``).

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

``<prefix>:{<view>:v<version>}:due`` is a sorted set of entities by the end of
what their stored values cover: the event-time timers of the design. When the
view's completeness watermark advances, the sink recomputes the entities whose
coverage ends within the next tile period.

The scripts live in ``sinks/lua/`` (loaded by ``sinks.lua_scripts``):
``set_tiles.lua`` writes tiles and recomputes the entity's values,
``refresh_windows.lua`` recomputes the due entities, ``merge_windows.lua``
merges at read time. All three include the merge of ``windows_lib.lua``; this
module gives them the view's layout. An ``until`` of 253402300800 (year 10000)
means no change ahead.
"""

from __future__ import annotations

from features.definition import AggKind, FeatureView, duration_label

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
