"""Rebuilding a lost online store from Iceberg: ``parity repair-online`` and the job's start.

Redis is a cache of the offline tiles inside the online horizon. When its
epoch key is absent or ``lost`` (the contract in ``sinks.redis_layout``), a
repair of one view version:

1. reads the offline completeness C (the newest ``tile_end`` of the progress
   table). None: nothing was ever complete, so only the epoch is set;
2. with ``wait_s``, waits until C has reached the completeness the running job
   wrote to Redis since the loss, so the tiles it wrote before the loss, and
   that went with it, are committed to Iceberg before they are read;
3. reads the tiles starting at or after C minus the horizon (longest window
   plus prune margin), and sets them through ``RedisTileSink``: under its
   version guard, so a tile the job wrote since the loss, with as many events
   or more, stays;
4. moves the completeness watermark forward to C (never back) and merges the
   window values of every entity it wrote;
5. sets the epoch last, so reads turn from ``error`` to values only once every
   earlier step is done. A repair that stops half-way leaves the view ``error``.

Safe to re-run: every step sets, never adds. The job keeps writing meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.catalog import Catalog

from features.definition import FeatureView
from parity.config import IcebergConfig, RedisConfig
from sinks import iceberg
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from sinks.redis_layout import EPOCH_LOST

Say = Callable[[str], None]

# Tiles per sink write: one pipelined round trip each.
BATCH = 1000


@dataclass
class RepairSummary:
    view: str
    epoch_before: str | None
    completeness_ms: int | None = None
    horizon_ms: int | None = None
    entities: int = 0
    tiles: int = 0
    applied: int = 0
    refreshed: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would rebuild" if self.dry_run else "rebuilt"
        out = [
            f"{self.view}: {verb} the online store from Iceberg",
            f"  epoch before     {self.epoch_before or '(absent)'}",
            f"  completeness     {_iso(self.completeness_ms)}",
            f"  horizon from     {_iso(self.horizon_ms)}",
            f"  entities         {self.entities}",
            f"  tiles            {self.tiles}"
            + ("" if self.dry_run else f"  (set {self.applied}, kept newer {self.tiles - self.applied})"),
        ]
        if not self.dry_run:
            out.append(f"  values merged    {self.refreshed}")
        out.append(f"  elapsed          {self.seconds:.1f} s")
        return out + [f"  note: {n}" for n in self.notes]


def needs_repair(epoch: str | None) -> bool:
    return epoch is None or epoch == EPOCH_LOST


def repair_online(
    view: FeatureView,
    iceberg_cfg: IcebergConfig,
    redis_cfg: RedisConfig,
    *,
    dry_run: bool = False,
    wait_s: float = 0.0,
    say: Say = print,
) -> RepairSummary:
    """Rebuild the view version's online horizon from Iceberg; see the module docstring.

    Raises:
        SinkError: Redis did not answer or did not take a write.
    """
    began = time.monotonic()
    catalog = iceberg.open_catalog(iceberg_cfg)
    sink = RedisTileSink(view, redis_cfg)
    sink.open()
    try:
        summary = RepairSummary(view.qualified_name, sink.epoch(), dry_run=dry_run)
        complete = _wait_for_offline(catalog, iceberg_cfg, view, sink.completeness_ms(), wait_s, say, summary)
        summary.completeness_ms = complete
        if complete is None:
            summary.notes.append("Iceberg has no progress for this view: nothing to rebuild")
        else:
            summary.horizon_ms = complete - int(
                (view.longest_window + view.prune_margin) / timedelta(milliseconds=1)
            )
            say(f"reading the tiles of {view.qualified_name} from {_iso(summary.horizon_ms)} in Iceberg")
            rows = _tiles(catalog, iceberg_cfg, view, summary.horizon_ms)
            summary.tiles = len(rows)
            summary.entities = len({r.entity for r in rows})
            if not dry_run:
                for begin in range(0, len(rows), BATCH):
                    summary.applied += sink.write(rows[begin : begin + BATCH]).applied
                    say(f"  set {min(begin + BATCH, len(rows))} of {len(rows)} tiles")
                # Tiles before the horizon stay only in Iceberg: reads reaching them must say so.
                sink.mark_pruned(_newest_before(catalog, iceberg_cfg, view, summary.horizon_ms))
                sink.advance_completeness(complete)
                # Old tiles leave their values out of date: merge them now, not at the job's next advance.
                summary.refreshed = sink.refresh()
        if not dry_run:
            sink.set_epoch("repair")
        summary.seconds = time.monotonic() - began
        return summary
    finally:
        sink.close()


def ensure_online(view: FeatureView, iceberg_cfg: IcebergConfig, redis_cfg: RedisConfig, say: Say) -> None:
    """Before a job writes: a Redis without the view's epoch is stamped if the view is new, else repaired.

    The job is not running, so nothing is in flight: no wait. Raises as ``repair_online``.
    """
    sink = RedisTileSink(view, redis_cfg)
    sink.open()
    try:
        epoch = sink.epoch()
        if not needs_repair(epoch):
            return
        catalog = iceberg.open_catalog(iceberg_cfg)
        if _offline_completeness(catalog, iceberg_cfg, view) is None:
            sink.set_epoch("fresh", only_if_absent=True)
            return
    finally:
        sink.close()
    say(
        f"the online store of {view.qualified_name} was lost (epoch {epoch or 'absent'}): "
        "rebuilding it from Iceberg"
    )
    for line in repair_online(view, iceberg_cfg, redis_cfg, say=say).lines():
        say(line)


def _wait_for_offline(
    catalog: Catalog,
    cfg: IcebergConfig,
    view: FeatureView,
    online_ms: int | None,
    wait_s: float,
    say: Say,
    summary: RepairSummary,
) -> int | None:
    """The offline completeness, once it has reached ``online_ms`` or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    complete = _offline_completeness(catalog, cfg, view)
    if online_ms is None or wait_s <= 0 or (complete or 0) >= online_ms:
        return complete
    say(f"waiting up to {wait_s:.0f} s for Iceberg to commit up to {_iso(online_ms)}, as Redis has")
    while time.monotonic() < deadline:
        time.sleep(1.0)
        complete = _offline_completeness(catalog, cfg, view)
        if (complete or 0) >= online_ms:
            return complete
    summary.notes.append(
        f"Iceberg is complete up to {_iso(complete)}, Redis up to {_iso(online_ms)}: tiles the job wrote "
        "before the loss and has not committed yet are not rebuilt (run it again once the job has committed)"
    )
    return complete


