"""Lineage of a real streaming job, replay and repair, written to a file, against the local stack.

For replay and repair the raw archive, a tile and the progress table are
seeded directly, as the streaming job would have left them, so those tests run
only the replay's Flink batch job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features.user_stats import view as user_stats
from parity import cli
from parity.config import IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from replay.backfill import replay
from sinks import iceberg

pytestmark = pytest.mark.integration

START = datetime(2026, 4, 13, tzinfo=UTC)
HOURS = 6


@pytest.fixture
def env(isolated, monkeypatch, tmp_path):
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "lineage" / "events.jsonl"
    monkeypatch.setenv("PARITY_LINEAGE_TRANSPORT", "file")
    monkeypatch.setenv("PARITY_LINEAGE_FILE_PATH", str(path))
    monkeypatch.setenv("PARITY_LINEAGE_NAMESPACE", f"it-{isolated.suffix}")
    return isolated, path


def _seed(cfg: IcebergConfig) -> int:
    """Events of HOURS hours in the raw archive, a tile of them, and those hours closed in the progress
    table: what the streaming job leaves behind."""
    tiles, progress = iceberg.ensure_tables(cfg, user_stats)
    raw = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.raw_table(user_stats)}")
    events = generate(
        GeneratorConfig(users=20, events=400, start=START, span=timedelta(hours=HOURS), seed=5, ads=6)
    )
    rows = [{**e, "kafka_partition": 0, "kafka_offset": offset} for offset, e in enumerate(events)]
    raw.append(pa.Table.from_pylist(rows, schema=raw.schema().as_arrow()))
    tile = {"user_id": ["u-seed"], "tile_start": [START], "tile_end": [START + timedelta(hours=1)]}
    counts = {"events": [1], **{a.name: [0] for a in user_stats.aggregations}}
    tiles.append(pa.table(tile | counts).cast(tiles.schema().as_arrow()))
    hours = [START + timedelta(hours=h) for h in range(HOURS)]
    closed = {
        "tile_start": hours,
        "tile_end": [h + timedelta(hours=1) for h in hours],
        "entities": [1] * HOURS,
        "events": [1] * HOURS,
    }
    progress.append(pa.table(closed).cast(progress.schema().as_arrow()))
    return len(events)


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _names(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def _location(cfg: IcebergConfig, table: str) -> tuple[str, str]:
    return "file", f"{cfg.warehouse.removeprefix('file://')}/{cfg.namespace}/{table}"


def test_a_replay_emits_its_range_inputs_and_outputs_and_ends_complete(env):
    isolated, path = env
    cfg = isolated.iceberg
    sent = _seed(cfg)
    end = START + timedelta(hours=HOURS)

    summary = replay(user_stats, START, end, to_online=True, say=lambda _: None)
    assert summary.events_read == sent

    events = _events(path)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert len({e["run"]["runId"] for e in events}) == 1
    complete = events[-1]
    assert complete["job"]["namespace"] == f"it-{isolated.suffix}"
    assert complete["job"]["name"] == f"{user_stats.qualified_name}.replay"
    facet = complete["run"]["facets"]["parity_run"]
    assert (facet["rangeStart"], facet["rangeEnd"]) == ("2026-04-13T00:00:00Z", "2026-04-13T06:00:00Z")
    assert (facet["source"], facet["toOnline"]) == ("iceberg", True)
    assert _names(complete["inputs"]) == [_location(cfg, iceberg.raw_table(user_stats))]
    redis = RedisConfig()
    assert _names(complete["outputs"]) == [
        _location(cfg, iceberg.tiles_table(user_stats)),
        (f"redis://{redis.host}:{redis.port}", f"{isolated.redis.key_prefix}:{user_stats.qualified_name}"),
    ]
    # The named location is where the catalog really keeps the table.
    tiles = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.tiles_table(user_stats)}")
    assert tiles.location() == "file://" + complete["outputs"][0]["name"]
    assert complete["outputs"][0]["facets"]["symlinks"]["identifiers"][0]["name"] == (
        f"{cfg.namespace}.{iceberg.tiles_table(user_stats)}"
    )
    assert complete["job"]["facets"]["parity_view"]["version"] == user_stats.version


def test_a_failed_replay_ends_fail_and_a_repair_reads_the_tiles_into_redis(env):
    isolated, path = env
    cfg = isolated.iceberg
    _seed(cfg)
    # Past what is closed: refused before any job runs.
    with pytest.raises(Exception, match="past what"):
        replay(user_stats, START, START + timedelta(hours=HOURS + 1), say=lambda _: None)
    assert cli.main(["repair-online", "user_stats"]) == 0  # the command emits the run

    failed_start, failed, repair_start, repaired = _events(path)
    assert [failed_start["eventType"], failed["eventType"]] == ["START", "FAIL"]
    assert "past what" in failed["run"]["facets"]["errorMessage"]["message"]
    assert [repair_start["eventType"], repaired["eventType"]] == ["START", "COMPLETE"]
    assert repaired["job"]["name"] == f"{user_stats.qualified_name}.repair-online"
    assert _names(repaired["inputs"]) == [_location(cfg, iceberg.tiles_table(user_stats))]
    redis = RedisConfig()
    assert _names(repaired["outputs"]) == [
        (f"redis://{redis.host}:{redis.port}", f"{isolated.redis.key_prefix}:{user_stats.qualified_name}")
    ]
    assert KafkaConfig().bootstrap_servers not in json.dumps(repaired)


def test_a_streaming_job_emits_start_running_and_complete_with_its_job_id_and_savepoint(env):
    isolated, path = env
    events = generate(GeneratorConfig(users=10, events=200, start=START, span=timedelta(hours=3), seed=2))
    assert produce_events(events, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0
    isolated.close_tiles(max(e["event_time"] for e in events))
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)

    start, running, complete = _events(path)
    assert [e["eventType"] for e in (start, running, complete)] == ["START", "RUNNING", "COMPLETE"]
    assert len({e["run"]["runId"] for e in (start, running, complete)}) == 1
    assert complete["job"]["name"] == f"{user_stats.qualified_name}.stream"
    job_id = running["run"]["facets"]["parity_run"]["flinkJobId"]
    assert f"job {job_id} running" in isolated.log.read_text()
    savepoint = complete["run"]["facets"]["parity_run"]["savepoint"]
    assert "/savepoints/savepoint-" in savepoint
    kafka = KafkaConfig().bootstrap_servers.split(",")[0]
    assert _names(complete["inputs"]) == [(f"kafka://{kafka}", isolated.topic)]
    cfg = isolated.iceberg
    assert [name for _, name in _names(complete["outputs"])] == [
        _location(cfg, iceberg.tiles_table(user_stats))[1],
        _location(cfg, iceberg.progress_table(user_stats))[1],
        _location(cfg, iceberg.raw_table(user_stats))[1],
        f"{isolated.redis.key_prefix}:{user_stats.qualified_name}",
    ]
