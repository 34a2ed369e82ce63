"""get_historical_features (column-wise) equals assemble row by row, and never looks past t."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features.definition import FeatureView, OnStale
from parity.errors import ReadError
from serving.assembly import Tile, to_ms
from serving.offline import OfflineTiles, get_historical_features
from tests.unit import views

# Views without a head (no freshness): their windows end at a tile boundary, and
# assemble is the reference. Windows with a head are tested in test_serving_head.py.
spend = replace(views.spend, freshness=None)
user_stats = replace(views.user_stats, freshness=None)
HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)

VIEWS = {"spend": spend, "user_stats": user_stats}


def random_spend_tiles(rng: random.Random, entities: int) -> dict[str, list[Tile]]:
    out = {}
    for e in range(entities):
        starts = sorted(rng.sample(range(0, 24 * 12), rng.randint(0, 90)))
        tiles = []
        for s in starts:
            orders = rng.randint(0, 5)
            amounts = [round(rng.uniform(0, 100), rng.randint(0, 6)) for _ in range(orders)]
            total = 0.0
            for a in amounts:
                total += a
            tiles.append(
                Tile(
                    to_ms(T0) + s * HOUR,
                    orders,
                    (orders, total, min(amounts) if amounts else None, max(amounts) if amounts else None),
                )
            )
        out[f"e{e}"] = tiles
    return out


def random_rows(rng: random.Random, entities: int, n: int) -> pa.Table:
    keys = [f"e{rng.randint(0, entities)}" for _ in range(n)]  # e<entities> has no tiles
    times = [T0 + timedelta(seconds=rng.randint(-86400, 14 * 86400)) for _ in range(n)]
    return pa.table({"user_id": keys, "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC"))})


def compare(view: FeatureView, loaded: OfflineTiles, rows: pa.Table) -> int:
    features = [f"{view.name}:{f}" for f in view.feature_names]
    result = get_historical_features(rows, features, views={view.name: view}, tiles={view.name: loaded}).table
    checked = 0
    for i, (key, when) in enumerate(
        zip(rows["user_id"].to_pylist(), rows["event_timestamp"].to_pylist(), strict=True)
    ):
        expected = loaded.features(key, when)
        for name in view.feature_names:
            got_value = result[f"{view.name}:{name}"][i].as_py()
            got_status = result[f"{view.name}:{name}:status"][i].as_py()
            want = expected[name]
            assert (got_value, got_status) == (want.value, want.status.value), (key, when, name)
            checked += 1
        assert result[f"{view.name}:window_end"][i].as_py() == expected[view.feature_names[0]].window_end
    return checked


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", list(OnStale))
def test_every_kind_equals_assemble_row_by_row(seed, policy):
    rng = random.Random(seed)
    view = replace(spend, on_stale=policy)
    tiles = random_spend_tiles(rng, 30)
    # Progress with a gap, so rows fall in fresh, stale and before-any-progress periods.
    ends = [to_ms(T0) + h * HOUR for h in range(1, 24 * 12) if not 100 < h < 130]
    loaded = OfflineTiles(view, snapshot_id=7, by_entity=tiles, period_ends_ms=ends)
    assert compare(view, loaded, random_rows(rng, 30, 600)) == 600 * len(view.feature_names)


def test_user_stats_equals_assemble_and_keeps_integer_counts():
    rng = random.Random(5)
    tiles = {
        f"e{e}": [
            Tile(to_ms(T0) + s * HOUR, 3, (rng.randint(0, 9), rng.randint(0, 2)))
            for s in sorted(rng.sample(range(0, 24 * 10), 40))
        ]
        for e in range(20)
    }
    loaded = OfflineTiles(user_stats, 1, tiles, [to_ms(T0) + h * HOUR for h in range(1, 24 * 10)])
    rows = random_rows(rng, 20, 400)
    compare(user_stats, loaded, rows)
    result = get_historical_features(
        rows, ["user_stats:clicks_7d"], views=VIEWS, tiles={"user_stats": loaded}
    )
    assert result.table.schema.field("user_stats:clicks_7d").type == pa.int64()
    assert result.snapshot_ids == {"user_stats": 1}


def test_nothing_from_a_tile_ending_after_t_leaks_in():
    t = T0 + timedelta(hours=10, minutes=30)
    past = Tile(to_ms(T0) + 9 * HOUR, 1, (1, 0))  # [09:00, 10:00): ended before t
    running = Tile(to_ms(T0) + 10 * HOUR, 1000, (1000, 1000))  # [10:00, 11:00): still open at t
    future = Tile(to_ms(T0) + 30 * HOUR, 1000, (1000, 1000))
    # The watermark 11:00 (after t) must not be used either: at t only 10:00 has closed.
    loaded = OfflineTiles(
        user_stats, 1, {"u": [past, running, future]}, [to_ms(T0) + h * HOUR for h in range(1, 40)]
    )
    rows = pa.table(
        {
            "user_id": ["u", "u", "u"],
            "event_timestamp": pa.array(
                [t, T0 + timedelta(hours=11), T0 + timedelta(hours=10) - timedelta(microseconds=1)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    table = get_historical_features(
        rows, ["user_stats:impressions_1d", "user_stats:clicks_1d"], views=VIEWS, tiles={"user_stats": loaded}
    ).table
    assert table["user_stats:impressions_1d"].to_pylist() == [1, 1001, 0]
    assert table["user_stats:clicks_1d"].to_pylist() == [0, 1000, 0]
    assert table["user_stats:impressions_1d:status"].to_pylist() == ["present", "present", "missing"]
    # The same rows with every tile ending after its t removed give the same answer.
    for i, when in enumerate(rows["event_timestamp"].to_pylist()):
        cut = [x for x in loaded.by_entity["u"] if x.start_ms + HOUR <= to_ms(when)]
        ends = [e for e in loaded.period_ends_ms if e <= to_ms(when)]
        alone = OfflineTiles(user_stats, 1, {"u": cut}, ends)
        single = get_historical_features(
            rows.slice(i, 1), ["user_stats:impressions_1d"], views=VIEWS, tiles={"user_stats": alone}
        ).table
        assert single["user_stats:impressions_1d"].to_pylist() == [
            table["user_stats:impressions_1d"][i].as_py()
        ]


def test_stale_and_cold_start_follow_the_view_policy():
    tiles = {"u": [Tile(to_ms(T0), 4, (3, 1))]}
    loaded = OfflineTiles(user_stats, 1, tiles, [to_ms(T0) + HOUR])  # nothing closed after 01:00
    rows = pa.table(
        {
            "user_id": ["u", "cold", "u"],
            "event_timestamp": pa.array(
                [T0 + timedelta(hours=5), T0 + timedelta(hours=5), T0 + timedelta(hours=2)],
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )
    features = ["user_stats:clicks_1d", "user_stats:click_rate_7d"]
    served = get_historical_features(rows, features, views=VIEWS, tiles={"user_stats": loaded}).table
    assert served["user_stats:clicks_1d"].to_pylist() == [1, 0, 1]
    assert served["user_stats:clicks_1d:status"].to_pylist() == ["stale", "stale", "present"]
    strict = replace(user_stats, on_stale=OnStale.DEFAULT)
    loaded_strict = OfflineTiles(strict, 1, tiles, [to_ms(T0) + HOUR])
    defaulted = get_historical_features(
        rows, features, views={"user_stats": strict}, tiles={"user_stats": loaded_strict}
    ).table
    assert defaulted["user_stats:clicks_1d"].to_pylist() == [0, 0, 1]
    assert defaulted["user_stats:click_rate_7d"].to_pylist() == [0.02, 0.02, 1 / 3]


def test_pandas_frames_are_accepted():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user_id": ["u"], "event_timestamp": [pd.Timestamp("2026-01-01T05:00Z")]})
    loaded = OfflineTiles(user_stats, 3, {"u": [Tile(to_ms(T0), 4, (3, 1))]}, [to_ms(T0) + 5 * HOUR])
    result = get_historical_features(
        frame, ["user_stats:clicks_1d"], views=VIEWS, tiles={"user_stats": loaded}
    )
    assert result.table["user_stats:clicks_1d"].to_pylist() == [1]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (pa.table({"event_timestamp": pa.array([T0], pa.timestamp("ms", tz="UTC"))}), "lacks the join key"),
        (
            pa.table({"user_id": [1], "event_timestamp": pa.array([T0], pa.timestamp("ms", tz="UTC"))}),
            "must hold strings",
        ),
        (
            pa.table(
                {"user_id": ["u"], "event_timestamp": pa.array([T0.replace(tzinfo=None)], pa.timestamp("ms"))}
            ),
            "timezone-aware",
        ),
        (pa.table({"user_id": ["u"]}), "lacks the timestamp column"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(rows, message):
    loaded = OfflineTiles(user_stats, 1, {}, [])
    with pytest.raises(ReadError, match=message):
        get_historical_features(rows, ["user_stats:clicks_1d"], views=VIEWS, tiles={"user_stats": loaded})


def test_unknown_feature_is_refused():
    with pytest.raises(ReadError, match="has no 'clicks_2d'"):
        get_historical_features(pa.table({"user_id": ["u"]}), ["user_stats:clicks_2d"], views=VIEWS, tiles={})
