"""The online read path without a network: parsing, refusals, statuses, breaker and metrics."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client import CollectorRegistry

from parity.config import RedisConfig
from parity.errors import ReadError
from serving import online
from serving.assembly import Status, assemble, to_ms
from serving.breaker import BreakerState
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from tests.unit.test_serving_fakes import FakeRedis, down
from tests.unit.views import spend, user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VIEWS = {"user_stats": user_stats, "spend": spend}
ALL = [f"user_stats:{f}" for f in user_stats.feature_names] + [f"spend:{f}" for f in spend.feature_names]


@pytest.fixture
def fake(monkeypatch):
    client = FakeRedis(VIEWS, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    return client


def make_store(**serving):
    metrics = ServingMetrics(CollectorRegistry())
    cfg = ServingConfig(**{"breaker_failures": 3, "breaker_cooldown_s": 0.2, **serving})
    return OnlineStore(RedisConfig(key_prefix="t"), VIEWS, serving=cfg, metrics=metrics), metrics


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def fill(fake, rng, users):
    for u in range(users):
        for s in sorted(rng.sample(range(0, 24 * 10), rng.randint(0, 60))):
            start = to_ms(T0) + s * HOUR
            fake.put(
                user_stats, TileRow(f"u{u}", start, start + HOUR, 4, (rng.randint(0, 3), rng.randint(0, 1)))
            )
            amount = round(rng.uniform(0, 50), 3)
            fake.put(spend, TileRow(f"u{u}", start, start + HOUR, 1, (1, amount, amount, None)))
    fake.set_completeness(user_stats, to_ms(T0) + 24 * 10 * HOUR)
    fake.set_completeness(spend, to_ms(T0) + 24 * 8 * HOUR)


def test_out_of_date_values_are_merged_in_a_second_round_trip_and_equal_assemble(fake):
    rng = random.Random(3)
    fill(fake, rng, users=150)  # more than one script call per view (CHUNK entities each)
    store, metrics = make_store()
    rows = [{"user_id": f"u{u}"} for u in range(151)]  # u150 has no tiles
    for _ in range(5):
        as_of = T0 + timedelta(minutes=rng.randint(0, 12 * 24 * 60))
        before = fake.round_trips
        got = store.get_online_features(ALL, rows, as_of=as_of)
        assert fake.round_trips == before + 2
        for view in (user_stats, spend):
            completeness = int(fake.strings[f"t:{{{view.name}:v1}}:completeness"])
            for row, values in zip(rows, got, strict=True):
                expected = assemble(view, store.tiles(view, row["user_id"]), as_of, completeness)
                for name in view.feature_names:
                    assert values[f"{view.name}:{name}"] == expected[name], (row, name)
    assert sample(metrics, "feature_fetch_latency_seconds_count", source="redis") == 5
    assert sample(metrics, "feature_defaults_served_total", view="user_stats", reason="missing") > 0
    with_tiles = sum(1 for key in fake.hashes if key.startswith("t:{user_stats:"))
    assert sample(metrics, "feature_entities_read_total", view="user_stats") == 5 * 151
    assert sample(metrics, "feature_entities_merged_total", view="user_stats") == 5 * with_tiles


def test_precomputed_values_serve_the_ends_they_hold_for_and_the_rest_is_merged(fake):
    rng = random.Random(4)
    fill(fake, rng, users=60)
    at = to_ms(T0) + 200 * HOUR
    users = [f"u{u}" for u in range(61)]  # u60 has no tiles: no hash, nothing to merge
    until = {(view.name, u): fake.precompute(view, u, at) for view in (user_stats, spend) for u in users[:60]}
    store, metrics = make_store()
    rows = [{"user_id": u} for u in users]
    merged_before = 0
    for hours in (-1, 0, 0.5, 1, 2, 3, 5, 8, 13, 24, 25, 60, 200):
        as_of_ms = at + int(hours * HOUR)
        as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
        end = as_of_ms - as_of_ms % HOUR
        expect_merged = {
            name: sum(1 for (v, _), u in until.items() if v == name and not at <= end < u) for name in VIEWS
        }
        before = fake.round_trips
        got = store.get_online_features(ALL, rows, as_of=as_of)
        assert fake.round_trips == before + (2 if any(expect_merged.values()) else 1), hours
        for view in (user_stats, spend):
            completeness = int(fake.strings[f"t:{{{view.name}:v1}}:completeness"])
            for row, values in zip(rows, got, strict=True):
                expected = assemble(view, store.tiles(view, row["user_id"]), as_of, completeness)
                for name in view.feature_names:
                    assert values[f"{view.name}:{name}"] == expected[name], (row, name, hours)
        merged = sample(metrics, "feature_entities_merged_total", view="user_stats")
        assert merged - merged_before == expect_merged["user_stats"], hours
        merged_before = merged
    assert 0 < merged_before < 13 * 60  # both paths were taken


@pytest.mark.parametrize(
    ("features", "rows", "message"),
    [
        (["nope:clicks_7d"], [{"user_id": "u"}], "unknown view 'nope'"),
        (["user_stats:clicks_2d"], [{"user_id": "u"}], "has no 'clicks_2d'"),
        (["clicks_7d"], [{"user_id": "u"}], "must be written <view>:<feature>"),
        (["user_stats:clicks_7d"], [{"user": "u"}], "lacks the join key 'user_id'"),
        (["user_stats:clicks_7d"], [{"user_id": 7}], "must be a non-empty string, got int 7"),
        (["user_stats:clicks_7d"], [{"user_id": ""}], "must be a non-empty string"),
        (["user_stats:clicks_7d"], ["u1"], "must be a mapping"),
        (["user_stats:clicks_7d"], [{"user_id": "u\ud800"}], r"lone surrogate \(\\ud800\)"),
        (["user_stats:clicks_7d"], [{"user_id": "u\x00"}], "contains NUL"),
        (["user_stats:clicks_7d"], [{"user_id": "é" * 129}], "258 bytes long; the limit is 256"),
    ],
)
def test_bad_requests_are_refused_before_redis_is_asked(fake, features, rows, message):
    store, _ = make_store()
    with pytest.raises(ReadError, match=message):
        store.get_online_features(features, rows)
    assert fake.round_trips == 0


def test_naive_as_of_is_refused(fake):
    store, _ = make_store()
    with pytest.raises(ValueError, match="naive datetime"):
        store.get_online_features(["user_stats:clicks_7d"], [{"user_id": "u"}], as_of=datetime(2026, 1, 1))


def test_redis_down_serves_defaults_with_status_error_and_counts(fake):
    store, metrics = make_store()
    fake.fail = down()
    got = store.get_online_features(["user_stats:click_rate_7d", "spend:amount_1d"], [{"user_id": "u"}] * 2)
    assert [v.status for row in got for v in row.values()] == [Status.ERROR] * 4
    assert got[0]["user_stats:click_rate_7d"].value == 0.02
    assert sample(metrics, "feature_fetch_errors_total", source="redis", reason="unavailable") == 1
    assert sample(metrics, "feature_defaults_served_total", view="user_stats", reason="error") == 2


def test_breaker_fails_fast_after_n_failures_then_probes_once_and_recovers(fake):
    store, metrics = make_store()
    fake.fail = down()
    request = (["user_stats:clicks_7d"], [{"user_id": "u"}])
    for _ in range(3):
        store.get_online_features(*request)
    assert fake.round_trips == 3
    assert store.breaker_state is BreakerState.OPEN
    assert sample(metrics, "feature_fetch_circuit_open", source="redis") == 1
    for _ in range(50):  # a thundering herd: nobody reaches Redis
        assert store.get_online_features(*request)[0]["user_stats:clicks_7d"].status is Status.ERROR
    assert fake.round_trips == 3
    assert sample(metrics, "feature_fetch_errors_total", source="redis", reason="circuit_open") == 50

    time.sleep(0.25)  # the cool-down passes: one probe, still failing, opens it again
    store.get_online_features(*request)
    store.get_online_features(*request)
    assert fake.round_trips == 4
    assert store.breaker_state is BreakerState.OPEN

    time.sleep(0.25)
    fake.fail = None  # Redis is back: the probe succeeds and closes the breaker
    assert store.get_online_features(*request)[0]["user_stats:clicks_7d"].status is Status.MISSING
    assert store.breaker_state is BreakerState.CLOSED
    store.get_online_features(*request)
    assert fake.round_trips == 6
    assert sample(metrics, "feature_fetch_circuit_open", source="redis") == 0


def test_only_store_failures_count_toward_the_breaker(fake, monkeypatch):
    store, metrics = make_store()
    monkeypatch.setattr(online, "id_problem", lambda text: None)  # as if a bad id got past validation
    bad = (["user_stats:clicks_7d"], [{"user_id": "u\ud800"}])
    for _ in range(10):
        with pytest.raises(UnicodeEncodeError):
            store.get_online_features(*bad)
    assert store.breaker_state is BreakerState.CLOSED
    assert sample(metrics, "feature_fetch_errors_total", source="redis", reason="unavailable") == 0
    fake.fail = redis.DataError("Invalid input of type: 'NoneType'")  # refused before sending
    for _ in range(5):
        with pytest.raises(redis.DataError):
            store.get_online_features(["user_stats:clicks_7d"], [{"user_id": "u"}])
    assert store.breaker_state is BreakerState.CLOSED

    # While half-open, the one probe ends even when its error is not the store's.
    fake.fail = down()
    for _ in range(3):
        store.get_online_features(["user_stats:clicks_7d"], [{"user_id": "u"}])
    assert store.breaker_state is BreakerState.OPEN
    time.sleep(0.25)
    fake.fail = None
    with pytest.raises(UnicodeEncodeError):
        store.get_online_features(*bad)
    assert store.breaker_state is BreakerState.OPEN  # not stuck half-open waiting for the probe
    time.sleep(0.25)
    assert store.get_online_features(["user_stats:clicks_7d"], [{"user_id": "u"}])
    assert store.breaker_state is BreakerState.CLOSED


def test_timeouts_count_under_their_own_reason(fake):
    store, metrics = make_store()
    fake.fail = redis.TimeoutError("Timeout reading from socket")
    store.get_online_features(["user_stats:clicks_7d"], [{"user_id": "u"}])
    assert sample(metrics, "feature_fetch_errors_total", source="redis", reason="timeout") == 1


def test_client_is_bounded_and_never_retries():
    client = online.connect(RedisConfig(port=1), timeout_s=0.05)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.05
        assert kwargs["socket_connect_timeout"] == 0.05
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert time.monotonic() - started < 1.0
    finally:
        client.close()


def test_metric_labels_never_carry_entity_ids(fake):
    fill(fake, random.Random(1), users=3)
    store, metrics = make_store()
    store.get_online_features(ALL, [{"user_id": "u0"}, {"user_id": "u1"}])
    fake.fail = down()
    store.get_online_features(ALL, [{"user_id": "u2"}])
    for family in metrics.registry.collect():
        for s in family.samples:
            assert not any(v.startswith("u") and v[1:].isdigit() for v in s.labels.values()), s


def test_the_read_path_never_imports_pyflink():
    code = (
        "import sys\n"
        "import serving, serving.assembly, serving.online, serving.offline, serving.historical\n"
        "import serving.skew, serving.server, serving.cli, serving.telemetry, serving.metrics\n"
        "import serving.breaker, serving.config\n"
        "assert 'pyflink' not in sys.modules, sorted(m for m in sys.modules if 'flink' in m)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def ten_days_then_pruned(fake, entity):
    """A tile every hour for ten days, then pruned as the sink's write of the newest tile prunes."""
    for hour in range(240):
        start = to_ms(T0) + hour * HOUR
        fake.put(user_stats, TileRow(entity, start, start + HOUR, 2, (1, 1)))
    horizon = user_stats.longest_window + user_stats.prune_margin
    fake.prune(user_stats, entity, to_ms(T0 + timedelta(hours=240) - horizon))  # deletes hours 0..47


