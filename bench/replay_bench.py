"""Replay throughput over a large raw archive, against DuckDB computing the same tiles.

With the stack up (``make up``):

    .venv/bin/python bench/replay_bench.py --events 10000000 --days 30

1. writes N synthetic ad events (20k users over D days) straight into a fresh
   raw-archive table (pyiceberg append: the archive is the replay's input);
2. times ``parity replay user_stats`` over the whole range, split into the
   Flink batch job (read + aggregate + staging write) and the Iceberg swap;
3. times a read-only Flink batch job over the same range (COUNT(*)) to split
   reading from aggregation;
4. times DuckDB computing the same hourly tiles from the archive's Parquet
   files: the reference limit. Reports events/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import IcebergConfig
from replay.backfill import replay
from sinks import iceberg

START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(events: int, users: int, days: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    start_ms = int(START.timestamp() * 1000)
    times = np.sort(rng.integers(start_ms, start_ms + days * 86_400_000, events))
    user = rng.zipf(1.3, events) % users
    kind = np.where(rng.random(events) < 0.1, "click", "impression")
    device = rng.choice(np.array(["mobile", "desktop", "tablet"]), events, p=[0.55, 0.35, 0.10])
    return pa.table(
        {
            "event_id": pa.array([f"e{i}" for i in range(events)]),
            "user_id": pa.array(np.char.add("user-", user.astype(str))),
            "ad_id": pa.array(np.char.add("ad-", (rng.integers(0, 40, events)).astype(str))),
            "event_type": pa.array(kind),
            "event_time": pa.array(times, pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC")),
            "campaign_id": pa.array(np.char.add("campaign-", (rng.integers(0, 6, events)).astype(str))),
            "country": pa.array(rng.choice(np.array(["US", "DE", "FR", "GB"]), events)),
            "cost": pa.array(rng.random(events) * 0.5),
            "device": pa.array(device),
            "kafka_partition": pa.array(np.zeros(events, dtype=np.int32)),
            "kafka_offset": pa.array(np.arange(events, dtype=np.int64)),
        }
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    args = p.parse_args()

    run_id = uuid.uuid4().hex[:8]
    namespace = f"bench{run_id}"
    os.environ["PARITY_ICEBERG_NAMESPACE"] = namespace
    os.environ["PARITY_REDIS_KEY_PREFIX"] = namespace
    cfg = IcebergConfig()
    iceberg.ensure_tables(cfg, user_stats)
    raw = iceberg.open_catalog(cfg).load_table(f"{namespace}.{iceberg.raw_table(user_stats)}")

    began = time.monotonic()
    data = synthetic(args.events, args.users, args.days, seed=7)
    for offset in range(0, data.num_rows, 2_000_000):
        raw.append(data.slice(offset, 2_000_000).cast(raw.schema().as_arrow()))
    print(f"archive written: {args.events:,} events in {time.monotonic() - began:.0f} s", flush=True)
    del data

    end = START + timedelta(days=args.days)
    phases: dict[str, float] = {}
    began = time.monotonic()
    summary = replay(
        user_stats, START, end, say=lambda line: phases.setdefault(line, time.monotonic() - began)
    )
    replay_s = summary.seconds
    staged_at = next((t for line, t in phases.items() if line.startswith("staged")), replay_s)
    job_s = staged_at - next((t for line, t in phases.items() if line.startswith("running")), 0.0)

    read_s = time_read_only(namespace, end)
    duck_s, duck_tiles = time_duckdb(raw.refresh(), end)
    result = {
        "events": args.events,
        "tiles": summary.tiles_after,
        "replay_total_s": round(replay_s, 1),
        "replay_flink_job_s": round(job_s, 1),
        "replay_swap_and_compare_s": round(replay_s - staged_at, 1),
        "flink_read_only_s": round(read_s, 1),
        "replay_events_per_s": round(args.events / replay_s),
        "duckdb_s": round(duck_s, 2),
        "duckdb_tiles": duck_tiles,
        "duckdb_events_per_s": round(args.events / duck_s),
        "ratio_replay_to_duckdb": round(replay_s / duck_s, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


def time_read_only(namespace: str, end: datetime) -> float:
    """A Flink batch job that only reads the range of the archive: Flink start-up plus reading."""
    script = f"""
from jobs.compiler import iceberg_catalog_ddl
from jobs.stream import table_environment
from features.user_stats import view
from parity.config import FlinkJobConfig, IcebergConfig
from sinks import iceberg
cfg = IcebergConfig()
env = table_environment(view, FlinkJobConfig(), streaming=False)
env.execute_sql(iceberg_catalog_ddl(cfg))
table = iceberg.sql_table(cfg, iceberg.raw_table(view))
end = "TO_TIMESTAMP_LTZ({int(end.timestamp() * 1000)}, 3)"
env.execute_sql(f"SELECT COUNT(*), SUM(cost) FROM {{table}} WHERE event_time < {{end}}").print()
"""
    began = time.monotonic()
    log = jobctl.PROJECT_ROOT / ".parity" / "bench" / f"read-{namespace}.log"
    proc = jobctl.start_local([str(jobctl.job_python()), "-c", script], log)
    if proc.wait() != 0:
        raise SystemExit(f"read-only job failed; see {log}")
    return time.monotonic() - began


def time_duckdb(raw, end: datetime) -> tuple[float, int]:
    import duckdb

    files = [task.file.file_path.removeprefix("file://") for task in raw.scan().plan_files()]
    began = time.monotonic()
    con = duckdb.connect()
    tiles = con.sql(
        """
        SELECT user_id, epoch_ms(event_time) // 3600000 AS tile, COUNT(*) AS events,
               COUNT(*) FILTER (WHERE event_type = 'impression') AS impressions,
               COUNT(*) FILTER (WHERE event_type = 'click') AS clicks,
               COUNT(*) FILTER (WHERE event_type = 'click' AND device = 'mobile') AS mobile_clicks
        FROM read_parquet(?) WHERE event_time < ?
        GROUP BY ALL
        """,
        params=[files, end],
    ).to_arrow_table()
    return time.monotonic() - began, tiles.num_rows


if __name__ == "__main__":
    raise SystemExit(main())
