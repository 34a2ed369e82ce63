"""Point-in-time offline reads: parity's get_historical_features against DuckDB, same tiles, one run.

    .venv/bin/python bench/historical_bench.py [--rows 1000000] [--users 20000] [--days 30] [--seed 7]

No stack needed: everything is in memory.

1. Generates hourly user_stats tiles (seeded numpy): each user is active in
   about 7% of the hours, with 1+ impressions, some clicks and mobile clicks
   per active hour. Every hour is closed except a gap (--gap-hours) in the
   middle of the period, so the rows just after it are stale.
2. Generates --rows entity rows (user_id, event_timestamp), timestamps uniform
   over the period (microseconds, UTC); about 5% of the rows name users with
   no tiles at all (cold).
3. parity: ``get_historical_features`` over every user_stats feature, handed
   the tiles as an ``OfflineTiles`` built from the Arrow table (``tiles=``),
   so no Iceberg is read: only the point-in-time computation is timed.
4. DuckDB: the same windows in SQL over the same Arrow tables, registered in
   DuckDB (no Parquet, no copy). By default (--duckdb-query asof) running
   totals per user and three ASOF joins (window end, end - 1d, end - 7d);
   --duckdb-query range is the plain range join (user, tile_start in
   [end - 7d, end - 1h]) grouped back per row. At the defaults asof was about
   10% faster, and its cost does not grow with the tiles in a window.
   DuckDB computes the six raw window sums only; parity also works out
   statuses, defaults, the two ratios and the window end.
5. Checks that both agree: every row's served 1d/7d counts equal DuckDB's
   sums (or the default where DuckDB found no tile), rows parity marks
   present have a DuckDB sum and rows it marks missing have none. Exits 1
   on any difference.

Each system is timed --repeat times (best kept), reading only, never the data
generation. parity's numpy/Arrow work runs mostly on one core; DuckDB uses
every core unless --duckdb-threads says otherwise. Prints a table, the parity/duckdb ratio and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.definition import FeatureView, OnStale, duration_label
from features.user_stats import view as user_stats
from serving.offline import OfflineTiles, get_historical_features

START = datetime(2026, 1, 1, tzinfo=UTC)
HOUR_MS = 3_600_000
# Rows naming users that never had a tile: their features are all defaults.
COLD_SHARE = 0.05
FEATURES = [f"{user_stats.name}:{name}" for name in user_stats.feature_names]


def synthetic_tiles(rng: np.random.Generator, users: int, days: int) -> pa.Table:
    """One row per active (user, hour), ordered by hour as a day-partitioned table reads back."""
    hours = days * 24
    # A beta with mean 2/27: most users are active in a few percent of the hours, some in many more.
    rate = rng.beta(2, 25, users).astype(np.float32)
    active = rng.random((hours, users), dtype=np.float32) < rate
    hour, user = np.nonzero(active)
    count = len(hour)
    impressions = rng.poisson(3, count) + 1
    clicks = rng.binomial(impressions, 0.08)
    mobile_clicks = rng.binomial(clicks, 0.55)
    return pa.table(
        {
            "user_id": user_names(users).take(pa.array(user)),
            "tile_start": pa.array(int(START.timestamp() * 1000) + hour * HOUR_MS, pa.int64()),
            "events": pa.array(impressions + clicks, pa.int64()),
            "impressions": pa.array(impressions, pa.int64()),
            "clicks": pa.array(clicks, pa.int64()),
            "mobile_clicks": pa.array(mobile_clicks, pa.int64()),
        }
    )


def period_ends(days: int, gap_hours: int) -> list[int]:
    """Ends of the closed hours (epoch ms), all but a gap in the middle: the job was down then."""
    start_ms = int(START.timestamp() * 1000)
    hours = range(1, days * 24 + 1)
    gap = range(days * 12 + 1, days * 12 + 1 + gap_hours)
    return [start_ms + h * HOUR_MS for h in hours if h not in gap]


def entity_frame(rng: np.random.Generator, users: int, days: int, rows: int) -> pa.Table:
    cold = max(1, round(users * COLD_SHARE / (1 - COLD_SHARE)))
    user = rng.integers(0, users + cold, rows)
    start_us = int(START.timestamp() * 1_000_000)
    times = rng.integers(start_us, start_us + days * 86_400_000_000, rows)
    return pa.table(
        {
            "user_id": user_names(users + cold).take(pa.array(user)),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )


def user_names(count: int) -> pa.Array:
    return pa.array([f"user-{i}" for i in range(count)], pa.string())


def range_sql(view: FeatureView) -> str:
    """Join every row to its user's tiles in the longest window; shorter windows filter the same rows."""
    longest = max(view.windows)
    sums = []
    for agg in view.aggregations:
        for window in view.windows:
            only = (
                "" if window == longest else f" FILTER (WHERE t.tile_start >= f.window_end - {_ms(window)})"
            )
            sums.append(f"CAST(SUM(t.{agg.name}){only} AS BIGINT) AS {agg.name}_{duration_label(window)}")
    return f"""
        WITH f AS (
            SELECT row_id, user_id, epoch_ms(event_timestamp) // {view.tile_ms} * {view.tile_ms} AS window_end
            FROM frame
        )
        SELECT f.row_id, {", ".join(sums)}
        FROM f LEFT JOIN tiles t
          ON t.user_id = f.user_id
         AND t.tile_start >= f.window_end - {_ms(longest)}
         AND t.tile_start + {view.tile_ms} <= f.window_end
        GROUP BY f.row_id
        ORDER BY f.row_id
    """


