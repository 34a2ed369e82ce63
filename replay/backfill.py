"""Replaying a time range: recompute its tiles with the compiled pipeline, then swap them in.

Protocol of one replay of [start, end):
1. check the range: non-empty, aligned to the view's tile, and closed (it ends
   at or before the offline completeness watermark; a period still open would
   be staged partial, and the stream would later add a second row for it);
   and that the source holds events in it;
2. drop the staging tables that killed replays of the view left behind;
3. run ``replay.job`` (Flink batch, same compiled tile query) into two fresh
   staging tables, so a failure leaves the view's tables untouched;
4. compare the staged tiles with the tiles the offline table holds in the
   range, and report rows to delete and to add (``dry_run`` stops here);
5. replace exactly the range in the tiles table in ONE Iceberg commit (its
   snapshot summary records view, version, range, source and row counts). A
   reader sees all of the range before or all of it after. The progress table
   is left as the stream wrote it: the range was closed before and stays
   closed, so its periods, which are all readers take from it, are the same.
   A concurrent commit of the streaming job (tiles of later, open periods,
   never of this closed range) makes the commit conflict; it is retried on
   the new table state;
6. with ``to_online``, set the replayed tiles that are still inside the
   online horizon in Redis, under the sink's usual version guard;
7. drop the staging tables.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
from opentelemetry import trace
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table

from features.definition import FeatureView
from jobs import lineage
from parity import jobctl
from parity.config import IcebergConfig, RedisConfig
from parity.errors import InputError, JobError
from replay.diff import diff_tiles
from serving.assembly import from_ms, to_ms
from sinks import iceberg
from sinks.base import TileRow
from sinks.redis import RedisTileSink

Say = Callable[[str], None]

# Table property naming the process that made a staging table, as <host>:<pid>.
OWNER = "parity.replay-owner"
# Commits of the tiles table tried before a replay gives up to a busy streaming job.
COMMIT_ATTEMPTS = 5


@dataclass
class ReplaySummary:
    view: str
    start: datetime
    end: datetime
    source: str
    events_read: int = 0
    tiles_before: int = 0
    tiles_after: int = 0
    tiles_changed: int = 0
    tiles_added: int = 0
    tiles_removed: int = 0
    online_written: int = 0
    snapshot_id: int | None = None
    dry_run: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would replace" if self.dry_run else "replaced"
        out = [
            f"{self.view}: {verb} tiles of [{self.start.isoformat()}, {self.end.isoformat()})"
            f" from {self.source}",
            f"  events read      {self.events_read}",
            f"  tiles before     {self.tiles_before}",
            f"  tiles after      {self.tiles_after}"
            f"  (added {self.tiles_added}, removed {self.tiles_removed}, changed {self.tiles_changed})",
        ]
        if self.online_written:
            out.append(f"  online tiles set {self.online_written}")
        if self.snapshot_id is not None:
            out.append(f"  Iceberg snapshot {self.snapshot_id}")
        out.append(f"  elapsed          {self.seconds:.1f} s")
        return out + [f"  note: {n}" for n in self.notes]


def check_range(view: FeatureView, start: datetime, end: datetime) -> tuple[int, int]:
    """Epoch-ms bounds of the range, or an InputError saying how to fix it."""
    start_ms, end_ms = to_ms(start), to_ms(end)
    if end_ms <= start_ms:
        raise InputError(
            f"empty or inverted range: --end {end.isoformat()} is not after --start {start.isoformat()}"
        )
    tile = view.tile_ms
    for name, value in (("--start", start_ms), ("--end", end_ms)):
        if value % tile:
            below, above = from_ms(value - value % tile), from_ms(value - value % tile + tile)
            raise InputError(
                f"{name} {from_ms(value).isoformat()} is not aligned to the {view.name} tile "
                f"({view.tile}); nearest aligned times: {below.isoformat()} or {above.isoformat()}"
            )
    return start_ms, end_ms


def _range(column: str, start: datetime, end: datetime) -> BooleanExpression:
    lower: BooleanExpression = GreaterThanOrEqual(column, start.isoformat())  # type: ignore[arg-type,call-arg]
    upper: BooleanExpression = LessThan(column, end.isoformat())  # type: ignore[arg-type,call-arg]
    return And(lower, upper)


def replay(
    view: FeatureView,
    start: datetime,
    end: datetime,
    *,
    source: str = "iceberg",
    dry_run: bool = False,
    to_online: bool = False,
    topic: str | None = None,
    say: Say = print,
    job_env: dict[str, str] | None = None,
) -> ReplaySummary:
    """Replay [start, end) of a view; see the module docstring for the steps.

    Raises:
        InputError: the range is empty, inverted, unaligned, or has no source data.
        JobError: the batch job failed; the view's tables are unchanged.
    """
    attributes: dict[str, str | bool] = {
        "parity.view": view.qualified_name,
        "parity.source": source,
        "parity.dry_run": dry_run,
    }
    track = lineage.replay_run(
        view, start, end, source=source, to_online=to_online, topic=topic, dry_run=dry_run
    )
    with (
        trace.get_tracer("parity.replay").start_as_current_span("replay", attributes=attributes) as span,
        track,
    ):
        summary = _replay(view, start, end, source, dry_run, to_online, topic, say, job_env)
        span.set_attribute("parity.events_read", summary.events_read)
        span.set_attribute("parity.tiles_after", summary.tiles_after)
        return summary


def _replay(
    view: FeatureView,
    start: datetime,
    end: datetime,
    source: str,
    dry_run: bool,
    to_online: bool,
    topic: str | None,
    say: Say,
    job_env: dict[str, str] | None,
) -> ReplaySummary:
    began = time.monotonic()
    start_ms, end_ms = check_range(view, start, end)
    cfg = IcebergConfig()
    tiles_table, progress_table = iceberg.ensure_tables(cfg, view)
    _check_closed(view, progress_table, end_ms)
    summary = ReplaySummary(view.qualified_name, start, end, source, dry_run=dry_run)
    if source == "iceberg":
        raw = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.raw_table(view)}")
        event_time = view.source.event_time_field
        summary.events_read = raw.scan(
            row_filter=_range(event_time, start, end), selected_fields=(event_time,)
        ).count()
        say(f"raw archive: {summary.events_read} events in range")
        if summary.events_read == 0:
            raise InputError(
                f"the raw archive of {view.qualified_name} has no events in "
                f"[{start.isoformat()}, {end.isoformat()}); nothing to replay "
                "(has the streaming job run over this range? or try --source kafka)"
            )

    catalog = iceberg.open_catalog(cfg)
    for name in _sweep(catalog, cfg.namespace, view):
        say(f"dropped {name}, left behind by a replay that did not finish")
    run_id = uuid.uuid4().hex[:8]
    staging_tiles = iceberg.staging_table(view, run_id, "tiles")
    staging_progress = iceberg.staging_table(view, run_id, "progress")
    for name, schema in (
        (staging_tiles, iceberg.tiles_schema(view)),
        (staging_progress, iceberg.progress_schema()),
    ):
        catalog.create_table(
            f"{cfg.namespace}.{name}",
            schema=schema,
            partition_spec=PartitionSpec(),
            properties={OWNER: _owner()},
        )
    try:
        say(f"running the {view.name} tile pipeline in Flink batch mode ({source}) ...")
        _run_job(view, source, start_ms, end_ms, staging_tiles, staging_progress, run_id, topic, job_env)
        staged = catalog.load_table(f"{cfg.namespace}.{staging_tiles}").scan().to_arrow()
        if source == "kafka":
            summary.events_read = int(pa.compute.sum(staged.column("events")).as_py() or 0)
            if summary.events_read == 0:
                raise InputError(
                    f"{view.source.topic} has no events of {view.name} in the range; nothing to replay"
                )
        say(f"staged {staged.num_rows} tiles")
        _compare(view, tiles_table, staged, start, end, summary)
        if not dry_run:
            summary.snapshot_id = _swap(tiles_table, staged, view, summary)
            say(f"committed Iceberg snapshot {summary.snapshot_id}")
            if to_online:
                summary.online_written = _to_online(view, staged)
    finally:
        for name in (staging_tiles, staging_progress):
            with contextlib.suppress(Exception):
                _purge(catalog, f"{cfg.namespace}.{name}")
    summary.seconds = time.monotonic() - began
    return summary


def _run_job(
    view: FeatureView,
    source: str,
    start_ms: int,
    end_ms: int,
    staging_tiles: str,
    staging_progress: str,
    run_id: str,
    topic: str | None,
    job_env: dict[str, str] | None,
) -> None:
    cmd = [str(jobctl.job_python()), "-m", "replay.job", "--view", view.name, "--source", source]
    cmd += ["--start", str(start_ms), "--end", str(end_ms), "--run-id", run_id]
    cmd += ["--staging-tiles", staging_tiles, "--staging-progress", staging_progress]
    if topic:
        cmd += ["--topic", topic]
    log_path = jobctl.PROJECT_ROOT / ".parity" / "logs" / f"replay-{run_id}.log"
    proc = jobctl.start_local(cmd, log_path, env=job_env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        raise
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise JobError(
            f"the replay job failed (exit {code}); the view's tables are unchanged. Log {log_path}:\n{tail}"
        )


def _compare(
    view: FeatureView, table: Table, staged: pa.Table, start: datetime, end: datetime, s: ReplaySummary
) -> None:
    current = table.scan(row_filter=_range("tile_start", start, end)).to_arrow()
    diff = diff_tiles(current, staged, (view.entity.join_key, "tile_start"))
    s.tiles_before, s.tiles_after = current.num_rows, staged.num_rows
    s.tiles_added, s.tiles_removed, s.tiles_changed = diff.added, diff.removed, diff.changed


def _swap(tiles: Table, staged: pa.Table, view: FeatureView, s: ReplaySummary) -> int | None:
    """Replace the range's tiles in one commit, retried on a conflicting concurrent commit."""
    properties = {
        "parity.operation": "replay",
        "parity.view": view.name,
        "parity.version": str(view.version),
        "parity.range-start": s.start.isoformat(),
        "parity.range-end": s.end.isoformat(),
        "parity.source": s.source,
        "parity.events-read": str(s.events_read),
        "parity.tiles-deleted": str(s.tiles_before),
        "parity.tiles-added": str(s.tiles_after),
    }
    rows = staged.cast(tiles.schema().as_arrow())
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            in_range = _range("tile_start", s.start, s.end)
            tiles.overwrite(rows, overwrite_filter=in_range, snapshot_properties=properties)
            break
        except CommitFailedException:
            # The stream committed in between (tiles of open periods only): redo ours on top.
            if attempt == COMMIT_ATTEMPTS:
                raise
            s.notes.append("the streaming job committed meanwhile; the replay's commit was redone on top")
            tiles.refresh()
    snapshot = tiles.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def _check_closed(view: FeatureView, progress: Table, end_ms: int) -> None:
    """An InputError unless [.., end) is closed: at or before the offline completeness watermark."""
    closed = iceberg.completeness_ms(progress)
    if closed is None or end_ms > closed:
        last = "none yet" if closed is None else from_ms(closed).isoformat()
        raise InputError(
            f"--end {from_ms(end_ms).isoformat()} is past what {view.qualified_name} has closed; the last "
            f"replayable end is {last}. A period still open would be staged partial, and the "
            "streaming job would later write a second row for it."
        )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _sweep(catalog: Catalog, namespace: str, view: FeatureView) -> list[str]:
    """Drop staging tables of the view whose replay is dead: started on this host by a process
    that no longer runs, or without an owner. Another host's runs are left to that host."""
    host = socket.gethostname()
    dropped = []
    for identifier in catalog.list_tables(namespace):
        name = identifier[-1]
        if not iceberg.is_staging_table(view, name):
            continue
        full = f"{namespace}.{name}"
        owner = catalog.load_table(full).properties.get(OWNER, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner and (owner_host != host or _alive(int(pid))):
            continue
        with contextlib.suppress(NoSuchTableError):
            _purge(catalog, full)
            dropped.append(full)
    return dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _to_online(view: FeatureView, staged: pa.Table) -> int:
    """Set replayed tiles still inside the online horizon; older ones would be pruned anyway."""
    sink = RedisTileSink(view, RedisConfig())
    sink.open()
    try:
        newest_ms = sink.completeness_ms() or 0
        horizon = newest_ms - int((view.longest_window + view.prune_margin) / timedelta(milliseconds=1))
        key = view.entity.join_key
        rows = []
        for r in staged.to_pylist():
            start_ms = to_ms(r["tile_start"])
            if start_ms >= horizon:
                values = tuple(r[a.name] for a in view.aggregations)
                rows.append(TileRow(r[key], start_ms, to_ms(r["tile_end"]), r["events"], values))
        written = 0
        for i in range(0, len(rows), 1000):
            written += sink.write(rows[i : i + 1000]).applied
        # Replayed tiles are old, so the sink marked the window values out of date:
        # merge them now rather than wait for the streaming job's next advance.
        sink.refresh()
        return written
    finally:
        sink.close()


def _purge(catalog: Catalog, identifier: str) -> None:
    catalog.purge_table(identifier)
