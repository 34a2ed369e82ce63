"""The served-feature log's archive: its Kafka topic appended to an Iceberg table, exactly once.

Kafka keeps the log for its retention only; the table ``<namespace>.served_features``
keeps it for good and answers queries ("what was served for this key, when").
One row per record: every field of the newest ``schemas/served_features`` version
(``features`` stays a list of ``name``/``value``/``status`` structs, in request
order, as the log writes it), then ``kafka_partition`` and ``kafka_offset``.
The table is partitioned by ``day(request_time)``. Every column is optional:
Iceberg cannot add a required column to a table that has rows, and a later
schema version's fields are added as columns.

Why a list of structs for ``features``: it is the Avro field as written, so the
value, its status and the request order stay together and typed, and a field
added to ``ServedFeature`` becomes a struct field. A map per value and status
would split one feature over two columns and lose the order; a JSON string
would lose the types and make every query parse it. Engines unnest it
(``UNNEST(features)`` in Trino and DuckDB, ``explode`` in Spark).

Exactly once, by construction, whatever crashes where:

1. Load the table (create it when missing). The archive's position, the next
   offset to archive per partition, is a property of the snapshot summary of
   every append (``parity.log-archive.offsets``): read it from the current
   snapshot, or the newest ancestor that has it (maintenance commits such as
   compaction carry none). A table without any (its snapshots expired) is
   scanned for the highest ``kafka_offset`` per partition instead.
2. Take the topic's end offsets now; read each partition from its position up
   to them, with ``assign`` (no consumer-group offsets involved), and skip any
   record below the position.
3. Append the decoded records in batches; each append carries the new
   positions in its summary, so the rows and the position move in one Iceberg
   commit. The commit requires the table's head to be the snapshot the
   positions were read from: a concurrent run makes it fail, and nothing of
   that batch is written.
4. Then commit the positions to the consumer group ``parity-log-archive.<namespace>``,
   for lag dashboards only: a crash before or after that commit changes
   nothing, the next run starts from the table.

A record that does not decode is counted (with its partition and offset) and
passed over; its offset still advances the position, so it is reported once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
)

from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from parity.errors import ConfigError, ReadError, SchemaError, SinkError
from parity.kafka_security import librdkafka_config
from producer.produce import registry_client
from schemas.avro import SchemaVersion, _flink_type, latest
from serving.feature_log import SCHEMA
from sinks.iceberg import _ICEBERG_TYPES, _ensure, _ensure_namespace, open_catalog

log = logging.getLogger(__name__)

TABLE = "served_features"
# The snapshot summary property holding the archive's position: {"topic": ..., "next": {partition: offset}}.
OFFSETS_PROPERTY = "parity.log-archive.offsets"
PARTITION_COLUMN = "kafka_partition"
OFFSET_COLUMN = "kafka_offset"
# Records per Iceberg commit: fewer, larger data files, and work kept when a long run stops.
BATCH_RECORDS = 5000
# pyiceberg retries a commit that lost a race by re-applying the append on the new head: the
# rows of a concurrent run's range would go in twice. Off for this table; a lost race fails.
_COMMIT_RETRIES = "commit.retry.num-retries"
# Undecodable records named in a summary; the rest are only counted.
MAX_EXAMPLES = 20

Deserializer = Callable[[bytes | None, SerializationContext], Any]
Say = Callable[[str], None]


class LogConsumer(Protocol):
    """The part of ``confluent_kafka.Consumer`` the archive uses."""

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> Any: ...
    def close(self) -> Any: ...


@dataclass(frozen=True)
class Position:
    """Where the archive stands: the next offset to archive per partition, and where that was read."""

    next: dict[int, int]
    source: str  # "snapshot <id>", "scan" or "empty"


@dataclass
class ArchiveSummary:
    """What one ``archive_log`` call did."""

    table: str
    topic: str
    snapshot_id: int | None = None
    read: int = 0  # records consumed in the range, decodable or not
    appended: int = 0
    undecodable: int = 0
    skipped: int = 0  # delivered again below the archived position, not appended
    expired: int = 0  # offsets Kafka's retention removed before they were archived
    commits: int = 0
    pending: int = 0  # records between the position and the end offsets at the start
    caught_up: bool = False  # every partition archived up to the end offsets seen at the start
    positions: dict[int, int] = field(default_factory=dict)
    undecodable_at: list[str] = field(default_factory=list)  # "partition:offset"

    def lines(self) -> list[str]:
        lines = [
            f"{self.table} from {self.topic}: {self.appended} records appended in {self.commits} commits "
            f"(snapshot {self.snapshot_id}), {self.read} read, {self.undecodable} undecodable, "
            f"{self.skipped} already archived; "
            + ("caught up" if self.caught_up else f"{self.pending - self.read} left for the next run")
        ]
        if self.undecodable:
            lines.append(f"undecodable records (partition:offset): {' '.join(self.undecodable_at)}")
        if self.expired:
            lines.append(
                f"warning: {self.expired} offsets expired from the topic before they were archived; "
                "run the archive more often than the topic's retention"
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "topic": self.topic,
            "snapshot_id": self.snapshot_id,
            "read": self.read,
            "appended": self.appended,
            "undecodable": self.undecodable,
            "skipped": self.skipped,
            "expired": self.expired,
            "commits": self.commits,
            "pending": self.pending,
            "caught_up": self.caught_up,
            "positions": {str(p): o for p, o in sorted(self.positions.items())},
            "undecodable_at": self.undecodable_at,
        }


def archive_schema(schema: SchemaVersion) -> Schema:
    """The table's columns: every field of ``schema`` (all optional), then Kafka partition and offset.

    Raises:
        SchemaError: a field has an Avro type with no Iceberg counterpart here.
    """
    ids = iter(range(1, 1_000_000))
    fields = [
        NestedField(next(ids), f["name"], _iceberg_type(f["type"], ids, f["name"]), required=False)
        for f in schema.parsed["fields"]
    ]
    fields.append(NestedField(next(ids), PARTITION_COLUMN, IntegerType(), required=False))
    fields.append(NestedField(next(ids), OFFSET_COLUMN, LongType(), required=False))
    return Schema(*fields)


def _iceberg_type(avro: Any, it: Iterator[int], where: str) -> IcebergType:
    """Records, arrays and maps here; every other type as the raw events' archive maps it."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) == 1:
            return _iceberg_type(branches[0], it, where)
    elif isinstance(avro, dict) and avro["type"] == "record":
        return StructType(
            *(
                NestedField(next(it), f["name"], _iceberg_type(f["type"], it, f"{where}.{f['name']}"), False)
                for f in avro["fields"]
            )
        )
    elif isinstance(avro, dict) and avro["type"] == "array":
        element_id = next(it)
        return ListType(element_id, _iceberg_type(avro["items"], it, f"{where}[]"), element_required=False)
    elif isinstance(avro, dict) and avro["type"] == "map":
        key_id, value_id = next(it), next(it)
        value = _iceberg_type(avro["values"], it, f"{where}{{}}")
        return MapType(key_id, StringType(), value_id, value, value_required=False)
    leaf = _flink_type(avro, f"schemas/{SCHEMA} field {where!r}").removesuffix(" NOT NULL")
    if leaf not in _ICEBERG_TYPES:
        raise SchemaError(f"schemas/{SCHEMA} field {where!r}: {leaf} has no Iceberg type for the archive")
    return _ICEBERG_TYPES[leaf]


