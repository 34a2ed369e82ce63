"""Iceberg behind the REST catalog, on the S3 server: chosen by configuration alone.

The module starts the optional `s3` and `iceberg-rest` services when they are
not up (and stops those it started). With PARITY_ICEBERG_CATALOG_TYPE=rest and
the S3 settings in the environment, the same streaming job, point-in-time
read, replay and skew check run as on the JDBC catalog; the tiles equal the
independent reference, and every table file is an object in the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from features.user_stats import view as user_stats
from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from replay.backfill import replay
from serving import cli
from serving.assembly import from_ms
from serving.offline import get_historical_features, load_tiles
from sinks import iceberg
from stack import iceberg_rest, s3
from stack.config import StackConfig
from tests.integration import reference

pytestmark = [
    pytest.mark.integration,
    # The services started here are detached by design (their own session, as `stack up`
    # leaves them): their Popen handles are dropped while they run, and say so.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]

START = datetime(2026, 2, 2, tzinfo=UTC)
FEATURES = ["user_stats:impressions_1d", "user_stats:clicks_7d"]


@pytest.fixture(scope="module")
def object_store() -> Iterator[dict[str, str]]:
    """The S3 server and the REST catalog, up; the client settings that reach them."""
    cfg = StackConfig()
    started = []
    try:
        for service in (s3, iceberg_rest):
            if not service.is_up(cfg):
                service.start(cfg)
                started.append(service)
        store = s3.S3Settings()
        yield {
            "PARITY_ICEBERG_CATALOG_TYPE": "rest",
            "PARITY_ICEBERG_REST_URI": iceberg_rest.url(cfg),
            "PARITY_ICEBERG_WAREHOUSE": iceberg_rest.warehouse(),
            "PARITY_ICEBERG_S3_ENDPOINT": s3.endpoint(cfg),
            "PARITY_ICEBERG_S3_REGION": store.region,
            "PARITY_ICEBERG_S3_ACCESS_KEY_ID": store.access_key_id,
            "PARITY_ICEBERG_S3_SECRET_ACCESS_KEY": store.secret_access_key.get_secret_value(),
            "PARITY_ICEBERG_S3_PATH_STYLE_ACCESS": "true",
        }
    finally:
        for service in reversed(started):
            service.stop(cfg)


def bucket_files(cfg: IcebergConfig, table: str) -> set[str]:
    """s3://bucket/key of every object under the table's folder, listed through the S3 API."""
    assert cfg.s3_endpoint and cfg.s3_access_key_id and cfg.s3_secret_access_key
    scheme, host = cfg.s3_endpoint.split("://", 1)
    fs = pafs.S3FileSystem(
        access_key=cfg.s3_access_key_id,
        secret_key=cfg.s3_secret_access_key.get_secret_value(),
        endpoint_override=host,
        scheme=scheme,
        region=cfg.s3_region,
        force_virtual_addressing=False,
    )
    folder = f"{cfg.warehouse.removeprefix('s3://')}/{cfg.namespace}/{table}"
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    return {f"s3://{i.path}" for i in infos if i.type == pafs.FileType.File}


def offline_rows(cfg: IcebergConfig) -> dict[tuple[str, int], tuple]:
    rows = {}
    for user, tiles in load_tiles(cfg, user_stats).by_entity.items():
        for tile in tiles:
            assert (user, tile.start_ms) not in rows, "duplicate tile"
            rows[(user, tile.start_ms)] = (tile.events, *tile.values)
    return rows


def test_stream_read_replay_and_skew_on_the_rest_catalog_and_s3(object_store, isolated, monkeypatch, capsys):
    for name, value in {**object_store, **isolated.env()}.items():
        monkeypatch.setenv(name, value)
    cfg = IcebergConfig()
    assert cfg.catalog_type == "rest" and cfg.namespace == isolated.iceberg.namespace

    events = generate(GeneratorConfig(users=40, events=2000, start=START, span=timedelta(days=2), seed=23))
    assert produce_events(events, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0
    isolated.close_tiles(max(e["event_time"] for e in events))
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)

    # The streaming job's tiles, read back through the REST catalog, equal the reference.
    expected = reference.tiles(events)
    assert offline_rows(cfg) == expected

    # Every file of the table is an object in the bucket; nothing points at a local path.
    tiles = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.tiles_table(user_stats)}")
    assert tiles.metadata_location.startswith(f"{cfg.warehouse}/{cfg.namespace}/")
    assert tiles.location().startswith("s3://") and "file:" not in tiles.metadata_location
    data_files = {task.file.file_path for task in tiles.scan().plan_files()}
    listed = bucket_files(cfg, iceberg.tiles_table(user_stats))
    assert data_files and data_files <= listed
    assert tiles.metadata_location in listed

    # A point-in-time read from Iceberg equals sliding windows over the raw events.
    windows = reference.Windows(events)
    users = sorted({e["user_id"] for e in events})[:10]
    ends = [reference.ms(START) + hours * reference.HOUR_MS for hours in (6, 24, 41)]
    pairs = [(user, end) for user in users for end in ends]
    frame = pa.table(
        {
            "user_id": [user for user, _ in pairs],
            "event_timestamp": pa.array([from_ms(end) for _, end in pairs], pa.timestamp("ms", tz="UTC")),
        }
    )
    table = get_historical_features(frame, FEATURES, cfg=cfg).table
    for row, (user, end) in zip(table.to_pylist(), pairs, strict=True):
        want = windows.expected(user, end)
        for feature in FEATURES:
            expected_value = want[feature.split(":")[1]]
            assert row[feature] == (0 if expected_value is None else expected_value), (user, end, feature)

    # A replay over the closed range rewrites it in object storage, with the same tiles.
    progress = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.progress_table(user_stats)}")
    closed = iceberg.completeness_ms(progress)
    assert closed is not None
    summary = replay(user_stats, START, from_ms(closed), source="iceberg", say=lambda _: None)
    assert summary.events_read == len(events)
    assert offline_rows(cfg) == expected
    replayed = iceberg.open_catalog(cfg).load_table(f"{cfg.namespace}.{iceberg.tiles_table(user_stats)}")
    assert {t.file.file_path for t in replayed.scan().plan_files()} <= bucket_files(
        cfg, iceberg.tiles_table(user_stats)
    )

    # Redis (written by the same job) and Iceberg serve the same values.
    code = cli.main(["skew", "user_stats", "--sample", "1000", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["differing"] == 0 and report["sampled"] >= len(users), report
