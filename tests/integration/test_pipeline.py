"""The streaming job end to end: Kafka → Flink tiles → Redis and Iceberg, checked against the reference."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from features.user_stats import view as user_stats
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from serving.assembly import Status, from_ms
from serving.offline import load_tiles
from serving.online import OnlineStore
from sinks import iceberg
from stack.config import StackConfig
from tests.integration import reference
from tests.integration.conftest import kill, local_job_metric, wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)
PARITY_VIEW = "flink_taskmanager_job_task_operator_parity_view_"
HORIZON_MS = int((user_stats.longest_window + user_stats.prune_margin) / timedelta(milliseconds=1))


def _events(seed: int):
    cfg = GeneratorConfig(users=200, events=20_000, start=START, span=timedelta(days=10), seed=seed)
    events = generate(cfg)
    assert len({e["user_id"] for e in events}) >= 200
    return events


def _send(events, topic: str, chunk: int = 500) -> None:
    """Producers on schema v1 and v2 take turns on the topic; v1 events carry no device."""
    for index in range(0, len(events), chunk):
        batch = events[index : index + chunk]
        version = 1 if (index // chunk) % 2 == 0 else 2
        if version == 1:
            for event in batch:
                event["device"] = None  # what a v1 writer cannot say; the reader's default
        summary = produce_events(batch, topic, KafkaConfig(), RegistryConfig(), schema_version=version)
        assert (summary.sent, summary.failed) == (len(batch), 0)


def _iceberg_tiles(iso):
    offline = load_tiles(iso.iceberg, user_stats)
    rows = {}
    for user, tiles in offline.by_entity.items():
        for tile in tiles:
            key = (user, tile.start_ms)
            assert key not in rows, f"duplicate Iceberg tile {key}"
            rows[key] = (tile.events, *tile.values)
    return offline, rows


def _redis_tiles(iso, users):
    store = OnlineStore(iso.redis)
    try:
        held = {}
        for user in users:
            for tile in store.tiles(user_stats, user):
                held[(user, tile.start_ms)] = (tile.events, *tile.values)
        return held, store.completeness(user_stats)
    finally:
        store.close()


def _expected_after_pruning(ref_tiles):
    newest_end: dict[str, int] = {}
    for user, start in ref_tiles:
        newest_end[user] = max(newest_end.get(user, 0), start + reference.HOUR_MS)
    return {
        (user, start): value
        for (user, start), value in ref_tiles.items()
        if start >= (newest_end[user] - HORIZON_MS) // 1000 * 1000
    }


def _check_stores(iso, events, closers):
    ref_tiles = reference.tiles(events)
    users = sorted({u for u, _ in ref_tiles})

    offline, iceberg_rows = _iceberg_tiles(iso)
    missing = ref_tiles.keys() - iceberg_rows.keys()
    extra = iceberg_rows.keys() - ref_tiles.keys()
    assert not missing and not extra, f"Iceberg: {len(missing)} tiles missing, {len(extra)} unexpected"
    wrong = {k: (iceberg_rows[k], v) for k, v in ref_tiles.items() if iceberg_rows[k] != v}
    assert not wrong, f"Iceberg tiles differ from the reference: {list(wrong.items())[:5]}"

    redis_rows, completeness = _redis_tiles(iso, users)
    assert redis_rows == _expected_after_pruning(ref_tiles)
    newest = max(start for _, start in ref_tiles) + reference.HOUR_MS
    assert completeness == newest

    # The raw archive holds every event exactly once (the Kafka position is unique).
    raw = _raw_positions(iso)
    sent = len(events) + len(closers)
    assert len(raw) == len(set(raw)) == sent, f"archive holds {len(raw)} rows for {sent} events"
    return offline, completeness


def _raw_positions(iso) -> list[tuple[int, int]]:
    catalog = iceberg.open_catalog(iso.iceberg)
    table = catalog.load_table(f"{iso.iceberg.namespace}.{iceberg.raw_table(user_stats)}")
    rows = table.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    return list(zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True))


def test_tiles_and_windows_equal_the_reference(isolated):
    events = _events(seed=11)
    _send(events, isolated.topic)
    closers = isolated.close_tiles(max(e["event_time"] for e in events))
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)

    offline, completeness = _check_stores(isolated, events, closers)

    # Every (user, hour boundary): windows assembled from Iceberg equal the sliding windows.
    windows = reference.Windows(events)
    users = sorted(offline.by_entity)
    boundaries = range(reference.ms(START), completeness + 1, reference.HOUR_MS)
    checked = 0
    for user in users:
        for end in boundaries:
            got = offline.features(user, from_ms(end))
            for name, expected in windows.expected(user, end).items():
                value = got[name]
                if expected is None:
                    assert value.status is Status.MISSING, (user, end, name, value)
                else:
                    assert (value.value, value.status) == (expected, Status.PRESENT), (user, end, name, value)
                checked += 1
    assert checked == len(users) * len(boundaries) * len(user_stats.feature_names)

    # Every user online, as of the last complete hour, equals the reference too.
    store = OnlineStore(isolated.redis)
    try:
        as_of = from_ms(completeness)
        refs = [f"user_stats:{f}" for f in user_stats.feature_names]
        online = store.get_online_features(refs, [{"user_id": u} for u in users], as_of=as_of)
    finally:
        store.close()
    for user, values in zip(users, online, strict=True):
        for name, expected in windows.expected(user, completeness).items():
            value = values[f"user_stats:{name}"]
            if expected is None:
                assert value.status is Status.MISSING
            else:
                assert (value.value, value.status) == (expected, Status.PRESENT), (user, name)


def test_hard_kill_and_resume_from_checkpoint_loses_and_duplicates_nothing(isolated):
    events = _events(seed=23)
    half = len(events) // 2
    _send(events[:half], isolated.topic)

    first = isolated.start_job("user_stats", bounded=False)
    wait_for(
        lambda: any(isolated.checkpoints.glob("*/*/chk-*/_metadata")),
        timeout=300,
        what=f"a completed checkpoint (log: {isolated.log})",
    )
    wait_for(lambda: _iceberg_tiles(isolated)[1], timeout=120, what="tiles committed to Iceberg")
    # The mini-cluster exports the job's metrics on a port of its own; the stack's Prometheus scrapes it.
    wait_for(
        lambda: local_job_metric(f"{PARITY_VIEW}redis_tiles_applied"),
        timeout=60,
        what="the job's metrics endpoint",
    )
    exported_at = time.time()
    wait_for(
        lambda: _last_scraped("redis_tiles_applied") >= exported_at,
        timeout=90,
        what="Prometheus to scrape the job",
    )
    kill(first)
    committed_before_kill = len(_iceberg_tiles(isolated)[1])
    assert 0 < committed_before_kill < len(reference.tiles(events))

    _send(events[half:], isolated.topic)
    closers = isolated.close_tiles(max(e["event_time"] for e in events))
    checkpoint = sorted(isolated.checkpoints.glob("*/*/chk-*/_metadata"), key=lambda p: p.stat().st_mtime)[
        -1
    ].parent
    second = isolated.start_job("user_stats", bounded=False, drain=True, from_checkpoint=checkpoint)
    last_event = max(reference.ms(e["event_time"]) for e in events)
    target = last_event - last_event % reference.HOUR_MS - reference.HOUR_MS
    wait_for(
        lambda: (_redis_tiles(isolated, [])[1] or 0) >= target,
        timeout=300,
        what="the resumed job to reach the end of the input",
    )
    second.send_signal(signal.SIGTERM)  # reads to the topic's end, then stops with a savepoint
    isolated.wait(second, timeout=180)

    _check_stores(isolated, events, closers)


def _last_scraped(metric: str) -> float:
    """When the stack's Prometheus last took the metric from a local job (Unix time, 0 if never)."""
    cfg = StackConfig()
    query = f'max(timestamp(flink_taskmanager_job_task_operator_parity_view_{metric}{{job="parity-job"}}))'
    url = f"http://{cfg.host}:{cfg.prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0
