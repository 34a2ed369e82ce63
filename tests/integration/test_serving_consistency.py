"""Online (Redis, merged by the Lua script) and offline (Iceberg, column-wise) reads agree.

Tiles are written the way the job writes them (RedisTileSink; pyiceberg appends
to the tiles and progress tables), without running Flink, so every case is
small and fast. Only Redis and a local Iceberg catalog are needed.
"""

from __future__ import annotations

import json
import random
import socket
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import redis
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from serving import cli
from serving.assembly import Tile, assemble, from_ms, to_ms
from serving.metrics import ServingMetrics
from serving.offline import get_historical_features, load_tiles
from serving.online import OnlineStore
from sinks import iceberg
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from sinks.redis_layout import entity_key, window_key
from sinks.redis_windows import slot_names
from tests.unit.views import spend

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 7  # within the online pruning horizon (longest window + margin), so Redis keeps every tile


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """Reads need Redis (and a local Iceberg catalog), not Kafka or the registry."""
    cfg = RedisConfig()
    try:
        socket.create_connection((cfg.host, cfg.port), timeout=2).close()
    except OSError:
        pytest.fail(f"Redis is not answering at {cfg.host}:{cfg.port}: start the stack with `make up`")


def random_tiles(rng: random.Random, users: int) -> list[TileRow]:
    rows = []
    for u in range(users):
        for hour in sorted(rng.sample(range(DAYS * 24), rng.randint(1, 60))):
            imps, clicks = rng.randint(0, 9), rng.randint(0, 3)
            mobile = rng.randint(0, clicks)
            start = to_ms(T0) + hour * HOUR
            rows.append(TileRow(f"u{u:03d}", start, start + HOUR, imps + clicks, (imps, clicks, mobile)))
    return rows


def seed(iso, rows: list[TileRow], closed_hours: int) -> int:
    """Write tiles to both stores, and `closed_hours` closed periods; return the watermark.

    The sink's clock is the watermark, as for a job that has caught up, so it
    precomputes window values: reads at the watermark's end use them, reads at
    other times merge tiles.
    """
    watermark = to_ms(T0) + closed_hours * HOUR
    sink = RedisTileSink(user_stats, iso.redis, clock=lambda: watermark)
    sink.open()
    try:
        sink.set_epoch("fresh")  # as the job does when it starts a view: this Redis is complete
        sink.write(rows)
        sink.advance_completeness(watermark)
    finally:
        sink.close()
    tiles, progress = iceberg.ensure_tables(iso.iceberg, user_stats)
    tiles.append(
        pa.Table.from_pylist(
            [
                {
                    "user_id": r.entity,
                    "tile_start": from_ms(r.tile_start_ms),
                    "tile_end": from_ms(r.tile_end_ms),
                    "events": r.events,
                    "impressions": r.values[0],
                    "clicks": r.values[1],
                    "mobile_clicks": r.values[2],
                }
                for r in rows
            ],
            schema=tiles.schema().as_arrow(),
        )
    )
    progress.append(
        pa.Table.from_pylist(
            [
                {
                    "tile_start": T0 + timedelta(hours=h),
                    "tile_end": T0 + timedelta(hours=h + 1),
                    "entities": 1,
                    "events": 1,
                }
                for h in range(closed_hours)
            ],
            schema=progress.schema().as_arrow(),
        )
    )
    return watermark


def store_for(iso) -> OnlineStore:
    return OnlineStore(iso.redis, {"user_stats": user_stats}, metrics=ServingMetrics(CollectorRegistry()))


FEATURES = [f"user_stats:{f}" for f in user_stats.feature_names]


