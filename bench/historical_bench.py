"""Point-in-time offline reads: parity's get_historical_features against DuckDB, same data, one run.

    .venv/bin/python bench/historical_bench.py [--rows 1000000] [--users 20000] [--days 30] [--no-head]

No stack needed: everything is in memory.

1. Generates hourly user_stats tiles (seeded numpy): each user is active in
   about 7% of the hours, with 1+ impressions, some clicks and mobile clicks
   per active hour. Every hour is closed except a gap (--gap-hours) in the
   middle of the period, so the rows just after it are stale. Then the raw
   archive those tiles came from: every impression and click at a random
   time in its hour (about 4.6 million events at the defaults).
2. Generates --rows entity rows (user_id, event_timestamp), timestamps uniform
   over the period (microseconds, UTC); about 5% of the rows name users with
   no tiles at all (cold).
3. parity: ``get_historical_features`` over every user_stats feature, handed
   the tiles (``tiles=``) and the raw events (``raw=``), so no Iceberg is
   read: only the point-in-time computation is timed. user_stats has a head
   (a freshness), so each row's windows end at its time: tiles up to its hour,
   then its user's events of ``[hour, t)`` with the view's filters.
4. DuckDB: the same windows in SQL over the same Arrow tables, registered in
   DuckDB (no Parquet, no copy): running totals per user and three ASOF joins
   (window end, end - 1d, end - 7d) for the tiles, and running counts over the
   raw events read by two ASOF joins (at t and at the hour) for the head.
   With --no-head both sides compute tile-aligned windows only (the view
   without freshness), and --duckdb-query range offers the plain range join
   instead of ASOF. DuckDB computes the six raw window sums only; parity also
   works out statuses, defaults, the two ratios and the window end.
5. Checks that both agree: every row's served 1d/7d counts equal DuckDB's
   sums (or the default where DuckDB found no tile nor head event), rows
   parity marks present have a DuckDB sum and rows it marks missing have none.
   Exits 1 on any difference.

Each system is timed --repeat times, taking turns, and its median kept: reading
only, never the data generation. parity's numpy/Arrow work runs mostly on one
core; DuckDB uses every core unless --duckdb-threads says otherwise. Prints a
table, the parity/duckdb ratio and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
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


def synthetic_events(rng: np.random.Generator, tiles: pa.Table) -> pa.Table:
    """The raw archive the tiles came from: every impression and click, at a random time in its hour."""
    impressions = tiles.column("impressions").to_numpy()
    clicks = tiles.column("clicks").to_numpy()
    mobile = tiles.column("mobile_clicks").to_numpy()
    per_tile = impressions + clicks
    tile = np.repeat(np.arange(len(per_tile)), per_tile)
    offset = np.arange(int(per_tile.sum())) - np.repeat(np.cumsum(per_tile) - per_tile, per_tile)
    click_index = offset - impressions[tile]
    is_click = click_index >= 0
    is_mobile = is_click & (click_index < mobile[tile])
    times = tiles.column("tile_start").to_numpy()[tile] + rng.integers(0, HOUR_MS, len(tile))
    kinds = pa.DictionaryArray.from_arrays(pa.array(is_click.astype(np.int8)), ["impression", "click"])
    devices = pa.DictionaryArray.from_arrays(pa.array(is_mobile.astype(np.int8)), ["desktop", "mobile"])
    return pa.table(
        {
            "user_id": tiles.column("user_id").take(pa.array(tile)),
            "event_time": pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "event_type": kinds.cast(pa.string()),
            "device": devices.cast(pa.string()),
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


def head_sql(view: FeatureView) -> str:
    """``asof_sql``'s tiles up to the window end, plus the head: each user's events of [window end, t).

    Running counts over the raw events per user (peers included, so tied times
    count alike), read by two ASOF joins, at t and at the window end: their
    difference is the head. A window is present when it has a tile or a head event.
    """
    tail = asof_sql(view)
    running = ", ".join(
        [
            "COUNT(*) OVER w AS n",
            "SUM((event_type = 'impression')::INT) OVER w AS impressions",
            "SUM((event_type = 'click')::INT) OVER w AS clicks",
            "SUM((event_type = 'click' AND device = 'mobile')::INT) OVER w AS mobile_clicks",
        ]
    )
    sums = []
    for window in view.windows:
        label = duration_label(window)
        for agg in view.aggregations:
            head = f"COALESCE(h.{agg.name}, 0) - COALESCE(b.{agg.name}, 0)"
            name = f"{agg.name}_{label}"
            sums.append(
                f"CASE WHEN tail.{name} IS NOT NULL OR COALESCE(h.n, 0) - COALESCE(b.n, 0) > 0 "
                f"THEN (COALESCE(tail.{name}, 0) + {head})::BIGINT END AS {name}"
            )
    return f"""
        WITH tail AS ({tail.replace("ORDER BY f.row_id", "")}),
        ev AS (
            SELECT user_id, epoch_ms(event_time) AS t, {running}
            FROM raw WINDOW w AS (PARTITION BY user_id ORDER BY epoch_ms(event_time))
        ),
        f AS (
            SELECT row_id, user_id, epoch_ms(event_timestamp) AS t,
                   epoch_ms(event_timestamp) // {view.tile_ms} * {view.tile_ms} AS window_end
            FROM frame
        )
        SELECT f.row_id, {", ".join(sums)}
        FROM f
        JOIN tail ON tail.row_id = f.row_id
        ASOF LEFT JOIN ev h ON h.user_id = f.user_id AND f.t > h.t
        ASOF LEFT JOIN ev b ON b.user_id = f.user_id AND f.window_end > b.t
        ORDER BY f.row_id
    """


def _ms(window: timedelta) -> int:
    return int(window.total_seconds() * 1000)


def alternate(
    repeat: int, first: Callable[[], Any], second: Callable[[], Any]
) -> tuple[tuple[float, Any], tuple[float, Any]]:
    """Each side's median time over ``repeat`` runs taken in turns, and its last result.

    Taking turns spreads the machine's noise over both sides alike.
    """
    times: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for _ in range(repeat):
        for side, call in enumerate((first, second)):
            began = time.perf_counter()
            results[side] = call()
            times[side].append(time.perf_counter() - began)
    return (statistics.median(times[0]), results[0]), (statistics.median(times[1]), results[1])


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
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per system, in turns; the median is kept"
    )
    parser.add_argument(
        "--duckdb-query",
        choices=("asof", "range"),
        default="asof",
        help="asof: running totals + ASOF joins; range: range join grouped per row",
    )
    parser.add_argument("--duckdb-threads", type=int, help="DuckDB threads (default: DuckDB's, one per core)")
    parser.add_argument(
        "--no-head",
        action="store_true",
        help="tile-aligned windows only (a view without freshness): no raw events on either side",
    )
    args = parser.parse_args()

    import duckdb

    view = replace(user_stats, freshness=None) if args.no_head else user_stats
    rng = np.random.default_rng(args.seed)
    tiles = synthetic_tiles(rng, args.users, args.days)
    frame = entity_frame(rng, args.users, args.days, args.rows)
    raw = None if args.no_head else synthetic_events(rng, tiles)
    loaded = OfflineTiles(
        view, snapshot_id=None, period_ends_ms=period_ends(args.days, args.gap_hours), arrow=tiles
    )
    print(
        f"{tiles.num_rows:,} tiles of {args.users:,} users over {args.days} days; {args.rows:,} rows"
        + ("" if raw is None else f"; {raw.num_rows:,} raw events for the heads")
    )

    def run_parity() -> pa.Table:
        return get_historical_features(
            frame,
            FEATURES,
            views={view.name: view},
            tiles={view.name: loaded},
            raw=None if raw is None else {view.name: raw},
        ).table

    con = duckdb.connect()
    if args.duckdb_threads:
        con.execute(f"SET threads = {args.duckdb_threads}")
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.register("tiles", tiles)
    con.register("frame", frame.append_column("row_id", pa.array(np.arange(args.rows), pa.int64())))
    if raw is not None:
        if args.duckdb_query != "asof":
            parser.error("the head is measured with --duckdb-query asof; add --no-head for range")
        con.register("raw", raw)
        sql = head_sql(view)
    else:
        sql = asof_sql(view) if args.duckdb_query == "asof" else range_sql(view)
    (parity_s, parity), (duck_s, duck) = alternate(
        args.repeat, run_parity, lambda: con.sql(sql).to_arrow_table()
    )
    con.close()

    problems = differences(view, parity, duck)
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
        "head": raw is not None,
        "raw_events": 0 if raw is None else raw.num_rows,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
