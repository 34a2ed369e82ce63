"""The one assembly function: an entity's tiles → window feature values as of a time t.

Online reads (Redis) and offline point-in-time reads (Iceberg) both call
``assemble``; it is the reference definition of every window value.

Semantics (contract 3 of the design):
- ``end`` is t rounded down to a tile boundary;
- a window of size W merges the tiles with ``tile_start >= end - W`` and
  ``tile_start + tile <= end``: exactly a sliding window ending at ``end``;
- no tile in the window → the view's default, status ``missing``;
- the view's completeness watermark older than ``t - max_staleness`` →
  status ``stale``, and the view's ``on_stale`` policy says whether the value
  or the default is served.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from features.definition import AggKind, FeatureView, OnStale, duration_label
from sinks.base import Value

_MS = timedelta(milliseconds=1)


class Status(Enum):
    PRESENT = "present"
    MISSING = "missing"  # no data for the window: the default is served
    STALE = "stale"  # the view's tiles are older than its max staleness
    ERROR = "error"  # the store could not be read: the default is served


@dataclass(frozen=True)
class Tile:
    """One stored tile of one entity: start (epoch ms), event count, aggregate values."""

    start_ms: int
    events: int
    values: Sequence[Value]


@dataclass(frozen=True)
class FeatureValue:
    value: float | int
    status: Status
    window_end: datetime


def to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: parity times are timezone-aware UTC")
    return int(t.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def window_end_ms(view: FeatureView, as_of_ms: int) -> int:
    return as_of_ms - as_of_ms % view.tile_ms


def _merge(kind: AggKind, values: list[Value]) -> Value:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if kind in (AggKind.COUNT, AggKind.SUM):
        return sum(present)
    if kind is AggKind.MIN:
        return min(present)
    return max(present)


def assemble(
    view: FeatureView,
    tiles: Sequence[Tile],
    as_of: datetime,
    completeness_ms: int | None,
) -> dict[str, FeatureValue]:
    """Every feature of the view for one entity as of ``as_of``.

    Args:
        view: the feature view.
        tiles: the entity's tiles sorted by start; any extra tiles (outside
            the windows, or after ``as_of``) are ignored, never used.
        as_of: the time the values describe (timezone-aware).
        completeness_ms: the view's completeness watermark (epoch ms), or
            None when the view has never written a tile.
    """
    end = window_end_ms(view, to_ms(as_of))
    end_dt = from_ms(end)
    as_of_ms = to_ms(as_of)
    stale = completeness_ms is not None and completeness_ms < as_of_ms - view.max_staleness / _MS
    starts = [t.start_ms for t in tiles]
    upper = bisect_left(starts, end - view.tile_ms + 1)  # tiles with start + tile <= end

    raw: dict[str, Value] = {}
    for window in view.windows:
        lower = bisect_left(starts, end - int(window / _MS))
        in_window = tiles[lower:upper]
        for index, agg in enumerate(view.aggregations):
            name = f"{agg.name}_{duration_label(window)}"
            raw[name] = _merge(agg.kind, [t.values[index] for t in in_window]) if in_window else None

    result: dict[str, FeatureValue] = {}
    for name, merged in raw.items():
        result[name] = _finish(view, name, merged, stale, end_dt)
    for ratio in view.derived:
        num, den = raw[ratio.numerator], raw[ratio.denominator]
        value: Value = None
        if num is not None and den is not None:
            value = ratio.on_zero if den == 0 else num / den
        result[ratio.name] = _finish(view, ratio.name, value, stale, end_dt)
    return result


def _finish(view: FeatureView, name: str, value: Value, stale: bool, end: datetime) -> FeatureValue:
    default = view.defaults[name]
    if value is None:
        return FeatureValue(default, Status.STALE if stale else Status.MISSING, end)
    if stale:
        served = value if view.on_stale is OnStale.SERVE else default
        return FeatureValue(served, Status.STALE, end)
    return FeatureValue(value, Status.PRESENT, end)