def test_online_at_t_equals_historical_at_t_status_included(isolated):
    rng = random.Random(17)
    rows = random_tiles(rng, users=40)
    watermark = seed(isolated, rows, closed_hours=DAYS * 24)
    users = [*sorted({r.entity for r in rows}), "cold-1", "cold-2"]
    # (entity, t) pairs: before, around and long after the watermark (stale), cold entities included.
    pairs = [
        (rng.choice(users), T0 + timedelta(seconds=rng.randint(-3600, (DAYS * 24 + 6) * 3600)))
        for _ in range(400)
    ]
    pairs += [(u, from_ms(watermark)) for u in users] + [(u, from_ms(watermark + 5 * HOUR)) for u in users]
    frame = pa.table(
        {
            "user_id": [u for u, _ in pairs],
            "event_timestamp": pa.array([t for _, t in pairs], pa.timestamp("us", tz="UTC")),
        }
    )
    historical = get_historical_features(frame, FEATURES, cfg=isolated.iceberg)
    snapshot = load_tiles(isolated.iceberg, user_stats).snapshot_id
    assert historical.snapshot_ids == {"user_stats": snapshot} and snapshot is not None
    table = historical.table

    store = store_for(isolated)
    statuses = set()
    try:
        for i, (user, t) in enumerate(pairs):
            online = store.get_online_features(FEATURES, [{"user_id": user}], as_of=t)[0]
            for ref in FEATURES:
                offline = (table[ref][i].as_py(), table[f"{ref}:status"][i].as_py())
                assert (online[ref].value, online[ref].status.value) == offline, (user, t, ref)
                statuses.add(offline[1])
            # A past as_of reads online tile-aligned and says so; offline covers [end - W, t), whose
            # head is empty here (no raw events were archived), so the values agree.
            assert online[FEATURES[0]].window_end == from_ms(to_ms(t) - to_ms(t) % HOUR)
            assert table["user_stats:window_end"][i].as_py() == from_ms(to_ms(t))
    finally:
        store.close()
    assert statuses == {"present", "missing", "stale"}
    # Both online paths were compared: values precomputed by the sink, and tiles merged at read time.
    registry, labels = store.metrics.registry, {"view": "user_stats"}
    merged = registry.get_sample_value("feature_entities_merged_total", labels)
    assert 0 < merged < registry.get_sample_value("feature_entities_read_total", labels) - len(users)


def test_online_merge_in_redis_equals_assemble_for_every_aggregation_kind(isolated):
    """The Lua merge against the reference, with float sums, min/max and NULLs."""
    view = spend
    rng = random.Random(5)
    rows = []
    for u in range(30):
        for hour in sorted(rng.sample(range(DAYS * 24), rng.randint(0, 80))):
            amounts = [rng.uniform(-50, 100) for _ in range(rng.randint(0, 4))]
            total = 0.0
            for a in amounts:
                total += a
            start = to_ms(T0) + hour * HOUR
            values = (len(amounts), total, min(amounts, default=None), max(amounts, default=None))
            rows.append(TileRow(f"u{u}", start, start + HOUR, len(amounts), values))
    sink = RedisTileSink(view, isolated.redis)
    sink.open()
    sink.write(rows)
    sink.advance_completeness(to_ms(T0) + 5 * 24 * HOUR)
    sink.close()
    store = OnlineStore(isolated.redis, {"spend": view}, metrics=ServingMetrics(CollectorRegistry()))
    features = [f"spend:{f}" for f in view.feature_names]
    entities = [{"user_id": f"u{u}"} for u in range(31)]
    try:
        tiles = {e["user_id"]: store.tiles(view, e["user_id"]) for e in entities}
        for _ in range(40):
            as_of = T0 + timedelta(seconds=rng.randint(0, (DAYS + 1) * 86400))
            got = store.get_online_features(features, entities, as_of=as_of)
            for entity, values in zip(entities, got, strict=True):
                expected = assemble(view, tiles[entity["user_id"]], as_of, to_ms(T0) + 5 * 24 * HOUR)
                for name in view.feature_names:
                    assert values[f"spend:{name}"] == expected[name], (entity, as_of, name)
    finally:
        store.close()


