"""Offline reads: Iceberg tiles → ``assemble``, pinned to one table snapshot.

Values as of t use only tiles that end at or before t, and the completeness
watermark as it stood at t (the newest closed period ending at or before t),
so nothing from after t can leak into a value.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pyiceberg.table import Table

from features.definition import FeatureView
from parity.config import IcebergConfig
from parity.errors import ReadError
from serving.assembly import FeatureValue, Tile, assemble, to_ms
from sinks import iceberg


@dataclass
class OfflineTiles:
    """All tiles of one view at one snapshot, grouped by entity and sorted by start."""

    view: FeatureView
    snapshot_id: int | None
    by_entity: dict[str, list[Tile]] = field(default_factory=dict)
    # Ends of the closed tile periods, ascending: the completeness history.
    period_ends_ms: list[int] = field(default_factory=list)

    def completeness_at(self, as_of_ms: int) -> int | None:
        index = bisect_right(self.period_ends_ms, as_of_ms)
        return self.period_ends_ms[index - 1] if index else None

    def features(self, entity: str, as_of: datetime) -> dict[str, FeatureValue]:
        """Every feature of one entity as of a time, from this snapshot."""
        return assemble(self.view, self.by_entity.get(entity, []), as_of, self.completeness_at(to_ms(as_of)))


def _ms(value: datetime) -> int:
    return to_ms(value)


def load_tiles(cfg: IcebergConfig, view: FeatureView, snapshot_id: int | None = None) -> OfflineTiles:
    """Read the view's tile and progress tables.

    Args:
        snapshot_id: a tiles-table snapshot to pin to (reproducible training
            sets); the current one by default.

    Raises:
        ReadError: the tables do not exist (the job has never run for this view).
    """
    catalog = iceberg.open_catalog(cfg)
    try:
        tiles_table: Table = catalog.load_table(f"{cfg.namespace}.{iceberg.tiles_table(view)}")
        progress_table: Table = catalog.load_table(f"{cfg.namespace}.{iceberg.progress_table(view)}")
    except Exception as exc:
        raise ReadError(
            f"no offline tables for {view.qualified_name} in {cfg.catalog_name}.{cfg.namespace}: {exc}. "
            "Run the job for this view first (parity job run)."
        ) from exc
    snapshot = tiles_table.snapshot_by_id(snapshot_id) if snapshot_id else tiles_table.current_snapshot()
    if snapshot_id and snapshot is None:
        raise ReadError(f"{iceberg.tiles_table(view)} has no snapshot {snapshot_id}")
    result = OfflineTiles(view, snapshot.snapshot_id if snapshot else None)
    if snapshot is None:
        return result
    key = view.entity.join_key
    columns = [key, "tile_start", "events", *(a.name for a in view.aggregations)]
    table = tiles_table.scan(selected_fields=tuple(columns), snapshot_id=snapshot.snapshot_id).to_arrow()
    by_entity: dict[str, list[Tile]] = defaultdict(list)
    data = {name: table.column(name).to_pylist() for name in columns}
    aggs = [data[a.name] for a in view.aggregations]
    for i, entity in enumerate(data[key]):
        by_entity[entity].append(
            Tile(_ms(data["tile_start"][i]), data["events"][i], tuple(col[i] for col in aggs))
        )
    for tiles in by_entity.values():
        tiles.sort(key=lambda t: t.start_ms)
    result.by_entity = dict(by_entity)
    ends: Iterable[datetime] = (
        progress_table.scan(selected_fields=("tile_end",)).to_arrow().column(0).to_pylist()
    )
    result.period_ends_ms = sorted({_ms(e) for e in ends})
    return result
