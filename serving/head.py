"""Offline windows at any instant: the raw archive covers what closed tiles do not.

Contract 3 with the head: a window of size W read at t merges the entity's
tiles of ``[floor(t) - W, floor(t))`` and its events of ``[floor(t), t)``, where
floor rounds down to the tile. Online, the job's live tiles supply both the
tiles not closed yet and the head. Offline, the tiles table holds closed tiles
only, up to ``C``: the newest closed period end in the progress table. So for a
view with a ``freshness`` (live tiles), offline reads take

- the tiles the tiles table holds (only closed tiles reach it, and one past
  ``C`` is closed too: the progress table commits separately and may trail),
- the tiles of periods from ``C`` on that it lacks, from the raw archive, and
- the head, ``[floor(t), t)``, from the raw archive, per row,

aggregated here column-wise with the view's filters (``features.predicate``),
as the job's SQL aggregates them: COUNT counts the rows a filter selects, SUM
adds non-null values (0.0 when there are none), MIN and MAX skip nulls.

Two differences from what the job wrote are deliberate or unavoidable:

- **Late events.** The archive holds every event, late ones included, and the
  job's tiles leave late ones out until a replay rewrites them. Raw-derived
  values count a late event that online does not: the rule replay applies,
  applied early. ``parity skew`` shows such a difference.
- **Float sums** are added in event-time order; the job adds in arrival order.
  They agree to rounding, not always to the last bit. Counts, MIN and MAX are
  exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from features import predicate
from features.definition import AggKind, FeatureView
from parity.errors import DefinitionError, ReadError

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Partial:
    """One aggregation over a span of events, per query: value and whether there is one."""

    values: npt.NDArray[Any]
    present: _B


@dataclass(frozen=True)
class RawEvents:
    """A view's archived events, sorted by (entity, event time), ready for range queries.

    ``selected[i]`` and ``values[i]`` belong to the view's i-th aggregation:
    which events its filter selects, and the column it aggregates (NaN for
    null; None for COUNT, which needs none).
    """

    view: FeatureView
    entities: pa.Array  # distinct join keys; codes index into it
    codes: _I64
    times: _I64
    selected: tuple[_B, ...]
    values: tuple[_F64 | None, ...]
    # One sortable integer per event, code * span + (time - origin): the order above.
    composite: _I64
    origin: int
    span: int

    def __len__(self) -> int:
        return len(self.times)


def needed_columns(view: FeatureView) -> list[str]:
    """The archive columns the head needs: join key, event time, aggregated and filtered fields."""
    names = [view.entity.join_key, view.source.event_time_field]
    for agg in view.aggregations:
        if agg.column:
            names.append(agg.column)
        if agg.filter is not None:
            names.extend(sorted(predicate.fields(agg.filter)))
    return list(dict.fromkeys(names))


def prepare(view: FeatureView, raw: pa.Table) -> RawEvents:
    """Sort the archived events and evaluate the view's filters once.

    Raises:
        ReadError: a needed column is missing, or a filter does not fit the events' types.
    """
    missing = [c for c in needed_columns(view) if c not in raw.column_names]
    if missing:
        raise ReadError(f"the raw archive of {view.qualified_name} lacks columns {missing}")
    time_column = raw.column(view.source.event_time_field)
    if pa.types.is_timestamp(time_column.type):
        time_column = pc.cast(time_column, pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
    keys = raw.column(view.entity.join_key).combine_chunks().cast(pa.string())
    entities = pc.unique(keys)
    codes = np.asarray(pc.index_in(keys, value_set=entities).to_numpy(), np.int64)
    times = np.asarray(time_column.to_numpy(), np.int64)
    origin = int(times.min()) - 1 if len(times) else 0
    span = int(times.max()) - origin + 2 if len(times) else 2
    if len(entities) * span >= 2**62:
        raise ReadError(
            f"{view.qualified_name}: {len(entities):,} entities over {span:,} ms of events is too wide "
            "to read at once; read the rows in time slices"
        )
    composite = codes * span + (times - origin)
    order = np.argsort(composite, kind="stable")
    selected: list[_B] = []
    values: list[_F64 | None] = []
    for agg in view.aggregations:
        # Evaluated in the archive's order and then reordered: taking booleans is
        # cheaper than taking the string columns a filter reads.
        try:
            mask = np.ones(len(order), np.bool_)
            if agg.filter is not None:
                mask = np.asarray(predicate.evaluate(agg.filter, raw).to_numpy(zero_copy_only=False))
        except DefinitionError as exc:
            raise ReadError(f"{view.qualified_name}: aggregation {agg.name!r}: {exc}") from exc
        selected.append(mask[order])
        if agg.column is None:
            values.append(None)
        else:
            column = raw.column(agg.column).cast(pa.float64())
            values.append(np.asarray(column.fill_null(np.nan).to_numpy(), np.float64)[order])
    return RawEvents(
        view,
        entities,
        codes[order],
        times[order],
        tuple(selected),
        tuple(values),
        composite[order],
        origin,
        span,
    )


def open_tiles(events: RawEvents, since_ms: int | None) -> pa.Table:
    """Tiles of the periods starting at or after ``since_ms`` (every period when None), from raw events.

    Returns the columns of the tiles table as ``OfflineTiles.to_arrow`` has them.
    """
    view = events.view
    keep = np.ones(len(events), np.bool_) if since_ms is None else events.times >= since_ms
    index = np.flatnonzero(keep)
    tile_start = events.times[index] - np.mod(events.times[index], view.tile_ms)
    codes = events.codes[index]
    # Events are sorted by (entity, time), so each (entity, tile) is one run.
    boundary = np.ones(len(index), np.bool_)
    if len(index):
        boundary[1:] = (codes[1:] != codes[:-1]) | (tile_start[1:] != tile_start[:-1])
    first = np.flatnonzero(boundary)
    last = np.append(first[1:], len(index))
    columns: dict[str, Any] = {
        view.entity.join_key: events.entities.take(pa.array(codes[first], pa.int64())),
        "tile_start": pa.array(tile_start[first], pa.int64()),
        "events": pa.array(last - first, pa.int64()),
    }
    for agg, mask, data in zip(view.aggregations, events.selected, events.values, strict=True):
        part = aggregate(agg.kind, mask[index], None if data is None else data[index], first, last)
        columns[agg.name] = _column(agg.kind, part)
    return pa.table(columns)


def head(events: RawEvents, keys: pa.Array, low_ms: _I64, high_ms: _I64) -> list[Partial]:
    """Per row: each aggregation over the entity's events of ``[low, high)``."""
    row_code = pc.index_in(keys, value_set=events.entities).fill_null(-1).to_numpy().astype(np.int64)
    known = row_code >= 0

    def position(bound: _I64) -> _I64:
        # Bounds outside the events' times are clamped just outside them: the ranges stay the same.
        offset = np.clip(bound - events.origin, 0, events.span - 1)
        probe = row_code * events.span + offset
        return np.where(known, search(events.composite, probe, "left"), 0)

    lower, upper = position(low_ms), position(high_ms)
    upper = np.maximum(lower, upper)
    return [
        aggregate(agg.kind, mask, data, lower, upper)
        for agg, mask, data in zip(events.view.aggregations, events.selected, events.values, strict=True)
    ]