def test_cold_start_and_staleness_in_both_paths(isolated):
    start = to_ms(T0)
    watermark = seed(isolated, [TileRow("warm", start, start + HOUR, 5, (4, 1, 0))], closed_hours=1)
    store = store_for(isolated)
    times = [from_ms(watermark), from_ms(watermark + 5 * HOUR)]  # fresh; then older than max staleness
    frame = pa.table(
        {
            "user_id": ["warm", "cold", "warm", "cold"],
            "event_timestamp": pa.array(times[:1] * 2 + times[1:] * 2, pa.timestamp("ms", tz="UTC")),
        }
    )
    table = get_historical_features(frame, ["user_stats:clicks_1d"], cfg=isolated.iceberg).table
    try:
        online = [
            store.get_online_features(["user_stats:clicks_1d"], [{"user_id": u}], as_of=t)[0][
                "user_stats:clicks_1d"
            ]
            for u, t in zip(frame["user_id"].to_pylist(), frame["event_timestamp"].to_pylist(), strict=True)
        ]
    finally:
        store.close()
    expected = [(1, "present"), (0, "missing"), (1, "stale"), (0, "stale")]
    assert [(v.value, v.status.value) for v in online] == expected
    assert (
        list(
            zip(
                table["user_stats:clicks_1d"].to_pylist(),
                table["user_stats:clicks_1d:status"].to_pylist(),
                strict=True,
            )
        )
        == expected
    )


def test_a_pinned_snapshot_ignores_later_commits(isolated):
    start = to_ms(T0)
    seed(isolated, [TileRow("u", start, start + HOUR, 1, (1, 0, 0))], closed_hours=2)
    first = load_tiles(isolated.iceberg, user_stats).snapshot_id
    tiles, _ = iceberg.ensure_tables(isolated.iceberg, user_stats)
    later = TileRow("u", start + HOUR, start + 2 * HOUR, 7, (7, 0, 0))
    tiles.append(
        pa.Table.from_pylist(
            [
                {
                    "user_id": "u",
                    "tile_start": from_ms(later.tile_start_ms),
                    "tile_end": from_ms(later.tile_end_ms),
                    "events": 7,
                    "impressions": 7,
                    "clicks": 0,
                    "mobile_clicks": 0,
                }
            ],
            schema=tiles.schema().as_arrow(),
        )
    )
    frame = pa.table(
        {
            "user_id": ["u"],
            "event_timestamp": pa.array([T0 + timedelta(hours=2)], pa.timestamp("ms", tz="UTC")),
        }
    )
    pinned = get_historical_features(
        frame, ["user_stats:impressions_1d"], cfg=isolated.iceberg, snapshot_ids={"user_stats": first}
    )
    current = get_historical_features(frame, ["user_stats:impressions_1d"], cfg=isolated.iceberg)
    assert pinned.snapshot_ids["user_stats"] == first != current.snapshot_ids["user_stats"]
    assert pinned.table["user_stats:impressions_1d"].to_pylist() == [1]
    assert current.table["user_stats:impressions_1d"].to_pylist() == [8]


def test_a_head_is_read_from_the_archive_and_both_pins_reproduce_it(isolated):
    """A read inside an hour takes the raw archive's events of it; the two returned ids pin both tables."""
    start = to_ms(T0)
    seed(isolated, [TileRow("u", start, start + HOUR, 1, (1, 0, 0))], closed_hours=2)
    archive = iceberg.open_catalog(isolated.iceberg).load_table(
        f"{isolated.iceberg.namespace}.{iceberg.raw_table(user_stats)}"
    )

    def archived(minute: int, kind: str) -> None:
        event = {field.name: None for field in archive.schema().fields}
        event |= {"event_id": f"e{minute}", "user_id": "u", "ad_id": "a", "campaign_id": "c", "country": "DE"}
        event |= {"event_type": kind, "cost": 0.1}
        event["event_time"] = T0 + timedelta(hours=2, minutes=minute)
        archive.append(pa.Table.from_pylist([event], schema=archive.schema().as_arrow()))

    at = pa.array([T0 + timedelta(hours=2, minutes=30)], pa.timestamp("ms", tz="UTC"))
    frame = pa.table({"user_id": ["u"], "event_timestamp": at})
    features = ["user_stats:impressions_1d", "user_stats:clicks_1d"]
    archived(10, "impression")
    archived(40, "click")  # after t: never in the read at 02:30
    first = get_historical_features(frame, features, cfg=isolated.iceberg)
    assert [first.table[f].to_pylist() for f in features] == [[2], [0]]
    assert first.table["user_stats:window_end"].to_pylist() == at.to_pylist()

    archived(20, "click")  # archived later, inside the head
    current = get_historical_features(frame, features, cfg=isolated.iceberg)
    assert [current.table[f].to_pylist() for f in features] == [[2], [1]]
    pins = {
        "user_stats": first.snapshot_ids["user_stats"],
        "user_stats:raw": first.raw_snapshot_ids["user_stats"],
    }
    again = get_historical_features(frame, features, cfg=isolated.iceberg, snapshot_ids=pins)
    assert [again.table[f].to_pylist() for f in features] == [[2], [0]]
    assert again.raw_snapshot_ids == first.raw_snapshot_ids != current.raw_snapshot_ids