def ensure_table(cfg: IcebergConfig) -> Table:
    """The archive table, created when missing (the tiles tables' properties); new schema fields added."""
    catalog = open_catalog(cfg)
    _ensure_namespace(catalog, cfg.namespace)
    schema = archive_schema(latest(SCHEMA))
    request_time = schema.find_field("request_time").field_id
    spec = PartitionSpec(
        PartitionField(source_id=request_time, field_id=1000, transform=DayTransform(), name="request_day")
    )
    table = _ensure(catalog, table_name(cfg), schema, spec)
    if table.properties.get(_COMMIT_RETRIES) != "0":
        with table.transaction() as tx:
            tx.set_properties({_COMMIT_RETRIES: "0"})
    return table


def table_name(cfg: IcebergConfig) -> str:
    return f"{cfg.namespace}.{TABLE}"


def archived_position(table: Table, topic: str) -> Position:
    """The next offset to archive per partition, from the newest snapshot summary that has it.

    Raises:
        ConfigError: the table archives another topic.
    """
    current = table.current_snapshot()
    if current is None:
        return Position({}, "empty")
    for snapshot in ancestors_of(current, table.metadata):
        text = snapshot.summary.additional_properties.get(OFFSETS_PROPERTY) if snapshot.summary else None
        if text is None:
            continue
        state = json.loads(text)
        if state["topic"] != topic:
            raise ConfigError(
                f"{table.name()} archives topic {state['topic']!r}, not {topic!r}: its kafka_partition and "
                f"kafka_offset would be ambiguous; archive {topic!r} under another PARITY_ICEBERG_NAMESPACE"
            )
        return Position(
            {int(p): int(o) for p, o in state["next"].items()}, f"snapshot {snapshot.snapshot_id}"
        )
    # No snapshot of ours left (expired): the rows themselves say how far the archive got.
    log.warning("%s: no snapshot carries %s; scanning its offsets", table.name(), OFFSETS_PROPERTY)
    offsets = table.scan(selected_fields=(PARTITION_COLUMN, OFFSET_COLUMN)).to_arrow()
    highest = offsets.group_by(PARTITION_COLUMN).aggregate([(OFFSET_COLUMN, "max")]).to_pylist()
    return Position({int(r[PARTITION_COLUMN]): int(r[f"{OFFSET_COLUMN}_max"]) + 1 for r in highest}, "scan")