def search(haystack: _I64, probes: _I64, side: Any) -> _I64:
    """``np.searchsorted`` for many unsorted probes: sorted first, so each search starts where the last ended.

    numpy narrows a search by the previous result when probes ascend; on a
    million random probes into millions of keys that is several times faster.
    """
    order = np.argsort(probes, kind="stable")
    found = np.empty(len(probes), np.int64)
    found[order] = np.searchsorted(haystack, probes[order], side=side)
    return found


def aggregate(kind: AggKind, selected: _B, data: _F64 | None, lower: _I64, upper: _I64) -> Partial:
    """One aggregation over the events ``[lower, upper)`` of each query, as the job's SQL computes it."""
    has_events = upper > lower
    if kind is AggKind.COUNT or data is None:
        prefix = np.concatenate(([0], np.cumsum(selected, dtype=np.int64)))
        return Partial(prefix[upper] - prefix[lower], has_events)
    usable = selected & ~np.isnan(data)
    steps = int((upper - lower).max()) if len(lower) else 0
    if kind is AggKind.SUM:
        # Left to right, as a running SUM adds; COALESCE(SUM, 0.0) when none is usable.
        acc = np.zeros(len(lower), np.float64)
        for offset in range(steps):
            at = lower + offset
            take = at < upper
            picked = np.where(take, at, 0)
            add = take & usable[picked]
            acc = np.where(add, acc + data[picked], acc)
        return Partial(acc, has_events)
    pick = np.fmin if kind is AggKind.MIN else np.fmax
    best = np.full(len(lower), np.nan)
    masked = np.where(usable, data, np.nan)
    for offset in range(steps):
        at = lower + offset
        take = at < upper
        best = pick(best, np.where(take, masked[np.where(take, at, 0)], np.nan))
    return Partial(best, ~np.isnan(best))


def merge_head(kind: AggKind, tail: Partial, part: Partial) -> Partial:
    """``assembly.add_head`` on columns: the head merged after the tiles."""
    if kind is AggKind.COUNT or kind is AggKind.SUM:
        both = np.where(
            part.present, np.where(tail.present, tail.values + part.values, part.values), tail.values
        )
        return Partial(both, tail.present | part.present)
    pick = np.fmin if kind is AggKind.MIN else np.fmax
    best = pick(tail.values.astype(np.float64), part.values)
    return Partial(best, ~np.isnan(best))


def _column(kind: AggKind, part: Partial) -> pa.Array:
    if kind is AggKind.COUNT:
        return pa.array(part.values, pa.int64())
    if kind is AggKind.SUM:
        return pa.array(part.values, pa.float64())
    return pa.array(part.values, pa.float64(), mask=~part.present)