def asof_sql(view: FeatureView) -> str:
    """Running totals per user; a window is the total at its last tile minus the total before its first.

    ASOF picks, per row, the user's newest tile starting at or before a bound:
    ``hi`` the last tile that ends by the window end, ``lo_<w>`` the last tile
    that starts before the window does. Counts of tiles tell an empty window
    (NULL, as SUM over no rows gives) from a window of zeros.
    """
    running = ", ".join(
        ["COUNT(*) OVER w AS tiles_seen", *(f"SUM({a.name}) OVER w AS {a.name}" for a in view.aggregations)]
    )
    joins, sums = [], []
    for window in view.windows:
        label = duration_label(window)
        lo = f"lo_{label}"
        joins.append(
            f"ASOF LEFT JOIN running {lo} ON {lo}.user_id = f.user_id "
            f"AND f.window_end - {_ms(window)} > {lo}.tile_start"
        )
        for agg in view.aggregations:
            sums.append(
                f"CASE WHEN hi.tiles_seen - COALESCE({lo}.tiles_seen, 0) > 0 "
                f"THEN (hi.{agg.name} - COALESCE({lo}.{agg.name}, 0))::BIGINT END AS {agg.name}_{label}"
            )
    return f"""
        WITH running AS (
            SELECT user_id, tile_start, {running}
            FROM tiles WINDOW w AS (PARTITION BY user_id ORDER BY tile_start)
        ),
        f AS (
            SELECT row_id, user_id, epoch_ms(event_timestamp) // {view.tile_ms} * {view.tile_ms} AS window_end
            FROM frame
        )
        SELECT f.row_id, {", ".join(sums)}
        FROM f
        ASOF LEFT JOIN running hi ON hi.user_id = f.user_id AND f.window_end - {view.tile_ms} >= hi.tile_start
        {" ".join(joins)}
        ORDER BY f.row_id
    """


