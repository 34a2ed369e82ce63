"""Window values precomputed in Redis by the sink equal the reference, for every end they claim.

The sink's clock is set by the test, so "now" moves without waiting. Every
read is checked against ``assemble`` over the tiles Redis holds, and the
metric of entities merged at read time shows which path served it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis
from prometheus_client import CollectorRegistry

from serving.assembly import FeatureValue, Status, Tile, assemble, from_ms, to_ms
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from sinks.redis_layout import PRUNED_FIELD, due_key, entity_key, window_key
from sinks.redis_windows import slot_names
from tests.unit.views import spend

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = to_ms(datetime(2026, 3, 1, tzinfo=UTC))
NOW = T0 + 7 * 24 * HOUR + 20 * 60_000  # 20 minutes into the hour after seven days of tiles

FEATURES = [f"spend:{f}" for f in spend.feature_names]


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def random_rows(rng: random.Random, users: int, first_hour: int, hours: int) -> list[TileRow]:
    rows = []
    for u in range(users):
        for hour in sorted(rng.sample(range(first_hour, first_hour + hours), rng.randint(0, min(40, hours)))):
            amounts = [rng.uniform(-50, 100) for _ in range(rng.randint(0, 4))]
            total = 0.0
            for a in amounts:
                total += a
            start = T0 + hour * HOUR
            values = (len(amounts), total, min(amounts, default=None), max(amounts, default=None))
            rows.append(TileRow(f"u{u}", start, start + HOUR, len(amounts) + 1, values))
    return rows


@dataclass
class Env:
    prefix: str
    clock: Clock
    sink: RedisTileSink
    store: OnlineStore
    metrics: ServingMetrics
    client: redis.Redis


@pytest.fixture
def env(isolated):
    clock = Clock(NOW)
    sink = RedisTileSink(spend, isolated.redis, clock=clock)
    sink.open()
    metrics = ServingMetrics(CollectorRegistry())
    store = OnlineStore(isolated.redis, {"spend": spend}, metrics=metrics)
    client = redis.Redis(host=isolated.redis.host, port=isolated.redis.port)
    yield Env(isolated.redis.key_prefix, clock, sink, store, metrics, client)
    sink.close()
    store.close()
    client.close()


def merged(metrics: ServingMetrics) -> float:
    return metrics.registry.get_sample_value("feature_entities_merged_total", {"view": "spend"}) or 0.0


def covered_until(stored: bytes) -> int:
    """The end (epoch ms) of the window ends a stored value covers: its second range's, if any."""
    parts = stored.split(b"|")
    width = len(slot_names(spend))
    return int(parts[2 + width] if len(parts) > 2 + width else parts[1]) * 1000


def check_against_assemble(store: OnlineStore, users: list[str], as_of_ms: int) -> None:
    as_of = from_ms(as_of_ms)
    got = store.get_online_features(FEATURES, [{"user_id": u} for u in users], as_of=as_of)
    completeness = store.completeness(spend)
    for user, values in zip(users, got, strict=True):
        expected = assemble(spend, store.tiles(spend, user), as_of, completeness)
        for name in spend.feature_names:
            assert values[f"spend:{name}"] == expected[name], (user, as_of, name)


def test_values_written_live_serve_every_end_they_hold_for_and_equal_assemble(env):
    sink, store = env.sink, env.store
    rows = random_rows(random.Random(7), users=30, first_hour=0, hours=7 * 24)
    sink.write(rows)
    sink.advance_completeness(T0 + 7 * 24 * HOUR)
    users = [f"u{u}" for u in range(31)]  # u30 has no tiles
    with_tiles = sorted({r.entity for r in rows})

    # At the clock's window end every entity is served precomputed: one HMGET each.
    check_against_assemble(store, users, NOW)
    assert merged(env.metrics) == 0

    # Later ends without a refresh: the values that changed are merged, the rest are served as stored.
    until = {u: covered_until(env.client.get(window_key(env.prefix, spend, u))) for u in with_tiles}
    at = NOW - NOW % HOUR
    for hours in (1, 2, 3, 4, 6, 12, 23, 24, 25, 48, 24 * 7, 24 * 7 + 1, 24 * 8):
        end = at + hours * HOUR
        before = merged(env.metrics)
        check_against_assemble(store, users, end + 60_000)
        assert merged(env.metrics) - before == sum(1 for u in with_tiles if until[u] <= end), hours
    # An end before the one precomputed (a past as_of) is merged too.
    before = merged(env.metrics)
    check_against_assemble(store, users, at - 5 * HOUR)
    assert merged(env.metrics) - before == len(with_tiles)


def test_the_due_set_refreshes_values_as_windows_decay(env):
    sink, store = env.sink, env.store
    rows = random_rows(random.Random(11), users=25, first_hour=6 * 24, hours=24)
    sink.write(rows)
    users = sorted({r.entity for r in rows})
    refreshed = 0
    # No new tiles for nine days: only tiles leaving windows change the values.
    for hour in range(0, 9 * 24, 5):
        env.clock.ms = NOW + hour * HOUR
        refreshed += sink.advance_completeness(env.clock.ms - env.clock.ms % HOUR)
        before = merged(env.metrics)
        check_against_assemble(store, users, env.clock.ms)
        # The next tile end comes before the job's next advance: still served as stored.
        check_against_assemble(store, users, env.clock.ms + HOUR)
        assert merged(env.metrics) == before, f"hour {hour}: a read merged instead of using refreshed values"
    assert refreshed > len(users)
    # Every tile has left every window: nothing is due any more.
    assert env.client.zcard(due_key(env.prefix, spend)) == 0


