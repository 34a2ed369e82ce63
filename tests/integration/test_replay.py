"""One definition, two paths: streaming and replay agree with an independent reference.

Late events (delivered after their tile closed) are missing from the streaming
tiles and counted; a replay over their range puts them into the offline table.
Before replay the streaming tiles equal the reference of the on-time events;
after replay the offline table equals the reference of all events.
"""

from __future__ import annotations

import math
import random
import re
import signal
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from features.ad_stats import view as ad_stats
from features.registry import get_view
from features.user_stats import view as user_stats
from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from parity.jobctl import PROJECT_ROOT
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from replay.backfill import replay
from serving.assembly import from_ms
from serving.offline import load_tiles
from serving.online import OnlineStore
from sinks import iceberg
from sinks.redis_layout import late_events_key
from tests.integration import reference
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 5
DAY_MS = 86_400_000


def reference_tiles(events, key: str, tile_ms: int, aggregates) -> dict[tuple[str, int], tuple]:
    """(entity, tile start) -> (events, *aggregates) straight from the events."""
    acc: dict[tuple[str, int], list] = defaultdict(lambda: [0] + [0] * len(aggregates))
    for e in events:
        t = reference.ms(e["event_time"])
        row = acc[(e[key], t - t % tile_ms)]
        row[0] += 1
        for i, pick in enumerate(aggregates, start=1):
            row[i] += pick(e)
    return {k: tuple(v) for k, v in acc.items()}


USER_AGGS = [
    lambda e: e["event_type"] == "impression",
    lambda e: e["event_type"] == "click",
    reference.is_mobile_click,
]
AD_AGGS = [
    lambda e: e["event_type"] == "impression",
    lambda e: e["event_type"] == "click",
    lambda e: 1,
    lambda e: e["cost"],
]
CASES = {
    "user_stats": (user_stats, "user_id", 3_600_000, USER_AGGS),
    "ad_stats": (ad_stats, "ad_id", DAY_MS, AD_AGGS),
}


def offline_rows(view) -> dict[tuple[str, int], tuple]:
    rows = {}
    for entity, tiles in load_tiles(IcebergConfig(), view).by_entity.items():
        for tile in tiles:
            assert (entity, tile.start_ms) not in rows, "duplicate tile"
            rows[(entity, tile.start_ms)] = (tile.events, *tile.values)
    return rows


def assert_same(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), (
        f"{what}: {len(expected.keys() - got.keys())} tiles missing, "
        f"{len(got.keys() - expected.keys())} unexpected"
    )
    for key, want in expected.items():
        # Sums of doubles depend on the order they are added in; everything else is exact.
        same = all(
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(got[key], want, strict=True)
        )
        assert same, f"{what}: tile {key} is {got[key]}, reference {want}"