def test_a_window_reaching_pruned_tiles_is_beyond_horizon_never_an_undercount(fake):
    ten_days_then_pruned(fake, "old")
    for hour in range(216, 240):  # a young entity: nothing pruned, nothing before its first tile
        start = to_ms(T0) + hour * HOUR
        fake.put(user_stats, TileRow("young", start, start + HOUR, 1, (1, 0)))
    fake.set_completeness(user_stats, to_ms(T0) + 240 * HOUR)
    store, metrics = make_store()
    features = [f"user_stats:{f}" for f in user_stats.feature_names]
    rows = [{"user_id": "old"}, {"user_id": "young"}]

    old, young = store.get_online_features(features, rows, as_of=T0 + timedelta(days=1))
    assert {v.status for v in old.values()} == {Status.BEYOND_HORIZON}
    assert [v.value for v in old.values()] == [user_stats.defaults[f] for f in user_stats.feature_names]
    assert {v.status for v in young.values()} == {Status.MISSING}
    assert sample(metrics, "feature_defaults_served_total", view="user_stats", reason="beyond_horizon") == 5

    # The newest pruned tile started at hour 47: a 7-day window ending at hour 215 starts
    # at it, one ending at hour 216 starts after it and holds every tile it needs.
    edge = store.get_online_features(features, rows[:1], as_of=T0 + timedelta(hours=215, minutes=59))[0]
    assert {v.status for v in edge.values()} == {Status.BEYOND_HORIZON}
    after = store.get_online_features(features, rows[:1], as_of=T0 + timedelta(hours=216))[0]
    assert after["user_stats:clicks_7d"] == (168, Status.PRESENT, T0 + timedelta(hours=216))
    assert after["user_stats:clicks_1d"].value == 24


