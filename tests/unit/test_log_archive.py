"""The log archive without Kafka: an in-memory topic, a JSON decoder and a local SQLite catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from pyiceberg.types import ListType, StructType, TimestamptzType

from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from parity.errors import ConfigError, ReadError, SinkError
from schemas.avro import latest
from serving import log_archive
from serving.log_archive import (
    OFFSETS_PROPERTY,
    ArchiveSummary,
    archive_log,
    archive_schema,
    archived_position,
    ensure_table,
    start_offsets,
    to_arrow,
)

TOPIC = "served"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


@dataclass
class FakeMessage:
    _partition: int
    _offset: int
    _value: bytes

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeTopic:
    """Partitions of (offset, value); the low watermark moves up as retention deletes."""

    def __init__(self, partitions: int = 2) -> None:
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.low = dict.fromkeys(self.logs, 0)
        self.committed: list[list[TopicPartition]] = []

    def produce(self, partition: int, value: bytes) -> int:
        self.logs[partition].append(value)
        return len(self.logs[partition]) - 1

    def consumer(self) -> FakeConsumer:
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, topic: FakeTopic) -> None:
        self.topic = topic
        self.positions: dict[int, int] = {}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        partitions = self.topic.logs if topic == TOPIC else {}
        metadata = type("M", (), {"error": None, "partitions": partitions})()
        return type("T", (), {"topics": {TOPIC: metadata} if partitions else {}})()

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1, cached: bool = False):
        return self.topic.low[partition.partition], len(self.topic.logs[partition.partition])

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for p, position in self.positions.items():
            log = self.topic.logs[p]
            while position < len(log) and len(out) < num_messages:
                out.append(FakeMessage(p, position, log[position]))
                position += 1
            self.positions[p] = position
        return out

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.topic.committed.append(offsets)

    def close(self) -> None:
        pass


def record(trace: str, entity: str = "k1", minutes: int = 0) -> dict[str, Any]:
    return {
        "request_time": T0 + timedelta(minutes=minutes),
        "trace_id": trace,
        "view": "user_stats",
        "entity_key": entity,
        "features": [
            {"name": "clicks_7d", "value": 3.0, "status": "present"},
            {"name": "ctr_7d", "value": None, "status": "missing"},
        ],
        "window_end": T0,
    }


def encode(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, default=lambda t: int(t.timestamp() * 1000)).encode()


def decode(value: bytes | None, _context: object) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(value or b"")
    for name in ("request_time", "window_end"):
        rec[name] = datetime.fromtimestamp(rec[name] / 1000, UTC)
    return rec


@pytest.fixture
def iceberg(tmp_path: Path) -> IcebergConfig:
    return IcebergConfig(
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=f"file://{tmp_path / 'warehouse'}",
        namespace="archive",
    )


def run(topic: FakeTopic, iceberg: IcebergConfig, **kwargs: Any) -> ArchiveSummary:
    return archive_log(
        KafkaConfig(),
        RegistryConfig(),
        iceberg,
        topic=kwargs.pop("topic_name", TOPIC),
        consumer=topic.consumer(),
        deserializer=kwargs.pop("deserializer", decode),
        timeout_s=kwargs.pop("timeout_s", 2.0),
        **kwargs,
    )


def rows(iceberg: IcebergConfig) -> list[dict[str, Any]]:
    table = ensure_table(iceberg)
    found: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return sorted(found, key=lambda r: (r["kafka_partition"], r["kafka_offset"]))


def positions(iceberg: IcebergConfig) -> list[tuple[int, int]]:
    return [(r["kafka_partition"], r["kafka_offset"]) for r in rows(iceberg)]


def fill(topic: FakeTopic, traces: list[str]) -> None:
    for index, trace in enumerate(traces):
        topic.produce(index % len(topic.logs), encode(record(trace, minutes=index)))


def test_columns_are_every_field_of_the_log_schema_then_the_kafka_position():
    schema = archive_schema(latest("served_features"))
    fields = [f["name"] for f in latest("served_features").parsed["fields"]]
    assert [f.name for f in schema.fields] == [*fields, "kafka_partition", "kafka_offset"]
    assert not any(f.required for f in schema.fields)  # later versions' fields can always be added
    assert schema.find_field("request_time").field_type == TimestamptzType()
    features = schema.find_field("features").field_type
    assert isinstance(features, ListType) and isinstance(features.element_type, StructType)
    assert [f.name for f in features.element_type.fields] == ["name", "value", "status"]


def test_a_record_is_one_row_with_its_features_in_request_order():
    schema = archive_schema(latest("served_features"))
    table = to_arrow([record("t1") | {"kafka_partition": 1, "kafka_offset": 7}], schema)
    (row,) = table.to_pylist()
    assert row["features"] == record("t1")["features"]
    assert (row["trace_id"], row["entity_key"], row["kafka_partition"], row["kafka_offset"]) == (
        "t1",
        "k1",
        1,
        7,
    )
    assert row["request_time"] == T0


def test_start_offsets_resume_after_the_position_and_count_what_retention_removed():
    starts, expired = start_offsets(TOPIC, {0: 5, 1: 2}, {0: (0, 9), 1: (4, 6), 2: (3, 3)})
    assert starts == {0: 5, 1: 4, 2: 3}  # never archived: from the low watermark
    assert expired == 2
    with pytest.raises(ReadError, match="re-created"):
        start_offsets(TOPIC, {0: 12}, {0: (0, 9)})


def test_each_record_is_archived_once_across_runs(iceberg):
    topic = FakeTopic()
    fill(topic, [f"t{i}" for i in range(5)])
    first = run(topic, iceberg)
    assert (first.read, first.appended, first.commits, first.caught_up) == (5, 5, 1, True)
    assert first.positions == {0: 3, 1: 2}
    assert positions(iceberg) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    snapshot = ensure_table(iceberg).current_snapshot()
    assert snapshot is not None and json.loads(snapshot.summary[OFFSETS_PROPERTY]) == {
        "topic": TOPIC,
        "next": {"0": 3, "1": 2},
    }
    assert topic.committed[-1] == [TopicPartition(TOPIC, 0, 3), TopicPartition(TOPIC, 1, 2)]

    topic.produce(1, encode(record("t5")))
    second = run(topic, iceberg)
    assert (second.read, second.appended) == (1, 1)
    assert [r["trace_id"] for r in rows(iceberg)] == ["t0", "t2", "t4", "t1", "t3", "t5"]

    third = run(topic, iceberg)
    assert (third.read, third.appended, third.commits, third.caught_up) == (0, 0, 0, True)
    assert third.snapshot_id == second.snapshot_id  # nothing new, no snapshot


def test_a_crash_after_the_iceberg_commit_duplicates_nothing(iceberg, monkeypatch):
    topic = FakeTopic()
    fill(topic, [f"t{i}" for i in range(7)])

    def crash(*_: object) -> None:
        raise RuntimeError("killed after the Iceberg commit")

    monkeypatch.setattr(log_archive, "_commit_visible", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run(topic, iceberg, batch_records=3)
    assert len(rows(iceberg)) == 3
    monkeypatch.undo()
    again = run(topic, iceberg, batch_records=3)
    assert (again.read, again.appended) == (4, 4)
    assert positions(iceberg) == sorted({(i % 2, i // 2) for i in range(7)})


def test_records_delivered_again_below_the_position_are_skipped(iceberg):
    topic = FakeTopic(partitions=1)
    fill(topic, ["t0", "t1", "t2"])
    run(topic, iceberg, max_records=2)

    class Rewinding(FakeConsumer):
        def assign(self, partitions: list[TopicPartition]) -> None:
            self.positions = {tp.partition: 0 for tp in partitions}  # as if the assigned offset were lost

    summary = archive_log(
        KafkaConfig(), RegistryConfig(), iceberg, topic=TOPIC, consumer=Rewinding(topic), deserializer=decode
    )
    assert (summary.skipped, summary.read, summary.appended) == (2, 1, 1)
    assert [r["trace_id"] for r in rows(iceberg)] == ["t0", "t1", "t2"]


def test_undecodable_records_are_counted_once_and_reported(iceberg):
    topic = FakeTopic(partitions=1)
    topic.produce(0, b"\x00not avro")
    topic.produce(0, b"\x00not avro either")
    summary = run(topic, iceberg)
    assert (summary.read, summary.appended, summary.undecodable) == (2, 0, 2)
    assert summary.undecodable_at == ["0:0", "0:1"]
    assert "2 undecodable" in summary.lines()[0] and "0:0 0:1" in summary.lines()[1]
    # The position moved past them in an empty commit, so the next run does not count them again.
    topic.produce(0, encode(record("t2")))
    after = run(topic, iceberg)
    assert (after.read, after.appended, after.undecodable) == (1, 1, 0)
    assert positions(iceberg) == [(0, 2)]


def test_max_records_bounds_a_call_and_the_end_is_the_one_seen_at_the_start(iceberg):
    topic = FakeTopic()
    fill(topic, [f"t{i}" for i in range(6)])
    summary = run(topic, iceberg, max_records=4)
    assert (summary.read, summary.appended, summary.pending, summary.caught_up) == (4, 4, 6, False)
    assert "2 left for the next run" in summary.lines()[0]
    assert run(topic, iceberg).appended == 2
    assert len(rows(iceberg)) == 6


def test_dry_run_counts_and_writes_nothing(iceberg):
    topic = FakeTopic()
    fill(topic, ["t0", "t1", "t2"])
    summary = run(topic, iceberg, dry_run=True)
    assert (summary.pending, summary.read, summary.appended, summary.snapshot_id) == (3, 0, 0, None)
    assert rows(iceberg) == []


def test_a_run_that_lost_the_race_writes_nothing(iceberg):
    topic = FakeTopic(partitions=1)
    fill(topic, ["t0", "t1"])
    racing = True

    def decode_while_another_run_commits(value: bytes | None, context: object) -> dict[str, Any]:
        nonlocal racing
        if racing:
            racing = False
            run(topic, iceberg)  # reads the same position and commits first
        return decode(value, context)

    with pytest.raises(SinkError, match="another `parity log-archive`"):
        run(topic, iceberg, deserializer=decode_while_another_run_commits)
    assert positions(iceberg) == [(0, 0), (0, 1)]


def test_a_table_of_another_topic_is_refused(iceberg):
    topic = FakeTopic(partitions=1)
    fill(topic, ["t0"])
    run(topic, iceberg)
    with pytest.raises(ConfigError, match="archives topic 'served'"):
        run(topic, iceberg, topic_name="other")


def test_without_a_snapshot_of_its_own_the_position_comes_from_the_rows(iceberg):
    table = ensure_table(iceberg)
    schema = table.schema()
    # As after compaction and expiry: rows, but no snapshot with the property.
    table.append(to_arrow([record("t0") | {"kafka_partition": 1, "kafka_offset": 41}], schema))
    position = archived_position(table, TOPIC)
    assert (position.next, position.source) == ({1: 42}, "scan")


def test_a_missing_topic_says_how_to_turn_logging_on(iceberg):
    with pytest.raises(ReadError, match="PARITY_SERVING_LOG_SAMPLE_RATE"):
        run(FakeTopic(), iceberg, topic_name="absent")