def start_offsets(
    topic: str, position: Mapping[int, int], watermarks: Mapping[int, tuple[int, int]]
) -> tuple[dict[int, int], int]:
    """Per partition the first offset to read, and how many offsets retention removed unarchived.

    A partition never archived starts at its low watermark.

    Raises:
        ReadError: the archive is past a partition's end: the topic was re-created.
    """
    starts: dict[int, int] = {}
    expired = 0
    for partition, (low, high) in sorted(watermarks.items()):
        archived = position.get(partition)
        if archived is not None and archived > high:
            raise ReadError(
                f"the archive holds {topic!r} partition {partition} up to offset {archived - 1}, but the "
                f"topic ends at {high}: was it deleted and re-created? Archive the new topic under "
                "another PARITY_ICEBERG_NAMESPACE"
            )
        if archived is not None and archived < low:
            expired += low - archived
        starts[partition] = low if archived is None else max(archived, low)
    return starts, expired


def to_arrow(rows: list[dict[str, Any]], schema: Schema) -> pa.Table:
    """Decoded records (with ``kafka_partition`` and ``kafka_offset``) as the table's Arrow batch."""
    return pa.Table.from_pylist(rows, schema=schema_to_pyarrow(schema))


def kafka_conf(kafka: KafkaConfig, group: str) -> dict[str, Any]:
    """The archive's consumer: partitions assigned explicitly, offsets committed only by hand."""
    return librdkafka_config(kafka) | {
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }


def _consumer(kafka: KafkaConfig, group: str) -> LogConsumer:
    return Consumer(kafka_conf(kafka, group))