def test_beyond_horizon_is_per_view_and_entity_and_reads_now_are_untouched(fake):
    ten_days_then_pruned(fake, "old")
    start = to_ms(T0)
    fake.put(spend, TileRow("old", start, start + HOUR, 1, (1, 2.5, 2.5, 2.5)))  # spend: never pruned
    fake.set_completeness(user_stats, to_ms(T0) + 240 * HOUR)
    fake.set_completeness(spend, to_ms(T0) + 240 * HOUR)
    now = to_ms(T0) + 240 * HOUR
    fake.precompute(user_stats, "old", now)
    store, _ = make_store()
    past = store.get_online_features(ALL, [{"user_id": "old"}], as_of=T0 + timedelta(hours=2))[0]
    assert {past[f"user_stats:{f}"].status for f in user_stats.feature_names} == {Status.BEYOND_HORIZON}
    assert past["spend:amount_1d"] == (2.5, Status.PRESENT, T0 + timedelta(hours=2))

    before = fake.round_trips
    current = store.get_online_features(
        ["user_stats:clicks_7d"], [{"user_id": "old"}], as_of=T0 + timedelta(hours=240)
    )
    assert fake.round_trips == before + 1  # precomputed: one MGET, no merge
    assert current[0]["user_stats:clicks_7d"].status is Status.PRESENT
    assert current[0]["user_stats:clicks_7d"].value == 168