def test_catching_up_marks_values_out_of_date_and_the_first_fresh_advance_refreshes_them(env):
    sink, store = env.sink, env.store
    old = random_rows(random.Random(13), users=20, first_hour=0, hours=6 * 24)  # all older than staleness
    sink.write(old)
    users = sorted({r.entity for r in old})
    sink.advance_completeness(T0 + 6 * 24 * HOUR)  # still far behind the clock: no refresh
    check_against_assemble(store, users, NOW)
    assert merged(env.metrics) == len(users)

    assert sink.advance_completeness(T0 + 7 * 24 * HOUR) == len(users)  # caught up
    check_against_assemble(store, users, NOW)
    assert merged(env.metrics) == len(users)

    # A late, bigger version of an old tile inside the windows: the values follow at once.
    target = next(r for r in old if r.tile_start_ms >= NOW - 5 * 24 * HOUR)
    sink.write([TileRow(target.entity, target.tile_start_ms, target.tile_end_ms, 999, (998, 1.0, -1e6, 1e6))])
    check_against_assemble(store, users, NOW)
    got = store.get_online_features(["spend:largest_7d"], [{"user_id": target.entity}], as_of=from_ms(NOW))
    assert got[0]["spend:largest_7d"].value == pytest.approx(1e6)


def test_a_read_before_the_pruned_horizon_is_beyond_horizon_and_reads_now_stay_exact(env):
    sink, store = env.sink, env.store
    written: list[TileRow] = []
    horizon_read = from_ms(T0 + 24 * HOUR + 20 * 60_000)  # nine days before the last day's end

    def live_day(day: int) -> None:
        """One day of hourly tiles, written as a caught-up job writes them: clock at the day's end."""
        rows = [
            TileRow("p", start, start + HOUR, 2, (1, float(h % 5), float(h % 5), float(h % 5)))
            for h in range(day * 24, (day + 1) * 24)
            for start in [T0 + h * HOUR]
        ]
        env.clock.ms = T0 + (day + 1) * 24 * HOUR + 20 * 60_000
        sink.write(rows)
        sink.advance_completeness(T0 + (day + 1) * 24 * HOUR)
        written.extend(rows)

    def truth(as_of: datetime) -> dict[str, FeatureValue]:
        every_tile = [Tile(r.tile_start_ms, r.events, r.values) for r in written]
        return assemble(spend, every_tile, as_of, store.completeness(spend))

    for day in range(3):
        live_day(day)
    before = store.get_online_features(FEATURES, [{"user_id": "p"}], as_of=horizon_read)[0]
    assert {v.status for v in before.values()} == {Status.PRESENT}
    assert before == {f"spend:{name}": value for name, value in truth(horizon_read).items()}

    for day in range(3, 10):
        live_day(day)
    assert env.client.hget(entity_key(env.prefix, spend, "p"), PRUNED_FIELD) is not None
    assert min(t.start_ms for t in store.tiles(spend, "p")) == T0 + 2 * 24 * HOUR  # days 0 and 1 pruned

    after = store.get_online_features(FEATURES, [{"user_id": "p"}], as_of=horizon_read)[0]
    assert {v.status for v in after.values()} == {Status.BEYOND_HORIZON}
    assert {name: v.value for name, v in after.items()} == {
        f"spend:{n}": spend.defaults[n] for n in spend.feature_names
    }
    served = env.metrics.registry.get_sample_value(
        "feature_defaults_served_total", {"view": "spend", "reason": "beyond_horizon"}
    )
    assert served == len(FEATURES)

    # Reads whose windows start after the pruned tiles are exact: now (precomputed, one MGET)
    # and a day back (merged).
    for as_of in (from_ms(env.clock.ms), from_ms(env.clock.ms - 24 * HOUR)):
        got = store.get_online_features(FEATURES, [{"user_id": "p"}], as_of=as_of)[0]
        assert got == {f"spend:{name}": value for name, value in truth(as_of).items()}, as_of
        assert got["spend:orders_7d"].status is Status.PRESENT


def test_values_are_never_stored_for_an_end_whose_windows_reach_pruned_tiles(env):
    """Tiles far ahead of the sink's clock: the end it would precompute is beyond the horizon."""
    sink, store = env.sink, env.store
    env.clock.ms = T0 + 24 * HOUR + 20 * 60_000
    sink.write(
        [TileRow("q", T0 + h * HOUR, T0 + (h + 1) * HOUR, 1, (1, 1.0, 1.0, 1.0)) for h in (0, 47, 239)]
    )
    assert env.client.get(window_key(env.prefix, spend, "q")) == b"0|0"
    mark = int(env.client.hget(entity_key(env.prefix, spend, "q"), PRUNED_FIELD))
    assert mark * 1000 == T0 + 47 * HOUR  # the tile at hour 0 was pruned too; the newest counts
    due = env.client.zscore(due_key(env.prefix, spend), "q")
    assert due * 1000 == T0 + (47 + 7 * 24 + 2) * HOUR  # the first end whose windows start after it
    got = store.get_online_features(FEATURES, [{"user_id": "q"}], as_of=from_ms(env.clock.ms))[0]
    assert {v.status for v in got.values()} == {Status.BEYOND_HORIZON}
    assert merged(env.metrics) == 1
