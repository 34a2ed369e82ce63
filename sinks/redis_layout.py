"""The Redis key layout of the online store, shared by the sink and the readers.

- ``<prefix>:{<view>:v<version>}:e:<entity>`` is a hash with one field per tile:
  the field is the tile start in epoch seconds, the value is
  ``<events>|<agg1>|<agg2>...`` in the view's aggregation order (an empty
  string for a NULL min/max). Once pruning has deleted tiles of the entity,
  the field ``pruned`` holds the start of the newest deleted tile: reads whose
  windows reach back to it say ``beyond_horizon`` (``sinks.redis_windows``).
- ``<prefix>:{<view>:v<version>}:w:<entity>`` holds the entity's window values,
  precomputed for one window end (see ``sinks.redis_windows``).
- ``<prefix>:{<view>:v<version>}:completeness`` holds the view's completeness
  watermark: epoch milliseconds up to which every tile has been written.
- ``<prefix>:{<view>:v<version>}:due`` is a sorted set of entities, scored by
  the window end (epoch s) at which their precomputed values change next.
- ``<prefix>:{<view>:v<version>}:late_events`` counts source events that
  arrived after their tile had closed, each once (the late-count contract below).
- ``<prefix>:{<view>:v<version>}:late_counted`` is a hash: Kafka partition → the
  highest offset of a late row already in that count.
- ``<prefix>:{<view>:v<version>}:epoch`` says whether this Redis holds the
  view's online horizon completely (the contract below).
- ``<prefix>:{<view>:v<version>}:head`` holds the view's head watermark: the
  newest event time (epoch ms) in a live tile the job has written, only ever
  moved forward. Online reads at now reflect events up to about it.

The braces are a Redis Cluster hash tag: all of a view's keys live in one slot,
so every script and every read's MGET runs on one node, and the scripts may
name keys they were not passed (``refresh_windows.lua``) without leaving it.
A view is therefore served by one master: a cluster spreads views, not one
view's entities (``PARITY_REDIS_MODE=cluster``).

Every script that touches these keys is a file in ``sinks/lua/``, headed by
its KEYS and ARGV, loaded by ``sinks.lua_scripts``: a client in another
language loads the same files.

The epoch: a lost Redis is never served as a partial one.

Redis is a cache of Iceberg's horizon. A FLUSHALL, an eviction of the view's
keys, or a new empty Redis leaves it partial, and nothing in it can tell that
apart from a first run: only a writer that has seen the view's data can.

1. ``epoch`` = ``<epoch ms> <origin>`` means "complete". Only two writers set
   it: the job, when it starts a view with no offline progress (origin
   ``fresh``), and ``parity repair-online`` (``sinks.repair``), last, after it
   has rebuilt the horizon from Iceberg (``repair``). The job runs that same
   repair before it starts when the key is absent or ``lost`` and Iceberg has
   progress, so every sink of a job opens on a complete Redis.
2. A sink that found the key when it opened is *armed*: when its tile or
   completeness script finds the key absent, the script sets it to ``lost``,
   atomically with the write. The write still happens, so the job keeps
   running: its tiles are whole tiles, and repair later only adds the older
   ones. A sink that opened without the key (a test, a bench) marks nothing.
3. Reads fetch the key in the same MGET as the completeness watermark. The
   view's values are defaults with status ``error`` (reason ``store_lost``)
   while it is ``lost``, and while it is absent once the reading process has
   seen it: that covers a flushed Redis before the job's next write too.
   A reader that never saw it asks Iceberg whether the view has committed
   progress (``serving.progress``; ``parity serve`` does, unless
   ``PARITY_SERVING_OFFLINE_CHECK=false``): if so, absent means lost.
4. Repair takes ``lost`` back to complete; re-running it changes nothing.

Not detected: keys evicted one by one while the epoch stays (run Redis with
``maxmemory-policy noeviction``); a lost Redis read, before the job's next
write, by a reader without the Iceberg check; a Redis replaced under a running
job whose sinks Flink reopens before any write (they open unarmed, so nothing
marks it until a reader with the check, or the job's next start, sees it).
Restart the job after replacing Redis: its start repairs it.

The late count: each late row once, across restarts and retried writes.

A job restored from a checkpoint reads again the rows after it, and a write
retried after a timeout may already have been applied, so an increment alone
would count rows twice. Instead:

1. Each late row carries its Kafka partition and offset. One script
   (``sinks/lua/count_late.lua``) adds the rows whose
   offset is above their partition's mark in ``late_counted`` and moves the
   mark up, atomically with the total.
2. It relies on the rows of one partition reaching it in offset order. They
   do: a Kafka partition is read by one source subtask, and the source, the
   late filter and the Python function run at the same parallelism, joined by
   forward edges (no shuffle). A plan that put an exchange between them (a
   source parallelism of its own, such as ``scan.parallelism``) would break
   it, and rows would be missed, never counted twice.
3. The marks belong to the view's topic: a view version pointed at another
   topic (``--topic``) needs its own key prefix, or the old marks hide the new
   topic's first rows. Deleting both keys starts the count again from zero.

Exact means every row the job found late is in the total once. Lateness is
decided as a row is read; a row read again after a restore is counted at most
once whichever way it is decided then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from features.definition import FeatureView
from sinks.base import TileRow, Value


def view_head(prefix: str, view: FeatureView) -> str:
    """``<prefix>:{<view>:v<version>}``: the start of every key of the view.

    The braces are a Redis Cluster hash tag: every key of a view hashes to one
    slot, so each script and each read's MGET touches one node.
    """
    return f"{prefix}:{{{view.name}:v{view.version}}}"


def view_pattern(prefix: str, view: FeatureView) -> str:
    """A SCAN pattern for every key of the view; braces are plain characters to SCAN."""
    return f"{view_head(prefix, view)}:*"


def entity_key(prefix: str, view: FeatureView, entity: str) -> str:
    return f"{view_head(prefix, view)}:e:{entity}"


def completeness_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:completeness"


def window_key(prefix: str, view: FeatureView, entity: str) -> str:
    return f"{view_head(prefix, view)}:w:{entity}"


def due_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:due"


def late_events_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:late_events"


def late_counted_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:late_counted"


def epoch_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:epoch"


def head_key(prefix: str, view: FeatureView) -> str:
    return f"{view_head(prefix, view)}:head"


# The epoch key's value once an armed sink found it gone.
EPOCH_LOST = "lost"

# The tile hash field holding the start (epoch s) of the newest tile pruning deleted.
PRUNED_FIELD = "pruned"
_NOT_TILES = (PRUNED_FIELD, PRUNED_FIELD.encode())


def encode_tile(row: TileRow) -> tuple[str, str]:
    """(field, value) of one tile."""
    parts = [str(row.events)] + ["" if v is None else repr(v) for v in row.values]
    return str(row.tile_start_ms // 1000), "|".join(parts)


def decode_tile(
    view: FeatureView, field: str | bytes, value: str | bytes
) -> tuple[int, int, tuple[Value, ...]]:
    """(tile_start_ms, events, values) of one stored tile."""
    text = value.decode() if isinstance(value, bytes) else value
    start = int(field) * 1000
    events, *raw = text.split("|")
    values: list[Value] = []
    for agg, item in zip(view.aggregations, raw, strict=True):
        if item == "":
            values.append(None)
        elif agg.is_integer:
            values.append(int(item))
        else:
            values.append(float(item))
    return start, int(events), tuple(values)


def decode_tiles(view: FeatureView, stored: Mapping[Any, Any]) -> list[tuple[int, int, Sequence[Value]]]:
    """The tiles of an HGETALL reply, sorted by start; the ``pruned`` field is not a tile."""
    return sorted(decode_tile(view, f, v) for f, v in stored.items() if f not in _NOT_TILES)