@pytest.fixture
def streamed(isolated, monkeypatch):
    """A stream with late events, run through both views' streaming jobs."""
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    events = generate(
        GeneratorConfig(users=60, events=6000, start=START, span=timedelta(days=DAYS), seed=31, ads=12)
    )
    rng = random.Random(4)
    cutoff = START + timedelta(days=2)
    late = rng.sample([e for e in events if e["event_time"] < cutoff], 40)
    late_ids = {e["event_id"] for e in late}
    on_time = [e for e in events if e["event_id"] not in late_ids]
    assert produce_events(on_time, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0
    isolated.close_tiles(max(e["event_time"] for e in events))
    jobs = {name: isolated.start_job(name, bounded=False, drain=True) for name in CASES}
    store = OnlineStore(isolated.redis)
    try:
        # Late means behind the job's watermark: send them once both jobs have closed their tiles.
        for name, (view, *_) in CASES.items():
            wait_for(
                lambda view=view: (store.completeness(view) or 0) >= reference.ms(cutoff + timedelta(days=1)),
                timeout=300,
                what=f"{name} to close the tiles of the first days",
            )
        assert produce_events(late, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0
        for name in CASES:
            wait_for(
                lambda name=name: late_count(store, isolated, name) == len(late),
                timeout=120,
                what=f"{name} to count {len(late)} late events",
            )
    finally:
        store.close()
    for proc in jobs.values():
        proc.send_signal(signal.SIGTERM)  # read to the topic's end, then stop with a savepoint
    for proc in jobs.values():
        isolated.wait(proc, timeout=180)
    return events, on_time, late


def late_count(store: OnlineStore, isolated, name: str) -> int:
    key = late_events_key(isolated.redis.key_prefix, CASES[name][0])
    return int(store._client.get(key) or 0)


def test_stream_and_replay_agree_with_the_reference_and_replay_corrects_late_data(isolated, streamed):
    events, on_time, late = streamed
    store = OnlineStore(isolated.redis)
    try:
        for name, (view, key, tile_ms, aggs) in CASES.items():
            # Before replay: streaming dropped exactly the late events, and counted them.
            assert_same(offline_rows(view), reference_tiles(on_time, key, tile_ms, aggs), f"{name} streaming")
            assert late_count(store, isolated, name) == len(late)

            start, end = START, closed_until(view)
            summary = replay(view, start, end, source="iceberg", say=lambda _: None)
            assert summary.events_read == len(events)
            touched = {(e[key], reference.ms(e["event_time"]) // tile_ms * tile_ms) for e in late}
            assert summary.tiles_changed + summary.tiles_added == len(touched)
            # After replay: the offline table holds every event, late ones included.
            replayed = offline_rows(view)
            assert_same(replayed, reference_tiles(events, key, tile_ms, aggs), f"{name} after replay")

            # The same from Kafka: only the source binding differs.
            replay(view, start, end, source="kafka", topic=isolated.topic, say=lambda _: None)
            assert_same(
                offline_rows(view), reference_tiles(events, key, tile_ms, aggs), f"{name} kafka replay"
            )

        # Window values from the replayed tiles equal sliding windows over all events.
        windows = reference.Windows(events)
        offline = load_tiles(IcebergConfig(), user_stats)
        for user in sorted(offline.by_entity)[:20]:
            for hours in range(24, 24 * DAYS, 7):
                end_ms = reference.ms(START) + hours * 3_600_000
                got = offline.features(user, from_ms(end_ms))
                for feature, want in windows.expected(user, end_ms).items():
                    if want is not None:
                        assert got[feature].value == want, (user, hours, feature)
    finally:
        store.close()


def table_rows(view) -> list[dict]:
    cfg = IcebergConfig()
    table = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.tiles_table(view)}")
    rows = table.scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: (r[view.entity.join_key], r["tile_start"]))


def test_replay_is_idempotent_and_touches_only_its_range(isolated, streamed):
    start, end = START, closed_until(user_stats)
    replay(user_stats, start, end, say=lambda _: None)
    first = table_rows(user_stats)
    replay(user_stats, start, end, say=lambda _: None)
    assert table_rows(user_stats) == first

    sub_start, sub_end = START + timedelta(days=1, hours=5), START + timedelta(days=1, hours=11)
    outside_before = [r for r in first if not sub_start <= r["tile_start"] < sub_end]
    summary = replay(user_stats, sub_start, sub_end, say=lambda _: None)
    assert summary.tiles_after > 0
    after = table_rows(user_stats)
    assert [r for r in after if not sub_start <= r["tile_start"] < sub_end] == outside_before
    assert after == first


def test_dry_run_writes_nothing_and_bad_ranges_are_refused(isolated, streamed):
    from parity.errors import InputError

    before = table_rows(ad_stats)
    summary = replay(ad_stats, START, START + timedelta(days=2), dry_run=True, say=lambda _: None)
    assert summary.dry_run and summary.tiles_after > 0
    assert table_rows(ad_stats) == before
    with pytest.raises(InputError, match="not aligned"):
        replay(ad_stats, START + timedelta(hours=3), START + timedelta(days=1), say=lambda _: None)
    with pytest.raises(InputError, match="empty or inverted"):
        replay(ad_stats, START, START, say=lambda _: None)
    with pytest.raises(InputError, match="no events"):
        replay(ad_stats, START - timedelta(days=30), START - timedelta(days=29), say=lambda _: None)
    # A range past the completeness watermark would stage the open period partial.
    closed = closed_until(ad_stats)
    with pytest.raises(InputError, match=re.escape(f"last replayable end is {closed.isoformat()}")):
        replay(ad_stats, START, closed + timedelta(days=1), say=lambda _: None)
    assert table_rows(ad_stats) == before


def closed_until(view) -> datetime:
    """The view's offline completeness watermark: the end of the newest replayable range."""
    cfg = IcebergConfig()
    progress = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.progress_table(view)}")
    closed = iceberg.completeness_ms(progress)
    assert closed is not None
    return from_ms(closed)


NEW_VIEW = """
from datetime import timedelta

from features.definition import AggKind, Aggregation, Entity, FeatureView
from features.user_stats import ad_events

view = FeatureView(
    name="{name}",
    version=1,
    owner="tests",
    entity=Entity(name="country", join_key="country"),
    source=ad_events,
    tile=timedelta(hours=2),
    aggregations=(Aggregation("clicks", AggKind.COUNT, where="event_type = 'click'"),),
    windows=(timedelta(hours=6),),
    defaults={{"clicks_6h": 0}},
    max_staleness=timedelta(hours=4),
)
"""


def test_a_new_view_from_one_file_streams_and_replays(isolated, monkeypatch):
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    name = f"it_country_{isolated.suffix}"
    path = PROJECT_ROOT / "features" / f"{name}.py"
    path.write_text(NEW_VIEW.format(name=name))
    try:
        view = get_view(name)
        events = generate(GeneratorConfig(users=30, events=1500, start=START, span=timedelta(days=1), seed=8))
        assert produce_events(events, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0
        isolated.close_tiles(max(e["event_time"] for e in events))
        isolated.wait(isolated.start_job(name, bounded=True), timeout=420)
        clicks = [lambda e: e["event_type"] == "click"]
        expected = reference_tiles(events, "country", 7_200_000, clicks)
        assert_same(offline_rows(view), expected, "new view streaming")
        replay(view, START, closed_until(view), say=lambda _: None)
        assert_same(offline_rows(view), expected, "new view replay")
    finally:
        path.unlink()
