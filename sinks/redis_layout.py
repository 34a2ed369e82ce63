"""The Redis key layout of the online store, shared by the sink and the readers.

- ``<prefix>:<view>:v<version>:e:<entity>`` is a hash with one field per tile:
  the field is the tile start in epoch seconds, the value is
  ``<events>|<agg1>|<agg2>...`` in the view's aggregation order (an empty
  string for a NULL min/max).
- ``<prefix>:<view>:v<version>:w:<entity>`` holds the entity's window values,
  precomputed for one window end (see ``sinks.redis_windows``).
- ``<prefix>:<view>:v<version>:completeness`` holds the view's completeness
  watermark: epoch milliseconds up to which every tile has been written.
- ``<prefix>:<view>:v<version>:due`` is a sorted set of entities, scored by
  the window end (epoch s) at which their precomputed values change next.
- ``<prefix>:<view>:v<version>:late_events`` counts source events that
  arrived after their tile had closed (at-least-once: a restart may recount).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from features.definition import FeatureView
from sinks.base import TileRow, Value


def entity_key(prefix: str, view: FeatureView, entity: str) -> str:
    return f"{prefix}:{view.name}:v{view.version}:e:{entity}"


def completeness_key(prefix: str, view: FeatureView) -> str:
    return f"{prefix}:{view.name}:v{view.version}:completeness"


def window_key(prefix: str, view: FeatureView, entity: str) -> str:
    return f"{prefix}:{view.name}:v{view.version}:w:{entity}"


def due_key(prefix: str, view: FeatureView) -> str:
    return f"{prefix}:{view.name}:v{view.version}:due"


def late_events_key(prefix: str, view: FeatureView) -> str:
    return f"{prefix}:{view.name}:v{view.version}:late_events"


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
    return sorted(decode_tile(view, f, v) for f, v in stored.items())