def archive_log(
    kafka: KafkaConfig,
    registry: RegistryConfig,
    iceberg: IcebergConfig,
    *,
    topic: str,
    max_records: int = 100_000,
    timeout_s: float = 10.0,
    batch_records: int = BATCH_RECORDS,
    dry_run: bool = False,
    say: Say = log.info,
    consumer: LogConsumer | None = None,
    deserializer: Deserializer | None = None,
) -> ArchiveSummary:
    """Append the log's records not archived yet, up to the topic's end now, to the archive table.

    Safe to run again, at once or on a schedule, and to stop at any point: see the module's protocol.

    Args:
        kafka: where the topic is.
        registry: the schema registry the log's records were written with.
        iceberg: the catalog; the table is ``<namespace>.served_features``.
        topic: the log topic (``PARITY_SERVING_LOG_TOPIC``).
        max_records: read at most this many records in this call.
        timeout_s: how long a Kafka metadata call, or the wait for the next record, may take.
        batch_records: records per Iceberg commit.
        dry_run: count what would be read; write nothing.
        say: progress lines (one per commit).
        consumer: used instead of a new ``confluent_kafka.Consumer`` (tests).
        deserializer: used instead of the registry's AvroDeserializer (tests).

    Raises:
        ConfigError: the table archives another topic, or the catalog cannot be opened.
        ReadError: the topic is missing or was re-created, or no record arrives for ``timeout_s``
            before the end offsets (what was read by then is archived).
        SinkError: another run committed to the table meanwhile, or the append failed; the
            batch was not written.
    """
    if max_records < 1 or batch_records < 1:
        raise ConfigError("max_records and batch_records must be at least 1")
    table = ensure_table(iceberg)
    schema = table.schema()
    position = archived_position(table, topic)
    summary = ArchiveSummary(table_name(iceberg), topic, table.metadata.current_snapshot_id)
    session = None
    if deserializer is None:
        session = registry_client(registry)
        # The newest version as the reader schema: every record gets every column, older ones their defaults.
        deserializer = AvroDeserializer(session, schema_str=latest(SCHEMA).text)
    if consumer is None:
        consumer = _consumer(kafka, f"parity-log-archive.{iceberg.namespace}")
    run = _Run(table, schema, topic, position, summary, consumer, deserializer, say)
    try:
        run.bound(timeout_s)
        if not dry_run:
            run.archive(max_records, batch_records, timeout_s)
    except KafkaException as exc:
        raise ReadError(f"reading {topic!r} from {kafka.bootstrap_servers} failed: {exc}") from exc
    finally:
        consumer.close()
        if session is not None:
            session.close()
    return summary


