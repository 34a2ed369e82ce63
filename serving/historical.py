"""Point-in-time features for a whole frame of (entity, time) rows, column-wise.

For every row of a view without a head, the value is what ``assemble`` gives
for that entity's tiles and the completeness watermark as it stood at the
row's time; the tests hold it to ``assemble`` row by row. A view with a head
(a ``freshness``) also takes, after step 3, the raw archive's part of each
window (``serving.head``), and the tests hold it to the raw events. Nothing
is computed per row in Python:

1. Tiles are sorted by (entity, tile index), where tile index = start / tile.
   One composite integer key, ``entity code * span + tile index``, orders them.
2. A window of W tiles ending at ``end`` holds the tiles with index in
   ``[end - W, end - 1]`` (contract 3: ``start >= end - W`` and
   ``start + tile <= end``). Two ``searchsorted`` calls over the composite key
   find that range for every row at once: a range join.
3. Counts merge by prefix sums (exact in int64). Float sums, min and max merge
   by walking the range offset by offset, vectorized over the rows, left to
   right as ``assemble`` does, so float sums round the same way.
4. Defaults, staleness and ratios follow ``assembly.finish``'s rules, on columns.

No leakage: a tile enters only when ``start + tile <= end <= t``, a head
event only when its time is ``< t``, and the watermark is the newest period
end ``<= t``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from features.definition import AggKind, FeatureView, OnStale, duration_label
from features.registry import load_views
from parity.config import IcebergConfig
from parity.errors import ReadError
from serving import head
from serving.assembly import Status
from serving.head import Partial
from serving.offline import OfflineTiles, load_tiles
from serving.online import FeatureRef, parse_refs

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]
# Status codes of _finish, in code order.
_STATUSES = (Status.PRESENT.value, Status.MISSING.value, Status.STALE.value)


@dataclass(frozen=True)
class HistoricalFeatures:
    """The entity frame with the features appended, and the snapshot each view was read at.

    Columns added per feature ``<view>:<feature>``: its value, and
    ``<view>:<feature>:status`` (present, missing, stale); per view,
    ``<view>:window_end`` (timestamp, UTC): the row's time for a view with a
    head (a ``freshness``), its tile boundary otherwise.

    ``raw_snapshot_ids``: the raw archive's snapshot each view's head was read
    at, for the views whose rows needed one.
    """

    table: pa.Table
    snapshot_ids: dict[str, int | None]
    raw_snapshot_ids: dict[str, int | None] = field(default_factory=dict)

    def to_pandas(self) -> Any:
        return self.table.to_pandas()


def get_historical_features(
    entity_df: Any,
    features: Sequence[str],
    *,
    cfg: IcebergConfig | None = None,
    views: Mapping[str, FeatureView] | None = None,
    timestamp_column: str = "event_timestamp",
    snapshot_ids: Mapping[str, int] | None = None,
    tiles: Mapping[str, OfflineTiles] | None = None,
    raw: Mapping[str, pa.Table] | None = None,
) -> HistoricalFeatures:
    """Features as online would have served them at each row's time.

    For a view with a ``freshness`` (live tiles online), a row's windows end at
    its time, not at its tile boundary: what the closed tiles do not cover comes
    from the raw archive (``serving.head``). The archive is read only for the
    rows that need it, at the snapshot committed with the tiles read.

    Args:
        entity_df: a pyarrow Table or a pandas DataFrame with the views' join
            keys (strings) and a timezone-aware timestamp column.
        features: ``<view>:<feature>`` names.
        cfg: the offline store; ``IcebergConfig()`` by default.
        views: the views that may be read; every view in ``features/`` by default.
        timestamp_column: the column holding each row's time.
        snapshot_ids: pin a view's tiles table to a snapshot (by view name),
            and its raw archive (by ``<view>:raw``); the result's
            ``snapshot_ids`` and ``raw_snapshot_ids`` reproduce a read.
        tiles: already loaded tiles by view name (skips reading Iceberg).
        raw: already loaded raw-archive events by view name, for the heads of
            views given in ``tiles``; views read from Iceberg read their archive.

    Raises:
        ReadError: an unknown feature, a missing or mistyped column, or no offline tables.
    """
    table = _as_table(entity_df)
    refs = parse_refs(features, views if views is not None else load_views())
    by_view: dict[str, list[FeatureRef]] = {}
    for ref in refs:
        by_view.setdefault(ref.view.name, []).append(ref)
    times = _times_ms(table, timestamp_column)
    snapshots: dict[str, int | None] = {}
    raw_snapshots: dict[str, int | None] = {}
    for name, view_refs in by_view.items():
        view = view_refs[0].view
        loaded = (tiles or {}).get(name)
        if loaded is None:
            loaded = load_tiles(cfg or IcebergConfig(), view, (snapshot_ids or {}).get(name))
        snapshots[name] = loaded.snapshot_id
        keys = _keys(table, view)
        events = None
        span = raw_span(view, loaded, times)
        if span is not None:
            if raw is not None and name in raw:
                events = head.prepare(view, raw[name])
            elif loaded.archive is not None:
                archive, raw_snapshots[name] = loaded.archive(*span, (snapshot_ids or {}).get(f"{name}:raw"))
                events = head.prepare(view, archive)
            else:
                raise ReadError(
                    f"{name} has a head (freshness={view.freshness}) and rows its closed tiles do not cover: "
                    f"pass its raw-archive events with raw={{{name!r}: ...}} along with tiles="
                )
        columns = view_columns(view, loaded, keys, times, events)
        for ref in view_refs:
            values, status = columns[ref.feature]
            table = table.append_column(ref.qualified, values)
            table = table.append_column(f"{ref.qualified}:status", status)
        end = times if view.freshness is not None else times - np.mod(times, view.tile_ms)
        table = table.append_column(
            f"{name}:window_end", pa.array(end, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        )
    return HistoricalFeatures(table, snapshots, raw_snapshots)


def raw_span(view: FeatureView, loaded: OfflineTiles, times: _I64) -> tuple[int, int] | None:
    """The event times ``[low, high)`` the rows need from the raw archive, or None when none.

    A row needs its head when it lies inside a tile, and the periods from the
    closed-through time ``C`` on when its tile boundary is past ``C``.
    """
    if view.freshness is None or not len(times):
        return None
    floor = times - np.mod(times, view.tile_ms)
    closed = loaded.closed_through_ms
    inside = times > floor
    beyond = floor > closed if closed is not None else np.ones(len(times), np.bool_)
    if not (inside.any() or beyond.any()):
        return None
    lows = [int(floor[inside].min())] if inside.any() else []
    if beyond.any():
        lows.append(
            closed
            if closed is not None
            else int(floor.min()) - max(view.windows) // timedelta(milliseconds=1)
        )
    return min(lows), int(times.max())


def view_columns(
    view: FeatureView,
    loaded: OfflineTiles,
    keys: pa.Array,
    times: _I64,
    events: head.RawEvents | None = None,
) -> dict[str, tuple[pa.Array, pa.Array]]:
    """(value, status) arrays of every feature of one view, for rows of (entity, epoch ms).

    With ``events`` (the raw archive over ``raw_span``), windows end at each
    row's time: tiles past the closed-through time come from the events, and
    so does each row's head.
    """
    tile_ms = view.tile_ms
    end = (times - np.mod(times, tile_ms)) // tile_ms  # window end as a tile index
    tiles = loaded.to_arrow()
    if events is not None:
        tiles = _with_open_tiles(tiles, events, loaded.closed_through_ms)
    join_key = view.entity.join_key
    if tiles.num_rows:
        tiles = tiles.sort_by([(join_key, "ascending"), ("tile_start", "ascending")])
    entities = pc.unique(tiles.column(join_key))
    tile_code = np.asarray(pc.index_in(tiles.column(join_key), value_set=entities).to_numpy(), np.int64)
    row_code = pc.index_in(keys, value_set=entities).fill_null(-1).to_numpy().astype(np.int64)
    tile_index = tiles.column("tile_start").to_numpy() // tile_ms
    # Bounds outside the stored tiles are clamped one past them: the ranges stay the same.
    low = int(tile_index.min()) - 1 if len(tile_index) else 0
    high = int(tile_index.max()) + 1 if len(tile_index) else 0
    span = high - low + 1
    composite = tile_code * span + (tile_index - low)
    known = row_code >= 0

    def position(bound: _I64, side: Any) -> _I64:
        probe = row_code * span + (np.clip(bound, low, high) - low)
        return np.where(known, head.search(composite, probe, side), 0)

    upper = position(end - 1, "right")
    raw: dict[str, Partial] = {}
    for window in view.windows:
        lower = np.minimum(position(end - window // view.tile, "left"), upper)
        for agg in view.aggregations:
            name = f"{agg.name}_{duration_label(window)}"
            raw[name] = _merge(agg.kind, agg.is_integer, tiles.column(agg.name), lower, upper)
    if events is not None:
        floor = times - np.mod(times, tile_ms)
        parts = head.head(events, keys, floor, times)
        for window in view.windows:
            for agg, part in zip(view.aggregations, parts, strict=True):
                name = f"{agg.name}_{duration_label(window)}"
                raw[name] = head.merge_head(agg.kind, raw[name], part)

    completeness = np.asarray(loaded.period_ends_ms, np.int64)
    at = np.searchsorted(completeness, times, side="right") - 1
    has_completeness = at >= 0
    watermark = np.where(has_completeness, completeness[np.maximum(at, 0)] if len(completeness) else 0, 0)
    stale_ms = int(view.max_staleness.total_seconds() * 1000)
    stale = has_completeness & (watermark < times - stale_ms)

    out: dict[str, tuple[pa.Array, pa.Array]] = {}
    for name in view.window_features:
        out[name] = _finish(view, name, raw[name], stale)
    for ratio in view.derived:
        num, den = raw[ratio.numerator], raw[ratio.denominator]
        present = num.present & den.present
        numerator = num.values.astype(np.float64)
        denominator = den.values.astype(np.float64)
        zero = denominator == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = np.where(zero, ratio.on_zero, numerator / np.where(zero, 1.0, denominator))
        out[ratio.name] = _finish(view, ratio.name, Partial(quotient, present), stale)
    return out


def _with_open_tiles(tiles: pa.Table, events: head.RawEvents, closed_ms: int | None) -> pa.Table:
    """The tiles table, and the raw archive's tiles of the periods from ``closed_ms`` on that it lacks.

    Only closed tiles reach the table, so a tile it holds is final even past
    ``closed_ms`` (the progress table commits separately and may trail it).
    """
    derived = head.open_tiles(events, closed_ms).cast(tiles.schema)
    keys = [events.view.entity.join_key, "tile_start"]
    missing = derived.join(tiles.select(keys), keys=keys, join_type="left anti")
    return pa.concat_tables([tiles, missing.select(tiles.column_names).cast(tiles.schema)])


def _merge(kind: AggKind, integer: bool, column: pa.ChunkedArray, lower: _I64, upper: _I64) -> Partial:
    count = upper - lower
    if kind is AggKind.COUNT or (kind is AggKind.SUM and integer):
        values = np.asarray(column.fill_null(0).to_numpy(), np.int64)
        prefix = np.concatenate(([0], np.cumsum(values)))
        return Partial(prefix[upper] - prefix[lower], count > 0)
    data: _F64 = np.asarray(column.cast(pa.float64()).fill_null(np.nan).to_numpy(), np.float64)
    nulls = np.isnan(data)
    if kind is AggKind.SUM:
        acc = np.zeros(len(lower), np.float64)
        seen = np.zeros(len(lower), np.bool_)
        for offset in range(int(count.max()) if len(count) else 0):
            index = lower + offset
            take = index < upper
            picked = np.where(take, index, 0)
            usable = take & ~nulls[picked] if len(data) else take
            acc = np.where(usable, acc + (data[picked] if len(data) else 0.0), acc)
            seen |= usable
        return Partial(acc, seen)
    pick = np.fmin if kind is AggKind.MIN else np.fmax
    best = np.full(len(lower), np.nan)
    for offset in range(int(count.max()) if len(count) else 0):
        index = lower + offset
        take = index < upper
        candidate = np.where(take, data[np.where(take, index, 0)], np.nan)
        best = pick(best, candidate)
    return Partial(best, ~np.isnan(best))


def _finish(view: FeatureView, name: str, column: Partial, stale: _B) -> tuple[pa.Array, pa.Array]:
    """``assembly.finish_many`` on columns: default when absent, the on_stale policy when stale."""
    default = view.defaults[name]
    use_value = column.present & ~(stale & (view.on_stale is OnStale.DEFAULT))
    integer = isinstance(default, int) and column.values.dtype.kind in "iu"
    dtype = np.int64 if integer else np.float64
    served = np.where(use_value, column.values.astype(dtype), np.asarray(default, dtype))
    # Status codes into _STATUSES, turned into strings by Arrow: building a string
    # array from numpy strings costs more than the rest of the read.
    codes = np.where(stale, 2, np.where(column.present, 0, 1)).astype(np.int8)
    status = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(_STATUSES)).cast(pa.string())
    return pa.array(served, pa.int64() if integer else pa.float64()), status


def _as_table(entity_df: Any) -> pa.Table:
    if isinstance(entity_df, pa.Table):
        return entity_df
    try:
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    except (TypeError, AttributeError, pa.ArrowException) as exc:
        raise ReadError(
            f"entity_df must be a pyarrow Table or a pandas DataFrame, got {type(entity_df).__name__}"
        ) from exc


def _keys(table: pa.Table, view: FeatureView) -> pa.Array:
    key = view.entity.join_key
    if key not in table.column_names:
        raise ReadError(f"entity_df lacks the join key column {key!r} of view {view.name}")
    column = table.column(key)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ReadError(f"join key column {key!r} must hold strings, got {column.type}")
    if column.null_count:
        raise ReadError(f"join key column {key!r} has {column.null_count} null values")
    return column.combine_chunks().cast(pa.string())


def _times_ms(table: pa.Table, name: str) -> _I64:
    if name not in table.column_names:
        raise ReadError(f"entity_df lacks the timestamp column {name!r}; name it with timestamp_column=")
    column = table.column(name)
    if not pa.types.is_timestamp(column.type) or column.type.tz is None:
        raise ReadError(
            f"column {name!r} must be a timezone-aware timestamp (UTC), got {column.type}; "
            "parity times are timezone-aware"
        )
    if column.null_count:
        raise ReadError(f"timestamp column {name!r} has {column.null_count} null values")
    # Truncation toward the millisecond, as assembly.to_ms does.
    ms = pc.cast(column, pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
    return np.asarray(ms.to_numpy(), np.int64)
