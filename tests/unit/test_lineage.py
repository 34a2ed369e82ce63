"""Lineage: dataset naming, the events of each command, and that emission never gets in the way."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openlineage.client.serde import Serde

from jobs import lineage as runs
from parity import lineage
from parity.config import IcebergConfig, KafkaConfig, RedisConfig
from parity.lineage import LineageConfig
from tests.unit.views import user_stats

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 3, tzinfo=UTC)
KAFKA = KafkaConfig(bootstrap_servers="broker-1:9092,broker-2:9092")
ICEBERG = IcebergConfig(
    catalog_uri="sqlite:////data/catalog.db", warehouse="file:///data/warehouse", namespace="features"
)
REDIS = RedisConfig(host="cache", port=6379, key_prefix="parity")


def as_dict(event) -> dict:
    return Serde.to_dict(event)


def names(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def file_cfg(tmp_path: Path) -> LineageConfig:
    return LineageConfig(transport="file", file_path=tmp_path / "lineage" / "events.jsonl")


def read_events(cfg: LineageConfig) -> list[dict]:
    return [json.loads(line) for line in cfg.file_path.read_text().splitlines()]


# Naming


def test_a_kafka_topic_is_named_by_its_first_bootstrap_server():
    dataset = lineage.kafka_dataset(KAFKA, "ad-events")
    assert (dataset.namespace, dataset.name) == ("kafka://broker-1:9092", "ad-events")


def test_an_iceberg_table_on_a_local_warehouse_is_named_by_its_path_with_the_catalog_name_as_symlink():
    dataset = lineage.iceberg_dataset(ICEBERG, "user_stats_v1_tiles")
    assert (dataset.namespace, dataset.name) == ("file", "/data/warehouse/features/user_stats_v1_tiles")
    assert dataset.table == ("sqlite:////data/catalog.db", "features.user_stats_v1_tiles")


@pytest.mark.parametrize(
    ("warehouse", "namespace", "name"),
    [
        ("s3://lake/warehouse/", "s3://lake", "warehouse/features/t"),
        ("gs://lake", "gs://lake", "features/t"),
        ("hdfs://namenode:8020/warehouse", "hdfs://namenode:8020", "/warehouse/features/t"),
        ("/data/warehouse", "file", "/data/warehouse/features/t"),
    ],
)
def test_an_iceberg_table_elsewhere_is_named_by_scheme_authority_and_path(warehouse, namespace, name):
    cfg = IcebergConfig(catalog_uri="sqlite:////c.db", warehouse=warehouse, namespace="features")
    dataset = lineage.iceberg_dataset(cfg, "t")
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_the_catalog_symlink_carries_no_credentials():
    cfg = IcebergConfig(
        catalog_uri="postgresql://parity:secret@db.internal:5432/catalog",
        warehouse="s3://lake",
        namespace="f",
    )
    assert lineage.iceberg_dataset(cfg, "t").table == ("postgresql://db.internal:5432/catalog", "f.t")


def test_redis_is_named_by_host_port_key_prefix_and_view():
    dataset = lineage.redis_dataset(REDIS, "user_stats_v1")
    assert (dataset.namespace, dataset.name) == ("redis://cache:6379", "parity:user_stats_v1")


def test_avro_types_are_named_shortly():
    assert runs.avro_type("string") == "string"
    assert runs.avro_type({"type": "long", "logicalType": "timestamp-millis"}) == "timestamp-millis"
    assert runs.avro_type({"type": "enum", "name": "E", "symbols": ["a"]}) == "enum"
    assert runs.avro_type(["null", {"type": "enum", "name": "D", "symbols": ["x"]}]) == "union[null, enum]"


# Configuration


def test_lineage_is_off_by_default(monkeypatch):
    monkeypatch.delenv("PARITY_LINEAGE_TRANSPORT", raising=False)
    assert lineage.load_config().transport == "none"


def test_invalid_settings_turn_lineage_off_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("PARITY_LINEAGE_TRANSPORT", "http")
    monkeypatch.delenv("PARITY_LINEAGE_HTTP_URL", raising=False)
    with caplog.at_level(logging.WARNING, logger="parity.lineage"):
        assert lineage.load_config().transport == "none"
    assert "PARITY_LINEAGE_HTTP_URL" in caplog.text


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PARITY_LINEAGE_TRANSPORT", "file")
    monkeypatch.setenv("PARITY_LINEAGE_FILE_PATH", str(tmp_path / "e.jsonl"))
    monkeypatch.setenv("PARITY_LINEAGE_NAMESPACE", "prod")
    cfg = lineage.load_config()
    assert (cfg.transport, cfg.file_path, cfg.namespace) == ("file", tmp_path / "e.jsonl", "prod")


def test_when_off_nothing_is_described_and_openlineage_is_not_imported():
    code = (
        "import sys\n"
        "from parity import lineage\n"
        "def describe():\n"
        "    raise AssertionError('described while off')\n"
        "run = lineage.LineageRun(describe)\n"
        "with run:\n"
        "    run.running('job')\n"
        "assert not [m for m in sys.modules if m.startswith('openlineage')], 'openlineage imported'\n"
    )
    env = {"PATH": "", "PARITY_LINEAGE_TRANSPORT": "none"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# The events of each command


def test_replay_events_name_the_range_the_archive_and_the_tiles():
    run = runs.replay_run(
        user_stats, START, END, source="iceberg", to_online=False, cfg=LineageConfig(transport="console")
    )
    start, complete = as_dict(run.event("START")), as_dict(run.event("COMPLETE"))
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert complete["job"] == complete["job"] | {"namespace": "parity", "name": "user_stats_v1.replay"}
    facet = complete["run"]["facets"]["parity_run"]
    assert (facet["rangeStart"], facet["rangeEnd"]) == ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    assert (facet["source"], facet["toOnline"]) == ("iceberg", False)
    assert facet["_schemaURL"] == lineage.RUN_FACET_SCHEMA and facet["_producer"] == lineage.PRODUCER
    nominal = complete["run"]["facets"]["nominalTime"]
    assert (nominal["nominalStartTime"], nominal["nominalEndTime"]) == (
        facet["rangeStart"],
        facet["rangeEnd"],
    )
    warehouse = IcebergConfig().warehouse.removeprefix("file://")
    namespace = IcebergConfig().namespace
    assert names(complete["inputs"]) == [("file", f"{warehouse}/{namespace}/user_stats_v1_raw")]
    assert names(complete["outputs"]) == [("file", f"{warehouse}/{namespace}/user_stats_v1_tiles")]
    assert complete["job"]["facets"]["jobType"]["processingType"] == "BATCH"


def test_replay_to_online_also_writes_redis_and_a_kafka_replay_reads_the_topic():
    run = runs.replay_run(
        user_stats,
        START,
        END,
        source="kafka",
        to_online=True,
        topic="it-topic",
        cfg=LineageConfig(transport="console"),
    )
    event = as_dict(run.event("COMPLETE"))
    assert names(event["inputs"]) == [
        (f"kafka://{KafkaConfig().bootstrap_servers.split(',')[0]}", "it-topic")
    ]
    redis = RedisConfig()
    assert names(event["outputs"])[-1] == (
        f"redis://{redis.host}:{redis.port}",
        f"{redis.key_prefix}:user_stats_v1",
    )


def test_the_kafka_input_has_the_schema_facet_of_the_reader_schema():
    run = runs.stream_run(user_stats, KAFKA, ICEBERG, REDIS, cfg=LineageConfig(transport="console"))
    fields = as_dict(run.event("START"))["inputs"][0]["facets"]["schema"]["fields"]
    by_name = {f["name"]: f for f in fields}
    assert by_name["event_time"]["type"] == "timestamp-millis"
    assert by_name["device"]["type"] == "union[null, enum]"
    assert [f["ordinal_position"] for f in fields] == list(range(1, len(fields) + 1))


def test_stream_events_go_start_running_complete_with_the_job_id_and_savepoint(tmp_path):
    cfg = file_cfg(tmp_path)
    run = runs.stream_run(user_stats, KAFKA, ICEBERG, REDIS, cfg=cfg)
    run.start()
    run.running("f00d")
    run.complete("file:///sp/savepoint-1")
    start, running, complete = read_events(cfg)  # one JSON event a line
    assert [e["eventType"] for e in (start, running, complete)] == ["START", "RUNNING", "COMPLETE"]
    assert len({e["run"]["runId"] for e in (start, running, complete)}) == 1
    assert all(e["producer"] == lineage.PRODUCER for e in (start, running, complete))
    assert running["run"]["facets"]["parity_run"]["flinkJobId"] == "f00d"
    assert complete["run"]["facets"]["parity_run"]["savepoint"] == "file:///sp/savepoint-1"
    assert start["job"]["name"] == "user_stats_v1.stream"
    assert start["job"]["facets"]["jobType"]["processingType"] == "STREAMING"
    assert names(start["inputs"]) == [("kafka://broker-1:9092", "ad-events")]
    assert names(start["outputs"]) == [
        ("file", "/data/warehouse/features/user_stats_v1_tiles"),
        ("file", "/data/warehouse/features/user_stats_v1_progress"),
        ("file", "/data/warehouse/features/user_stats_v1_raw"),
        ("redis://cache:6379", "parity:user_stats_v1"),
    ]
    tiles = start["outputs"][0]["facets"]
    assert tiles["symlinks"]["identifiers"] == [
        {"namespace": "sqlite:////data/catalog.db", "name": "features.user_stats_v1_tiles", "type": "TABLE"}
    ]
    assert [f["name"] for f in tiles["schema"]["fields"]][:4] == [
        "user_id",
        "tile_start",
        "tile_end",
        "events",
    ]


def test_the_stream_job_facets_carry_the_version_and_the_hash_of_the_compiled_sql():
    run = runs.stream_run(user_stats, KAFKA, ICEBERG, REDIS, cfg=LineageConfig(transport="console"))
    facets = as_dict(run.event("START"))["job"]["facets"]
    view = facets["parity_view"]
    assert (view["view"], view["version"]) == ("user_stats_v1", 1)
    assert view["_schemaURL"] == lineage.VIEW_FACET_SCHEMA and view["_producer"] == lineage.PRODUCER
    assert facets["sql"]["query"] == runs.compiled_sql(user_stats)
    assert view["sqlSha256"] == lineage.sql_sha256(facets["sql"]["query"])


def test_the_sql_hashed_is_what_parity_views_sql_prints(capsys):
    from features.user_stats import view
    from parity.cli import main

    assert main(["views", "user_stats", "--sql"]) == 0
    assert capsys.readouterr().out == runs.compiled_sql(view)


def test_repair_events_read_the_tiles_and_write_redis():
    run = runs.repair_run(user_stats, ICEBERG, REDIS, cfg=LineageConfig(transport="console"))
    event = as_dict(run.event("START"))
    assert event["job"]["name"] == "user_stats_v1.repair-online"
    assert names(event["inputs"]) == [("file", "/data/warehouse/features/user_stats_v1_tiles")]
    assert names(event["outputs"]) == [("redis://cache:6379", "parity:user_stats_v1")]
    assert "sql" not in event["job"]["facets"]
    assert event["job"]["facets"]["parity_view"]["version"] == 1


def test_a_failure_is_fail_with_its_message_and_a_cancellation_is_abort(tmp_path):
    cfg = file_cfg(tmp_path)
    failed = runs.repair_run(user_stats, ICEBERG, REDIS, cfg=cfg)
    with pytest.raises(ValueError, match="boom"), failed:
        raise ValueError("boom")
    interrupted = runs.repair_run(user_stats, ICEBERG, REDIS, cfg=cfg)
    with pytest.raises(KeyboardInterrupt), interrupted:
        raise KeyboardInterrupt
    cancelled = runs.stream_run(user_stats, KAFKA, ICEBERG, REDIS, cfg=cfg)
    try:
        raise RuntimeError("org.apache.flink.runtime.client.JobCancellationException: Job was cancelled")
    except RuntimeError as cause:
        error = ValueError("the job of user_stats_v1 failed")
        error.__cause__ = cause
    cancelled.fail(error)
    runs.repair_run(user_stats, ICEBERG, REDIS, cfg=cfg).abort()
    events = read_events(cfg)
    assert [e["eventType"] for e in events] == ["START", "FAIL", "START", "ABORT", "ABORT", "ABORT"]
    assert "errorMessage" not in events[-1]["run"]["facets"]
    assert events[1]["run"]["facets"]["errorMessage"]["message"] == "boom"
    assert "ValueError: boom" in events[1]["run"]["facets"]["errorMessage"]["stackTrace"]


def test_a_dry_run_emits_nothing(tmp_path):
    cfg = file_cfg(tmp_path)
    with runs.replay_run(user_stats, START, END, source="iceberg", to_online=False, dry_run=True, cfg=cfg):
        pass
    with runs.repair_run(user_stats, ICEBERG, REDIS, dry_run=True, cfg=cfg):
        pass
    assert not cfg.file_path.exists()


def test_an_unwritable_destination_or_a_broken_description_is_logged_never_raised(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = LineageConfig(transport="file", file_path=blocker / "events.jsonl")

    def broken() -> lineage.RunSpec:
        raise RuntimeError("no schema")

    with caplog.at_level(logging.WARNING, logger="parity.lineage"):
        with runs.repair_run(user_stats, ICEBERG, REDIS, cfg=cfg) as run:
            run.running("f00d")
        with lineage.LineageRun(broken, cfg=LineageConfig(transport="console")):
            pass
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 5
    assert all(w.startswith("lineage: the ") and "event was not sent" in w for w in warnings)
    assert "no schema" in warnings[-1]


def test_an_unreachable_http_backend_is_one_quick_try(caplog):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = LineageConfig(transport="http", http_url=f"http://127.0.0.1:{port}", http_timeout_s=1.0)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="parity.lineage"):
        runs.repair_run(user_stats, ICEBERG, REDIS, cfg=cfg).start()
    assert time.monotonic() - began < 2.0
    assert "START event was not sent" in caplog.text


def test_a_rest_catalog_table_is_named_by_its_location_and_the_rest_catalog():
    from parity.config import IcebergConfig
    from parity.lineage import iceberg_dataset

    cfg = IcebergConfig(
        catalog_type="rest",
        rest_uri="http://catalog:8181",
        warehouse="s3://bucket/warehouse",
        s3_endpoint="http://s3:9000",
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    dataset = iceberg_dataset(cfg, "user_stats_v2_tiles")
    assert dataset.namespace == "s3://bucket"
    assert dataset.name == f"warehouse/{cfg.namespace}/user_stats_v2_tiles"
    assert dataset.table == ("http://catalog:8181", f"{cfg.namespace}.user_stats_v2_tiles")