class _Run:
    """One ``archive_log`` call's state: the position as committed and as read so far."""

    def __init__(
        self,
        table: Table,
        schema: Schema,
        topic: str,
        position: Position,
        summary: ArchiveSummary,
        consumer: LogConsumer,
        deserializer: Deserializer,
        say: Say,
    ) -> None:
        self.table, self.schema, self.topic = table, schema, topic
        self.committed = dict(position.next)
        self.next = dict(position.next)
        self.summary = summary
        self.consumer = consumer
        self.deserialize = deserializer
        self.context = SerializationContext(topic, MessageField.VALUE)
        self.say = say
        self.starts: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        log.debug("%s: position %s from %s", summary.table, position.next, position.source)

    def bound(self, timeout_s: float) -> None:
        """The range of this run: from the position to the end offsets now."""
        metadata = self.consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise ReadError(
                f"topic {self.topic!r} does not exist; is served-feature logging on "
                "(PARITY_SERVING_LOG_SAMPLE_RATE, PARITY_SERVING_LOG_TOPIC)?"
            )
        watermarks = {
            p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
            for p in sorted(metadata.partitions)
        }
        self.starts, self.summary.expired = start_offsets(self.topic, self.committed, watermarks)
        self.ends = {p: high for p, (_, high) in watermarks.items()}
        self.summary.pending = sum(self.ends[p] - start for p, start in self.starts.items())
        self.summary.caught_up = self.summary.pending == 0
        self.summary.positions = dict(self.committed)

    def archive(self, max_records: int, batch_records: int, timeout_s: float) -> None:
        summary = self.summary
        pending = {p for p, start in self.starts.items() if start < self.ends[p]}
        self.consumer.assign([TopicPartition(self.topic, p, self.starts[p]) for p in sorted(pending)])
        for p in pending:
            self.next[p] = self.starts[p]
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        stalled = False
        while pending and summary.read < max_records:
            if time.monotonic() > deadline:
                stalled = True
                break
            for message in self.consumer.consume(
                num_messages=min(500, max_records - summary.read), timeout=1.0
            ):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise ReadError(f"reading {self.topic!r} failed: {error.str()}")
                    continue
                deadline = time.monotonic() + timeout_s
                partition, offset = message.partition(), message.offset()
                if partition not in pending or offset >= self.ends[partition]:
                    continue  # past the end seen at the start: the next run's
                if offset < self.next[partition]:
                    summary.skipped += 1
                    continue
                summary.read += 1
                row = self._decode(message.value(), partition, offset)
                if row is not None:
                    rows.append(row)
                self.next[partition] = offset + 1
                if offset + 1 >= self.ends[partition]:
                    pending.discard(partition)
                if len(rows) >= batch_records:
                    self._commit(rows)
                    rows = []
                if summary.read >= max_records:
                    break
        self._commit(rows)
        summary.caught_up = not pending
        if stalled:
            raise ReadError(
                f"no record of {self.topic!r} arrived for {timeout_s:g} s before its end offsets; "
                f"{summary.appended} records were archived; is Kafka reachable?"
            )

    def _decode(self, value: bytes | None, partition: int, offset: int) -> dict[str, Any] | None:
        try:
            record = self.deserialize(value, self.context)
            if not isinstance(record, dict):
                raise TypeError(f"decoded to {type(record).__name__}, not a record")
        except Exception as exc:  # the registry's and fastavro's errors are not one type
            self.summary.undecodable += 1
            if len(self.summary.undecodable_at) < MAX_EXAMPLES:
                self.summary.undecodable_at.append(f"{partition}:{offset}")
            log.warning("%s: partition %d offset %d does not decode: %s", self.topic, partition, offset, exc)
            return None
        return record | {PARTITION_COLUMN: partition, OFFSET_COLUMN: offset}

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` with the position after them in one Iceberg commit; then tell the group."""
        if self.next == self.committed:
            return
        state = {"topic": self.topic, "next": {str(p): o for p, o in sorted(self.next.items())}}
        properties = {OFFSETS_PROPERTY: json.dumps(state)}
        head = self.table.metadata.current_snapshot_id
        try:
            self.table.append(to_arrow(rows, self.schema), snapshot_properties=properties)
        except CommitFailedException as exc:
            raise SinkError(
                f"{self.summary.table} changed since this run read its position (another "
                f"`parity log-archive` running?); this batch of {len(rows)} records was not written: "
                f"run again: {exc}"
            ) from exc
        except OSError as exc:
            raise SinkError(f"appending to {self.summary.table} failed: {exc}") from exc
        self.committed = dict(self.next)
        summary = self.summary
        snapshot = self.table.current_snapshot()
        if snapshot is None or snapshot.parent_snapshot_id != head:
            # Only when the table's commit.retry.num-retries was changed during this run.
            raise SinkError(
                f"{summary.table}: the append was re-applied on top of another commit; rows of "
                f"{self.topic!r} may be archived twice: set its {_COMMIT_RETRIES} to 0"
            )
        summary.appended += len(rows)
        summary.commits += 1
        summary.positions = dict(self.committed)
        summary.snapshot_id = self.table.metadata.current_snapshot_id
        self.say(
            f"{summary.table}: {summary.appended} records appended, {summary.read} of up to "
            f"{summary.pending} read (snapshot {summary.snapshot_id})"
        )
        _commit_visible(self.consumer, self.topic, self.committed)


def _commit_visible(consumer: LogConsumer, topic: str, positions: Mapping[int, int]) -> None:
    """Tell the consumer group how far the archive is, for lag dashboards; correctness never reads it."""
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in sorted(positions.items())], asynchronous=False
        )
    except KafkaException as exc:
        log.warning("%s: committing the archive's offsets to its group failed (harmless): %s", topic, exc)