def _ms(window: timedelta) -> int:
    return int(window.total_seconds() * 1000)


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    """The shortest of ``repeat`` runs, and the last result (every run computes the same)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - began)
    return best, result


def differences(view: FeatureView, parity: pa.Table, duck: pa.Table) -> list[str]:
    """Where parity's window features disagree with DuckDB's raw sums, one line per feature."""
    problems = []
    for name in view.window_features:
        column = f"{view.name}:{name}"
        served = parity.column(column).to_numpy()
        status = parity.column(f"{column}:status")
        present = pc.equal(status, "present").to_numpy()
        missing = pc.equal(status, "missing").to_numpy()
        found = duck.column(name).is_valid().to_numpy()
        expected = duck.column(name).fill_null(view.defaults[name]).to_numpy()
        # A stale row serves its value under OnStale.SERVE (checked), the default otherwise (not checked).
        checked = present | missing | (view.on_stale is OnStale.SERVE)
        wrong = (checked & (served != expected)) | (present & ~found) | (missing & found)
        if wrong.any():
            rows = np.flatnonzero(wrong)[:5]
            problems.append(
                f"{name}: {int(wrong.sum())} rows differ, e.g. rows {rows.tolist()}: "
                f"parity {served[rows].tolist()} {status.take(pa.array(rows)).to_pylist()}, "
                f"duckdb {duck.column(name).take(pa.array(rows)).to_pylist()}"
            )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows (user, time) to read")
    parser.add_argument("--users", type=int, default=20_000, help="users with tiles")
    parser.add_argument("--days", type=int, default=30, help="days of hourly tiles; rows fall in them")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--gap-hours", type=int, default=6, help="unclosed hours mid-period (stale rows)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per system; the best is kept")
    parser.add_argument(
        "--duckdb-query",
        choices=("asof", "range"),
        default="asof",
        help="asof: running totals + ASOF joins; range: range join grouped per row",
    )
    parser.add_argument("--duckdb-threads", type=int, help="DuckDB threads (default: DuckDB's, one per core)")
    args = parser.parse_args()

    import duckdb

    rng = np.random.default_rng(args.seed)
    tiles = synthetic_tiles(rng, args.users, args.days)
    frame = entity_frame(rng, args.users, args.days, args.rows)
    loaded = OfflineTiles(
        user_stats, snapshot_id=None, period_ends_ms=period_ends(args.days, args.gap_hours), arrow=tiles
    )
    print(f"{tiles.num_rows:,} tiles of {args.users:,} users over {args.days} days; {args.rows:,} rows")

    parity_s, parity = best_of(
        args.repeat,
        lambda: (
            get_historical_features(
                frame, FEATURES, views={user_stats.name: user_stats}, tiles={user_stats.name: loaded}
            ).table
        ),
    )

    con = duckdb.connect()
    if args.duckdb_threads:
        con.execute(f"SET threads = {args.duckdb_threads}")
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.register("tiles", tiles)
    con.register("frame", frame.append_column("row_id", pa.array(np.arange(args.rows), pa.int64())))
    sql = asof_sql(user_stats) if args.duckdb_query == "asof" else range_sql(user_stats)
    duck_s, duck = best_of(args.repeat, lambda: con.sql(sql).to_arrow_table())
    con.close()

    problems = differences(user_stats, parity, duck)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("parity and DuckDB disagree: the timings compare different results", file=sys.stderr)
        return 1
    status = parity.column(f"{user_stats.name}:clicks_7d:status").value_counts().to_pylist()
    mix = ", ".join(f"{s['values']} {s['counts']:,}" for s in status)
    print(f"verified: {len(user_stats.window_features)} window features equal on all rows (7d: {mix})")

    ratio = parity_s / duck_s
    print(f"{'system':>8} {'seconds':>9} {'rows/s':>12}  computes")
    print(f"{'parity':>8} {parity_s:>9.3f} {args.rows / parity_s:>12,.0f}  all {len(FEATURES)} features")
    print(
        f"{'duckdb':>8} {duck_s:>9.3f} {args.rows / duck_s:>12,.0f}  "
        f"{len(user_stats.window_features)} raw window sums ({args.duckdb_query}, {threads} threads)"
    )
    print(f"parity/duckdb: {ratio:.2f}")
    result = {
        "rows": args.rows,
        "parity_s": round(parity_s, 3),
        "duckdb_s": round(duck_s, 3),
        "ratio": round(ratio, 2),
        "tiles": tiles.num_rows,
        "duckdb_query": args.duckdb_query,
        "duckdb_threads": threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