def _offline_completeness(catalog: Catalog, cfg: IcebergConfig, view: FeatureView) -> int | None:
    identifier = f"{cfg.namespace}.{iceberg.progress_table(view)}"
    if not catalog.table_exists(identifier):
        return None
    return iceberg.completeness_ms(catalog.load_table(identifier))


def _newest_before(catalog: Catalog, cfg: IcebergConfig, view: FeatureView, before_ms: int) -> dict[str, int]:
    """Per entity, the start of its newest offline tile that starts before ``before_ms``."""
    key = view.entity.join_key
    before = datetime.fromtimestamp(before_ms / 1000, tz=UTC).isoformat()
    older = (
        catalog.load_table(f"{cfg.namespace}.{iceberg.tiles_table(view)}")
        .scan(row_filter=f"tile_start < '{before}'", selected_fields=(key, "tile_start"))
        .to_arrow()
    )
    starts = older.set_column(1, "tile_start", _as_ms(older.column("tile_start")))
    newest = starts.group_by(key).aggregate([("tile_start", "max")])
    return dict(zip(newest[key].to_pylist(), newest["tile_start_max"].to_pylist(), strict=True))


def _tiles(catalog: Catalog, cfg: IcebergConfig, view: FeatureView, since_ms: int) -> list[TileRow]:
    """The offline tiles starting at or after ``since_ms``, grouped by entity, oldest first."""
    identifier = f"{cfg.namespace}.{iceberg.tiles_table(view)}"
    if not catalog.table_exists(identifier):
        return []
    key = view.entity.join_key
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC).isoformat()
    columns = (key, "tile_start", "tile_end", "events", *(a.name for a in view.aggregations))
    table = catalog.load_table(identifier).scan(
        row_filter=f"tile_start >= '{since}'", selected_fields=columns
    )
    data = table.to_arrow()
    entities = data.column(key).to_pylist()
    starts = _as_ms(data.column("tile_start")).to_pylist()
    ends = _as_ms(data.column("tile_end")).to_pylist()
    events = data.column("events").to_pylist()
    aggs = [data.column(a.name).to_pylist() for a in view.aggregations]
    rows = [
        TileRow(entities[i], starts[i], ends[i], events[i], tuple(col[i] for col in aggs))
        for i in range(len(entities))
    ]
    rows.sort(key=lambda r: (r.entity, r.tile_start_ms))
    return rows


def _as_ms(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())


def _iso(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
