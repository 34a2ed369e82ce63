"""The one assembly function: an entity's tiles → window feature values as of a time t.

Online reads (Redis) and offline point-in-time reads (Iceberg) both call
``assemble``; it is the reference definition of every window value.

Semantics (contract 3 of the design):
- ``end`` is t rounded down to a tile boundary;
- a window of size W merges the tiles with ``tile_start >= end - W`` and
  ``tile_start + tile <= end``: exactly a sliding window ending at ``end``;
- an online read at now also merges the head, the open tile up to t
  (``add_head``): its window is ``[end - W, t)``, and its values' window end
  is t;
- no tile in the window → the view's default, status ``missing``;
- the view's completeness watermark older than ``t - max_staleness`` →
  status ``stale``, and the view's ``on_stale`` policy says whether the value
  or the default is served.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import NamedTuple

from features.definition import AggKind, FeatureView, OnStale, duration_label
from sinks.base import Value

_MS = timedelta(milliseconds=1)


class Status(Enum):
    PRESENT = "present"
    MISSING = "missing"  # no data for the window: the default is served
    STALE = "stale"  # the view's tiles are older than its max staleness
    ERROR = "error"  # the store could not be read: the default is served
    # Online only: the window reaches before the tiles Redis still holds for the entity (pruned
    # there, kept in Iceberg). The default is served; read offline (`parity features --offline`,
    # `get_historical_features`) for the value. ``assemble`` never returns it.
    BEYOND_HORIZON = "beyond_horizon"


@dataclass(frozen=True)
class Tile:
    """One stored tile of one entity: start (epoch ms), event count, aggregate values."""

    start_ms: int
    events: int
    values: Sequence[Value]


class FeatureValue(NamedTuple):
    """One served value: the value, its status and the window end it describes.

    A named tuple, not a dataclass: online reads build one per entity and
    feature, and a tuple is the cheapest immutable record to build.
    """

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


def merge(kind: AggKind, values: list[Value]) -> Value:
    """Merge one aggregate over tiles in start order; ``None`` when nothing is there."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if kind in (AggKind.COUNT, AggKind.SUM):
        return sum(present)
    if kind is AggKind.MIN:
        return min(present)
    return max(present)


def window_values(view: FeatureView, tiles: Sequence[Tile], end_ms: int) -> dict[str, Value]:
    """The merged aggregate of every window feature for windows ending at ``end_ms``.

    ``None`` means no tile in the window (or only NULL min/max values). Tiles
    must be sorted by start; tiles outside the windows are ignored.
    """
    starts = [t.start_ms for t in tiles]
    upper = bisect_left(starts, end_ms - view.tile_ms + 1)  # tiles with start + tile <= end
    raw: dict[str, Value] = {}
    for window in view.windows:
        lower = bisect_left(starts, end_ms - int(window / _MS))
        in_window = tiles[lower:upper]
        for index, agg in enumerate(view.aggregations):
            name = f"{agg.name}_{duration_label(window)}"
            raw[name] = merge(agg.kind, [t.values[index] for t in in_window]) if in_window else None
    return raw


HeadSlots = tuple[tuple[str, int, AggKind], ...]


def head_slots(view: FeatureView) -> HeadSlots:
    """(window feature, aggregation index, kind) of every window feature: what ``add_head`` merges."""
    return tuple(
        (f"{agg.name}_{duration_label(window)}", index, agg.kind)
        for window in view.windows
        for index, agg in enumerate(view.aggregations)
    )


def add_head(raw: dict[str, Value], head: Sequence[Value], slots: HeadSlots) -> dict[str, Value]:
    """Merge the head into window aggregates, in place: the events of the open tile up to the read time.

    The head is the newest part of every window ``[end - W, t)``, so it is merged
    last, after the tiles (float sums keep their start order), as ``merge`` would.
    ``head`` holds one value per aggregation, in the view's order; ``slots`` is
    ``head_slots(view)``, worked out once per view. Returns ``raw``.
    """
    for name, index, kind in slots:
        value = head[index]
        if value is None:
            continue
        current = raw[name]
        if current is None:
            raw[name] = value
        elif kind is AggKind.COUNT or kind is AggKind.SUM:
            raw[name] = current + value
        elif kind is AggKind.MIN:
            raw[name] = min(current, value)
        else:
            raw[name] = max(current, value)
    return raw


def is_stale(view: FeatureView, as_of_ms: int, completeness_ms: int | None) -> bool:
    """The view's tiles are older than its max staleness as of ``as_of_ms``."""
    return completeness_ms is not None and completeness_ms < as_of_ms - view.max_staleness / _MS


def finish(
    view: FeatureView, raw: Mapping[str, Value], as_of_ms: int, completeness_ms: int | None
) -> dict[str, FeatureValue]:
    """Window aggregates → served values: defaults, staleness policy and derived features.

    Args:
        raw: every window feature of the view, as ``window_values`` returns it.
    """
    return finish_many(view, [raw], as_of_ms, completeness_ms)[0]


def finish_many(
    view: FeatureView,
    raws: Sequence[Mapping[str, Value]],
    as_of_ms: int,
    completeness_ms: int | None,
    *,
    with_head: bool = False,
) -> list[dict[str, FeatureValue]]:
    """``finish`` for many entities as of one time; what all of them share is worked out once.

    - no value → the default, status ``missing`` (``stale`` when the view is stale);
    - stale → status ``stale``, serving the value or the default as ``on_stale`` says;
    - a ratio is present when both its terms are; a zero denominator serves ``on_zero``.

    Each value's ``window_end`` says which window it covers: ``as_of`` itself when
    ``with_head`` (the raws include the head, ``add_head``), else ``as_of`` rounded
    down to the tile.
    """
    end = from_ms(as_of_ms if with_head else window_end_ms(view, as_of_ms))
    stale = is_stale(view, as_of_ms, completeness_ms)
    absent_status = Status.STALE if stale else Status.MISSING
    present_status = Status.STALE if stale else Status.PRESENT
    # Stale under OnStale.DEFAULT: a value that is there is served as the default, like an absent one.
    hides_values = stale and view.on_stale is OnStale.DEFAULT
    defaults = view.defaults
    window_names = view.window_features
    derived = view.derived
    out = []
    for raw in raws:
        result: dict[str, FeatureValue] = {}
        for name in window_names:
            value = raw[name]
            if value is None or hides_values:
                result[name] = FeatureValue(defaults[name], absent_status, end)
            else:
                result[name] = FeatureValue(value, present_status, end)
        for ratio in derived:
            num, den = raw[ratio.numerator], raw[ratio.denominator]
            if num is None or den is None or hides_values:
                result[ratio.name] = FeatureValue(defaults[ratio.name], absent_status, end)
            else:
                quotient = ratio.on_zero if den == 0 else num / den
                result[ratio.name] = FeatureValue(quotient, present_status, end)
        out.append(result)
    return out


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
    as_of_ms = to_ms(as_of)
    raw = window_values(view, tiles, window_end_ms(view, as_of_ms))
    return finish(view, raw, as_of_ms, completeness_ms)
