"""Offline windows with a head: closed tiles up to C, the raw archive after it, equal to the raw truth.

The reference here shares nothing with serving.head: it filters the raw events
of ``[floor(t) - W, t)`` in plain Python and aggregates them.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features.definition import FeatureView, OnStale
from parity.errors import ReadError
from serving.assembly import Tile, from_ms, to_ms
from serving.head import needed_columns
from serving.offline import OfflineTiles, get_historical_features
from tests.unit.views import spend, user_stats

HOUR = 3_600_000
T0 = to_ms(datetime(2026, 3, 1, tzinfo=UTC))
CLOSED_HOURS = 48  # the progress table has closed every period up to T0 + 48 h


def random_events(rng: random.Random, entities: int, count: int) -> list[dict]:
    events = []
    for _ in range(count):
        amount = None if rng.random() < 0.2 else float(rng.randint(-50, 500))
        events.append(
            {
                "user_id": f"e{rng.randrange(entities)}",
                "event_time": T0 + rng.randrange(0, 72 * HOUR, 1000),
                "event_type": rng.choice(["click", "impression", "impression", None]),
                "amount": amount,
            }
        )
    return events


def raw_table(events: list[dict]) -> pa.Table:
    shuffled = list(events)
    random.Random(0).shuffle(shuffled)  # the archive is in no particular order
    return pa.table(
        {
            "user_id": [e["user_id"] for e in shuffled],
            "event_time": pa.array([e["event_time"] for e in shuffled], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "event_type": [e["event_type"] for e in shuffled],
            "amount": pa.array([e["amount"] for e in shuffled], pa.float64()),
            "kafka_offset": pa.array(range(len(shuffled)), pa.int64()),
        }
    )


def truth(view: FeatureView, events: list[dict], low: int, high: int) -> dict[str, float | int | None]:
    """Each aggregation over the events of [low, high), or None where the window has no event."""
    inside = [e for e in events if low <= e["event_time"] < high]
    out: dict[str, float | int | None] = {}
    for agg in view.aggregations:
        if agg.where == "event_type = 'impression'":
            chosen = [e for e in inside if e["event_type"] == "impression"]
        elif agg.where == "event_type = 'click'":
            chosen = [e for e in inside if e["event_type"] == "click"]
        else:
            assert agg.where is None
            chosen = inside
        amounts = [e["amount"] for e in chosen if e["amount"] is not None]
        if not inside:
            out[agg.name] = None
        elif agg.kind.name == "COUNT":
            out[agg.name] = len(chosen)
        elif agg.kind.name == "SUM":
            out[agg.name] = float(sum(amounts))
        elif agg.kind.name == "MIN":
            out[agg.name] = min(amounts) if amounts else None
        else:
            out[agg.name] = max(amounts) if amounts else None
    return out


def closed_tiles(view: FeatureView, events: list[dict], *, leave_out: set[int] = frozenset()) -> OfflineTiles:
    """What the job committed: tiles of the closed hours, each from the truth of its hour."""
    by_entity: dict[str, list[Tile]] = {}
    for entity in sorted({e["user_id"] for e in events}):
        mine = [e for i, e in enumerate(events) if e["user_id"] == entity and i not in leave_out]
        for hour in range(CLOSED_HOURS):
            start = T0 + hour * HOUR
            values = truth(view, mine, start, start + HOUR)
            count = sum(start <= e["event_time"] < start + HOUR for e in mine)
            if count:
                tile = Tile(start, count, tuple(values[a.name] for a in view.aggregations))
                by_entity.setdefault(entity, []).append(tile)
    ends = [T0 + h * HOUR for h in range(1, CLOSED_HOURS + 1)]
    return OfflineTiles(view, 3, by_entity, ends)


def expected(view: FeatureView, events: list[dict], entity: str, t: int) -> dict[str, tuple]:
    mine = [e for e in events if e["user_id"] == entity]
    floor = t - t % view.tile_ms
    closed = [T0 + h * HOUR for h in range(1, CLOSED_HOURS + 1) if T0 + h * HOUR <= t]
    stale = bool(closed) and closed[-1] < t - view.max_staleness // timedelta(milliseconds=1)
    raw = {}
    for window in view.windows:
        values = truth(view, mine, floor - window // timedelta(milliseconds=1), t)
        for agg in view.aggregations:
            raw[f"{agg.name}_{int(window.total_seconds() // 3600)}"] = values[agg.name]
    window = {}
    for name in view.window_features:
        stem, label = name.rsplit("_", 1)
        window[name] = raw[f"{stem}_{ {'3h': 3, '1d': 24, '7d': 168}[label] }"]
    out = {name: _served(view, name, value, stale) for name, value in window.items()}
    for ratio in view.derived:
        num, den = window[ratio.numerator], window[ratio.denominator]
        value = None if num is None or den is None else (ratio.on_zero if den == 0 else num / den)
        out[ratio.name] = _served(view, ratio.name, value, stale)
    return out


def _served(view: FeatureView, name: str, value, stale: bool) -> tuple:
    if value is None:
        return (view.defaults[name], "stale" if stale else "missing")
    if stale and view.on_stale is OnStale.DEFAULT:
        return (view.defaults[name], "stale")
    return (value, "stale" if stale else "present")


def rows_at(rng: random.Random, events: list[dict], entities: int, count: int) -> pa.Table:
    times = []
    for _ in range(count):
        pick = rng.random()
        if pick < 0.2:
            times.append(rng.choice(events)["event_time"])  # exactly at an event: it is after t's window
        elif pick < 0.3:
            times.append(T0 + rng.randrange(0, 73) * HOUR)  # a tile boundary: the head is empty
        else:
            times.append(T0 + rng.randrange(-HOUR, 73 * HOUR))
    keys = [f"e{rng.randrange(entities + 1)}" for _ in range(count)]  # e<entities> has no events
    return pa.table(
        {"user_id": keys, "event_timestamp": pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))}
    )


def check(view: FeatureView, events: list[dict], loaded: OfflineTiles, rows: pa.Table) -> None:
    features = [f"{view.name}:{f}" for f in view.feature_names]
    result = get_historical_features(
        rows, features, views={view.name: view}, tiles={view.name: loaded}, raw={view.name: raw_table(events)}
    ).table
    for i, (entity, when) in enumerate(
        zip(rows["user_id"].to_pylist(), rows["event_timestamp"].to_pylist(), strict=True)
    ):
        t = to_ms(when)
        want = expected(view, events, entity, t)
        for name in view.feature_names:
            got = (result[f"{view.name}:{name}"][i].as_py(), result[f"{view.name}:{name}:status"][i].as_py())
            assert got == want[name], (entity, from_ms(t).isoformat(), name)
        assert result[f"{view.name}:window_end"][i].as_py() == when


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("policy", list(OnStale))
def test_every_kind_equals_the_raw_truth_at_any_instant(seed, policy):
    rng = random.Random(seed)
    view = replace(spend, on_stale=policy)
    events = random_events(rng, 8, 1500)
    check(view, events, closed_tiles(view, events), rows_at(rng, events, 8, 400))


def test_filters_run_over_the_archive_as_the_job_runs_them():
    rng = random.Random(11)
    events = random_events(rng, 5, 1000)
    check(user_stats, events, closed_tiles(user_stats, events), rows_at(rng, events, 5, 300))


def test_with_no_closed_period_every_tile_comes_from_the_archive():
    rng = random.Random(4)
    events = random_events(rng, 4, 400)
    empty = OfflineTiles(user_stats, None, {}, [])
    rows = rows_at(rng, events, 4, 100)
    result = get_historical_features(
        rows,
        ["user_stats:clicks_7d"],
        views={"user_stats": user_stats},
        tiles={"user_stats": empty},
        raw={"user_stats": raw_table(events)},
    ).table
    for i, (entity, when) in enumerate(
        zip(rows["user_id"].to_pylist(), rows["event_timestamp"].to_pylist(), strict=True)
    ):
        t = to_ms(when)
        mine = [e for e in events if e["user_id"] == entity]
        clicks = truth(user_stats, mine, t - t % HOUR - 7 * 24 * HOUR, t)["clicks"]
        assert result["user_stats:clicks_7d"][i].as_py() == (0 if clicks is None else clicks)


def test_closed_tiles_win_over_the_archive_and_late_events_count_in_the_head():
    """The table's tiles are read as they are, and the archive fills in what they lack from C on.

    A late event the job left out of a closed tile stays out; in the head it counts (the replay rule).
    """
    late_in_closed = {"user_id": "u", "event_time": T0 + 10 * HOUR + 5, "event_type": "click", "amount": 1.0}
    in_head = {"user_id": "u", "event_time": T0 + 50 * HOUR + 5, "event_type": "click", "amount": 1.0}
    kept = {"user_id": "u", "event_time": T0 + 9 * HOUR, "event_type": "click", "amount": 1.0}
    events = [late_in_closed, in_head, kept]
    loaded = closed_tiles(user_stats, events, leave_out={0})
    # A tile past C (committed before its period's progress) is closed, so it is used as it is;
    # the archive fills in only the periods and entities the table lacks.
    loaded.by_entity["u"].append(Tile(T0 + 49 * HOUR, 1000, (0, 1000)))
    rows = pa.table(
        {
            "user_id": ["u", "u"],
            "event_timestamp": pa.array([T0 + 10 * HOUR + 60_000, T0 + 50 * HOUR + 60_000], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
        }
    )
    result = get_historical_features(
        rows,
        ["user_stats:clicks_1d"],
        views={"user_stats": user_stats},
        tiles={"user_stats": loaded},
        raw={"user_stats": raw_table(events)},
    ).table
    # 10:01: the closed 09:00 tile (1) and the head [10:00, 10:01) from the archive (1, the late one).
    # 50:01: the tiles of [26:00, 48:00) hold nothing, the table's 49:00 tile 1000, the archive's
    # 48:00 tile nothing and the head [50:00, 50:01) in_head.
    assert result["user_stats:clicks_1d"].to_pylist() == [2, 1001]


def test_a_head_without_its_events_is_refused_by_name():
    loaded = OfflineTiles(user_stats, 1, {}, [T0 + HOUR])
    rows = pa.table(
        {
            "user_id": ["u"],
            "event_timestamp": pa.array([T0 + 90_000], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        }
    )
    with pytest.raises(ReadError, match=r"raw=\{'user_stats': \.\.\.\}"):
        get_historical_features(
            rows, ["user_stats:clicks_1d"], views={"user_stats": user_stats}, tiles={"user_stats": loaded}
        )
    # At a tile boundary inside the closed periods the head is empty: no archive needed.
    at_boundary = rows.set_column(
        1, "event_timestamp", pa.array([T0 + HOUR], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    )
    get_historical_features(
        at_boundary, ["user_stats:clicks_1d"], views={"user_stats": user_stats}, tiles={"user_stats": loaded}
    )


def test_the_archive_columns_read_are_the_ones_the_view_needs():
    assert needed_columns(user_stats) == ["user_id", "event_time", "event_type"]
    assert needed_columns(spend) == ["user_id", "event_time", "amount"]
