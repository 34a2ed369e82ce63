"""check_skew at now: online reads with the head against offline reads at the same instant."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from serving.assembly import FeatureValue, Status, Tile, from_ms, to_ms
from serving.offline import OfflineTiles, get_historical_features
from serving.skew import check_skew
from tests.unit.views import user_stats

HOUR = 3_600_000
T0 = to_ms(datetime(2026, 5, 1, tzinfo=UTC))
NOW = T0 + 30 * HOUR + 123_456  # inside a tile, past the closed periods
USERS = ["a", "b", "c"]
FEATURES = [f"user_stats:{f}" for f in user_stats.feature_names]


def archive() -> pa.Table:
    """Clicks of the open periods and of the head, one per user and hour from 24:00 on."""
    times = [T0 + h * HOUR + 60_000 for h in range(24, 31) for _ in USERS]
    return pa.table(
        {
            "user_id": [u for _ in range(24, 31) for u in USERS],
            "event_time": pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "event_type": ["click"] * len(times),
        }
    )


def offline() -> OfflineTiles:
    tiles = {u: [Tile(T0 + h * HOUR, 2, (1, 1)) for h in range(20, 24)] for u in USERS}
    loaded = OfflineTiles(user_stats, 5, tiles, [T0 + h * HOUR for h in range(1, 25)])
    loaded.archive = lambda low, high, pin: (archive(), 9)
    return loaded


class OnlineAtNow:
    """Serves what offline says at NOW, with one value changed, as a read at now would."""

    def __init__(self, off_by: dict[tuple[str, str], int]) -> None:
        self.off_by = off_by
        self.as_of: list[datetime | None] = []

    def completeness(self, view):
        return T0 + 24 * HOUR

    def sample_entities(self, view, count):
        return USERS

    def get_online_features(self, features, rows, as_of=None):
        self.as_of.append(as_of)
        frame = pa.table(
            {
                "user_id": [r["user_id"] for r in rows],
                "event_timestamp": pa.array([NOW] * len(rows), pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            }
        )
        table = get_historical_features(
            frame, features, views={"user_stats": user_stats}, tiles={"user_stats": offline()}
        ).table
        out = []
        for i, row in enumerate(rows):
            values = {}
            for ref in features:
                value = table.column(ref)[i].as_py() + self.off_by.get((row["user_id"], ref), 0)
                status = Status(table.column(f"{ref}:status")[i].as_py())
                values[ref] = FeatureValue(value, status, from_ms(NOW))
            out.append(values)
        return out


def test_at_now_equal_stores_compare_equal_at_the_read_instant():
    store = OnlineAtNow({})
    report = check_skew(user_stats, store, offline(), sample=10, seed=1, at_now=True)
    assert store.as_of == [None], "at now, the online read is a read at now (with the head)"
    assert report.as_of == from_ms(NOW)
    assert (report.sampled, report.equal, report.differing, report.largest) == (3, 3, 0, {})


def test_a_head_that_differs_is_counted_with_its_size():
    store = OnlineAtNow({("b", "user_stats:clicks_1d"): 3, ("b", "user_stats:clicks_7d"): 3})
    report = check_skew(user_stats, store, offline(), sample=10, seed=1, at_now=True)
    assert (report.equal, report.differing) == (2, 1)
    assert report.largest == {"clicks_1d": 3.0, "clicks_7d": 3.0}
    assert "clicks_1d off by up to 3" in report.line()
    assert report.examples[0]["entity"] == "b"


def test_at_the_watermark_the_read_is_tile_aligned_at_it():
    store = OnlineAtNow({})
    check_skew(user_stats, store, offline(), sample=10, seed=1)
    assert store.as_of == [from_ms(T0 + 24 * HOUR)]