def _skew(monkeypatch, iso, capsys, *extra: str) -> tuple[int, dict]:
    monkeypatch.setenv("PARITY_REDIS_KEY_PREFIX", iso.redis.key_prefix)
    monkeypatch.setenv("PARITY_ICEBERG_NAMESPACE", iso.iceberg.namespace)
    code = cli.main(["skew", "user_stats", "--sample", "1000", "--json", *extra])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def test_skew_is_zero_when_clean_and_exits_1_on_one_corrupted_value(isolated, monkeypatch, capsys, tmp_path):
    rows = random_tiles(random.Random(29), users=25)
    seed(isolated, rows, closed_hours=DAYS * 24)
    textfile = tmp_path / "skew.prom"
    code, report = _skew(monkeypatch, isolated, capsys, "--textfile", str(textfile))
    assert code == 0, report
    assert (report["sampled"], report["equal"], report["differing"]) == (25, 25, 0)
    assert 'feature_skew_ratio{view="user_stats"} 0.0' in textfile.read_text()

    # Corrupt the value Redis serves for one entity's clicks in the last day, in Redis only.
    bad = max(rows, key=lambda r: r.tile_start_ms)
    cfg = isolated.redis
    client = redis.Redis(host=cfg.host, port=cfg.port)
    try:
        key = window_key(cfg.key_prefix, user_stats, bad.entity)
        stored = client.get(key).split(b"|")
        stored[2 + slot_names(user_stats).index("clicks_1d")] = b"99"
        client.set(key, b"|".join(stored))
    finally:
        client.close()
    code, report = _skew(monkeypatch, isolated, capsys, "--textfile", str(textfile), "--threshold", "0.01")
    assert code == 1
    assert (report["sampled"], report["equal"], report["differing"]) == (25, 24, 1)
    assert report["examples"][0]["entity"] == bad.entity
    assert 'feature_skew_entities{outcome="differing",view="user_stats"} 1.0' in textfile.read_text()


def test_skew_counts_entities_missing_on_either_side(isolated, monkeypatch, capsys):
    rows = random_tiles(random.Random(31), users=10)
    seed(isolated, rows, closed_hours=DAYS * 24)
    last = to_ms(T0) + (DAYS * 24 - 1) * HOUR
    sink = RedisTileSink(user_stats, isolated.redis)
    sink.open()
    sink.write([TileRow("only-online", last, last + HOUR, 3, (3, 0, 0))])
    sink.close()
    cfg = isolated.redis
    client = redis.Redis(host=cfg.host, port=cfg.port)
    gone = rows[0].entity
    client.delete(entity_key(cfg.key_prefix, user_stats, gone), window_key(cfg.key_prefix, user_stats, gone))
    client.close()
    code, report = _skew(monkeypatch, isolated, capsys)
    assert code == 1
    assert (report["sampled"], report["missing_online"], report["missing_offline"]) == (11, 1, 1)


def test_reading_one_entity_at_t_uses_nothing_written_for_after_t(isolated):
    start = to_ms(T0)
    rows = [TileRow("u", start + h * HOUR, start + (h + 1) * HOUR, 1, (1, 1, 1)) for h in range(10)]
    watermark = seed(isolated, rows, closed_hours=10)
    store = store_for(isolated)
    try:
        t = from_ms(start + 4 * HOUR + 1800_000)  # 04:30: tiles 00..03 have ended, 04 has not
        online = store.get_online_features(["user_stats:impressions_1d"], [{"user_id": "u"}], as_of=t)[0]
        assert online["user_stats:impressions_1d"].value == 4
        reference = assemble(
            user_stats, [Tile(r.tile_start_ms, r.events, r.values) for r in rows], t, watermark
        )
        assert online["user_stats:impressions_1d"] == reference["impressions_1d"]
    finally:
        store.close()
