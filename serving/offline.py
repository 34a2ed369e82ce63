"""Offline reads: Iceberg tiles, pinned to one table snapshot.

Two ways in:
- ``load_tiles(...).features(entity, as_of)``: one entity at one time, through
  ``assemble`` (the reference);
- ``get_historical_features(entity_df, features)``: a training set, every row
  an entity and a time, computed column-wise (``serving.historical``) and held
  to ``assemble`` by the tests.

Values as of t use only tiles that end at or before t, and the completeness
watermark as it stood at t (the newest closed period ending at or before t),
so nothing from after t can leak into a value.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from features.definition import FeatureView
from parity.config import IcebergConfig
from parity.errors import ReadError
from serving import head
from serving.assembly import FeatureValue, Tile, assemble, from_ms, to_ms
from sinks import iceberg

if TYPE_CHECKING:
    from serving.historical import HistoricalFeatures


@dataclass
class OfflineTiles:
    """All tiles of one view at one snapshot, grouped by entity and sorted by start."""

    view: FeatureView
    snapshot_id: int | None
    by_entity: dict[str, list[Tile]] = field(default_factory=dict)
    # Ends of the closed tile periods, ascending: the completeness history.
    period_ends_ms: list[int] = field(default_factory=list)
    # The same tiles as read from Iceberg, one row per tile (join key, tile_start, events, aggregates).
    arrow: pa.Table | None = None
    # When the pinned snapshot was committed (None: the current one was read); the raw
    # archive is read as it stood then.
    committed_ms: int | None = None
    # Reads the raw archive's events of [low, high) for heads, at a snapshot if one is
    # given, and returns the snapshot read; load_tiles sets it. Without it, heads need
    # their events handed in (raw=).
    archive: Callable[[int, int, int | None], tuple[pa.Table, int | None]] | None = None

    @property
    def closed_through_ms(self) -> int | None:
        """The newest closed period end: tiles up to it are final, later ones come from the raw archive."""
        return self.period_ends_ms[-1] if self.period_ends_ms else None

    def completeness_at(self, as_of_ms: int) -> int | None:
        index = bisect_right(self.period_ends_ms, as_of_ms)
        return self.period_ends_ms[index - 1] if index else None

    def features(self, entity: str, as_of: datetime) -> dict[str, FeatureValue]:
        """Every feature of one entity as of a time, from this snapshot."""
        return assemble(self.view, self.by_entity.get(entity, []), as_of, self.completeness_at(to_ms(as_of)))

    def to_arrow(self) -> pa.Table:
        """The tiles as a table: join key, tile_start (epoch ms), events, one column per aggregation."""
        if self.arrow is not None:
            return self.arrow
        key = self.view.entity.join_key
        rows = [(e, t) for e, tiles in self.by_entity.items() for t in tiles]
        columns: dict[str, Any] = {
            key: pa.array([e for e, _ in rows], pa.string()),
            "tile_start": pa.array([t.start_ms for _, t in rows], pa.int64()),
            "events": pa.array([t.events for _, t in rows], pa.int64()),
        }
        for index, agg in enumerate(self.view.aggregations):
            kind = pa.int64() if agg.is_integer else pa.float64()
            columns[agg.name] = pa.array([t.values[index] for _, t in rows], kind)
        self.arrow = pa.table(columns)
        return self.arrow


def load_tiles(cfg: IcebergConfig, view: FeatureView, snapshot_id: int | None = None) -> OfflineTiles:
    """Read the view's tile and progress tables.

    Args:
        snapshot_id: a tiles-table snapshot to pin to (reproducible training
            sets); the current one by default. The progress table is read as
            it stood when that snapshot was committed.

    Raises:
        ReadError: the tables do not exist (the job has never run for this view),
            or the snapshot does not.
    """
    tiles_table, progress_table = _open(cfg, view, iceberg.tiles_table(view), iceberg.progress_table(view))
    snapshot = tiles_table.snapshot_by_id(snapshot_id) if snapshot_id else tiles_table.current_snapshot()
    if snapshot_id and snapshot is None:
        raise ReadError(f"{iceberg.tiles_table(view)} has no snapshot {snapshot_id}")
    result = OfflineTiles(view, snapshot.snapshot_id if snapshot else None)
    if snapshot_id and snapshot is not None:
        result.committed_ms = snapshot.timestamp_ms
    result.archive = lambda low_ms, high_ms, pin: load_raw(cfg, view, low_ms, high_ms, result, pin)
    if snapshot is None:
        result.arrow = result.to_arrow()
        return result
    key = view.entity.join_key
    columns = [key, "tile_start", "events", *(a.name for a in view.aggregations)]
    table = tiles_table.scan(selected_fields=tuple(columns), snapshot_id=snapshot.snapshot_id).to_arrow()
    starts = table.column("tile_start").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    table = table.set_column(table.schema.get_field_index("tile_start"), "tile_start", starts)
    table = table.select(columns)
    _refuse_duplicates(table, view, snapshot.snapshot_id)
    result.arrow = table
    by_entity: dict[str, list[Tile]] = defaultdict(list)
    data = {name: table.column(name).to_pylist() for name in columns}
    aggs = [data[a.name] for a in view.aggregations]
    for i, entity in enumerate(data[key]):
        by_entity[entity].append(
            Tile(data["tile_start"][i], data["events"][i], tuple(col[i] for col in aggs))
        )
    for tiles in by_entity.values():
        tiles.sort(key=lambda t: t.start_ms)
    result.by_entity = dict(by_entity)
    result.period_ends_ms = _period_ends(
        progress_table, None if snapshot_id is None else snapshot.timestamp_ms
    )
    return result


def load_raw(
    cfg: IcebergConfig,
    view: FeatureView,
    low_ms: int,
    high_ms: int,
    tiles: OfflineTiles,
    snapshot_id: int | None = None,
) -> tuple[pa.Table, int | None]:
    """The archived events of ``[low, high)`` that heads need, and the archive snapshot read.

    The snapshot is ``snapshot_id``; else the current one, or with tiles pinned
    to a snapshot, the archive's newest snapshot committed by then. The job
    commits the archive and the tiles separately at each checkpoint, so that
    one may trail the tiles' by a checkpoint: pass both ids back to reproduce
    a read exactly.

    Raises:
        ReadError: no archive table, or no snapshot ``snapshot_id``.
    """
    (archive,) = _open(cfg, view, iceberg.raw_table(view))
    if snapshot_id is not None:
        snapshot = archive.snapshot_by_id(snapshot_id)
        if snapshot is None:
            raise ReadError(f"{iceberg.raw_table(view)} has no snapshot {snapshot_id}")
    else:
        snapshot = _snapshot_as_of(archive, tiles.committed_ms)
    columns = head.needed_columns(view)
    if snapshot is None:
        empty = pa.schema([(name, _arrow_type(archive, name)) for name in columns])
        return empty.empty_table(), None
    field_name = view.source.event_time_field
    row_filter = And(
        GreaterThanOrEqual(term=Reference(field_name), value=literal(from_ms(low_ms).isoformat())),
        LessThan(term=Reference(field_name), value=literal(from_ms(high_ms).isoformat())),
    )
    scan = archive.scan(
        row_filter=row_filter, selected_fields=tuple(columns), snapshot_id=snapshot.snapshot_id
    )
    return scan.to_arrow(), snapshot.snapshot_id


def _open(cfg: IcebergConfig, view: FeatureView, *names: str) -> list[Table]:
    catalog = iceberg.open_catalog(cfg)
    try:
        return [catalog.load_table(f"{cfg.namespace}.{name}") for name in names]
    except Exception as exc:
        raise ReadError(
            f"no offline tables for {view.qualified_name} in {cfg.catalog_name}.{cfg.namespace}: {exc}. "
            "Run the job for this view first (parity job run)."
        ) from exc


def _snapshot_as_of(table: Table, commit_ms: int | None) -> Snapshot | None:
    """The current snapshot, or the newest committed at or before ``commit_ms``."""
    if commit_ms is None:
        return table.current_snapshot()
    older = [s for s in table.snapshots() if s.timestamp_ms <= commit_ms]
    return max(older, key=lambda s: s.timestamp_ms) if older else None


def _arrow_type(table: Table, name: str) -> pa.DataType:
    return schema_to_pyarrow(table.schema().find_field(name).field_type)


def _refuse_duplicates(table: pa.Table, view: FeatureView, snapshot_id: int) -> None:
    """Exactly one row per (entity, tile_start): summing two would serve a wrong value silently."""
    key = view.entity.join_key
    counts = table.group_by([key, "tile_start"]).aggregate([([], "count_all")])
    twice = counts.filter(pc.greater(counts["count_all"], 1))
    if twice.num_rows:
        examples = [
            f"({entity}, {from_ms(start).isoformat()})"
            for entity, start in zip(
                twice[key].to_pylist()[:3], twice["tile_start"].to_pylist()[:3], strict=True
            )
        ]
        raise ReadError(
            f"{iceberg.tiles_table(view)} holds {twice.num_rows} (entity, tile_start) keys more than "
            f"once at snapshot {snapshot_id}, e.g. {', '.join(examples)}. Replay their range "
            f"(parity replay {view.name} --start ... --end ...) to rewrite them as one row each."
        )


def _period_ends(progress: Table, as_of_commit_ms: int | None) -> list[int]:
    """Ends of the closed periods, from the progress table as of a commit time (current when None)."""
    snapshot = _snapshot_as_of(progress, as_of_commit_ms)
    if snapshot is None:
        return []
    ends = progress.scan(selected_fields=("tile_end",), snapshot_id=snapshot.snapshot_id).to_arrow()
    column = ends.column(0).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    return sorted(set(column.to_pylist()))


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
    """Point-in-time features for every row of ``entity_df``; see ``serving.historical``."""
    from serving.historical import get_historical_features as compute

    return compute(
        entity_df,
        features,
        cfg=cfg,
        views=views,
        timestamp_column=timestamp_column,
        snapshot_ids=snapshot_ids,
        tiles=tiles,
        raw=raw,
    )
