"""One logical run per view version: where a streaming job starts from.

A view version's job is one run over time, however often it is stopped,
killed or started again. Before a job starts, ``plan_start`` decides:

- **Resume** from the newest retained checkpoint or savepoint under the view's
  checkpoint folder (or the one the user names). The open tiles travel in it,
  so the next run continues them.
- **Fresh**, when the view has no state and no progress: its first run.
- **Refuse** a start without state on a view that already has progress,
  unless the user asks for it. Such a start would rebuild open tiles from only
  the events it reads next and emit partial tiles over closed ones.

Whatever the start, the job never emits a tile for a period at or before its
*closed boundary*: events older than it are late (counted and archived, never
tiled). On a resume the boundary is the offline completeness watermark. Its
tiles were committed by a checkpoint at or before the one resumed from, so no
restored window can belong to those periods. A restored job starts with no
watermark, so without the boundary an out-of-order event re-read after the
checkpoint would open a second window for a closed period. On a start without
state the boundary is the newest completeness of either store, so that no
closed tile in Redis or Iceberg is ever overwritten by a partial one. The
periods whose state was lost are then named with the replay that heals them.

Imports no PyFlink: the client and the tests use it too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from features.definition import FeatureView
from parity.config import IcebergConfig, RedisConfig
from parity.errors import JobError
from sinks import iceberg
from sinks.redis import connect
from sinks.redis_layout import completeness_key


class StartKind(enum.Enum):
    RESUME = "resume"
    FRESH = "fresh"
    WITHOUT_STATE = "without_state"


@dataclass(frozen=True)
class StoredProgress:
    """What the stores say about a view version before its job starts (epoch ms, None if nothing)."""

    offline_complete_ms: int | None
    online_complete_ms: int | None
    # Oldest and newest event time archived at or after the offline completeness.
    archived_after_complete: tuple[int, int] | None
    # Per Kafka partition, the offset after the newest archived record.
    archived_until: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StartPlan:
    kind: StartKind
    state: Path | None
    closed_before_ms: int
    lost: tuple[int, int] | None = None
    # Where a start without state reads from: right after what the archive holds.
    start_offsets: dict[int, int] | None = None

    def offsets_for(self, partitions: list[int]) -> dict[int, int] | None:
        """Start offsets naming every partition; one the archive never saw starts at its beginning."""
        if self.start_offsets is None:
            return None
        return {p: self.start_offsets.get(p, 0) for p in partitions}

    def describe(self, view: FeatureView) -> list[str]:
        """What the user is told when the job starts."""
        lines = []
        if self.kind is StartKind.RESUME:
            lines.append(f"resuming {view.qualified_name} from {self.state}")
        elif self.kind is StartKind.FRESH:
            lines.append(f"starting {view.qualified_name} without state: it has no progress yet")
        else:
            lines.append(f"starting {view.qualified_name} WITHOUT STATE, as asked")
        if self.closed_before_ms:
            lines.append(f"tiles are closed before {_iso(self.closed_before_ms)}; older events count as late")
        if self.lost is not None:
            start, end = self.lost
            lines.append(
                f"the state of [{_iso(start)}, {_iso(end)}) was lost, so those tiles will be partial. "
                f"Once the completeness watermark passes {_iso(end)}, heal them with:\n"
                f"  {heal_command(view, start, end)}"
            )
        return lines


def heal_command(view: FeatureView, start_ms: int, end_ms: int) -> str:
    return f"parity replay {view.name} --start {_iso(start_ms)} --end {_iso(end_ms)} --to-online --yes"


def newest_state(root: Path) -> Path | None:
    """The newest completed checkpoint or savepoint under a view's checkpoint folder.

    Completed means its ``_metadata`` exists: Flink writes it last. Checkpoints
    live in ``<job id>/chk-<n>/``, savepoints in ``savepoints/savepoint-*/``.
    """
    done = [*root.glob("*/chk-*/_metadata"), *root.glob("savepoints/savepoint-*/_metadata")]
    newest = max(done, key=lambda p: p.stat().st_mtime_ns, default=None)
    return newest.parent if newest is not None else None


def plan_start(
    view: FeatureView,
    state_root: Path,
    progress: StoredProgress,
    *,
    from_state: Path | None = None,
    without_state: bool = False,
) -> StartPlan:
    """Decide how a view's streaming job starts; see the module docstring.

    Raises:
        JobError: the named state does not exist, or a start without state on a
            view with progress was not asked for.
    """
    offline = progress.offline_complete_ms or 0
    if from_state is not None:
        if not (from_state / "_metadata").exists():
            raise JobError(
                f"{from_state} is not a completed checkpoint or savepoint (no _metadata in it); "
                f"retained ones are under {state_root}"
            )
        return StartPlan(StartKind.RESUME, from_state, offline)
    if not without_state:
        found = newest_state(state_root)
        if found is not None:
            return StartPlan(StartKind.RESUME, found, offline)
    stored = max(offline, progress.online_complete_ms or 0)
    if not stored:
        return StartPlan(StartKind.FRESH, None, 0)
    if not without_state:
        raise JobError(
            f"{view.qualified_name} has progress up to {_iso(stored)} but no retained checkpoint or "
            f"savepoint under {state_root}. Starting without state would lose the open tiles of the "
            "previous run. Restore its state folder there, or start anyway with --without-state: "
            "events before that time then count as late, and the lost periods are named with the "
            "replay that heals them."
        )
    # The archive commits exactly once with the checkpoints; the group's offsets are committed
    # after them and may lag. Reading on right after the archive's newest reads nothing twice.
    lost = _lost(view, offline, stored, progress)
    return StartPlan(StartKind.WITHOUT_STATE, None, stored, lost, dict(progress.archived_until))


def _lost(view: FeatureView, offline: int, stored: int, progress: StoredProgress) -> tuple[int, int] | None:
    """The tile periods a start without state leaves wrong offline: [start, end), or None.

    They are the periods from the offline completeness up to the later of the
    stored boundary (closed in Redis, maybe not yet in Iceberg; their events now
    count as late) and the newest archived event (held only by the lost state).
    """
    tile = view.tile_ms
    start, end = offline, stored
    if progress.archived_after_complete is not None:
        oldest, newest = progress.archived_after_complete
        start = start or oldest // tile * tile
        end = max(end, (newest // tile + 1) * tile)
    return (start, end) if start < end else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def read_progress(view: FeatureView, iceberg_cfg: IcebergConfig, redis_cfg: RedisConfig) -> StoredProgress:
    """What Iceberg and Redis hold of the view version's progress (tables not yet made count as none)."""
    catalog = iceberg.open_catalog(iceberg_cfg)
    offline: int | None = None
    archived: tuple[int, int] | None = None
    until: dict[int, int] = {}
    progress_id = f"{iceberg_cfg.namespace}.{iceberg.progress_table(view)}"
    if catalog.table_exists(progress_id):
        offline = iceberg.completeness_ms(catalog.load_table(progress_id))
    raw_id = f"{iceberg_cfg.namespace}.{iceberg.raw_table(view)}"
    if catalog.table_exists(raw_id):
        archived, until = _archived(catalog.load_table(raw_id), view.source.event_time_field, offline or 0)
    client = connect(redis_cfg)
    try:
        online_raw = client.get(completeness_key(redis_cfg.key_prefix, view))
    finally:
        client.close()
    online = int(online_raw) if online_raw is not None else None
    return StoredProgress(offline, online, archived, until)


def _archived(raw: Table, field: str, since_ms: int) -> tuple[tuple[int, int] | None, dict[int, int]]:
    """(oldest, newest) event time archived at or after since_ms, and each partition's next offset."""
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC).isoformat()
    times = raw.scan(row_filter=f"{field} >= '{since}'", selected_fields=(field,)).to_arrow().column(0)
    bounds = pc.min_max(times.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())).as_py()
    span = (bounds["min"], bounds["max"]) if bounds["min"] is not None else None
    positions = raw.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    newest = positions.group_by("kafka_partition").aggregate([("kafka_offset", "max")])
    partitions, offsets = newest["kafka_partition"].to_pylist(), newest["kafka_offset_max"].to_pylist()
    until = {p: o + 1 for p, o in zip(partitions, offsets, strict=True)}
    return span, until
