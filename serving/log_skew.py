"""The log skew check: what reads actually served (the served-feature log) against Iceberg.

``serving.skew`` asks both stores now; this one replays what was served, so a
differing value can be traced to the read that returned it (its trace id).

1. Read the view's records from the log topic with a consumer group of its
   own, from the beginning or from ``since`` (by message timestamp), up to the
   end offsets taken at the start or ``max_records``, whichever comes first.
2. Map each logged entity key back to an id, as the view's ``Entity.log_key``
   wrote it: ``plain`` is the id; ``hash`` is looked up among the HMACs of the
   ids Iceberg holds, under the same key; ``redact`` cannot be mapped. A record
   whose key does not map (or that names a feature the view no longer has)
   counts as ``unmatched``.
3. One ``get_historical_features`` call, each record's ``window_end`` as its
   time, gives what Iceberg says was true there.
4. Per record: ``equal`` when every logged feature has the offline status and
   (within a float tolerance) value, otherwise ``differing``. A read served
   with status ``error`` or ``beyond_horizon`` differs: the model got a default.

The read's own ``as_of`` is not logged; its window end is. Staleness is decided
at the window end offline, at ``as_of`` online, so a view whose staleness limit
falls inside one tile can differ in status for reads made late in that tile.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from features.definition import FeatureView
from parity.config import KafkaConfig, RegistryConfig
from parity.errors import ReadError
from parity.kafka_security import librdkafka_config
from producer.produce import registry_client
from serving.assembly import to_ms
from serving.feature_log import key_writer
from serving.historical import get_historical_features
from serving.offline import OfflineTiles
from serving.skew import REL_TOLERANCE

# Differing records described in a report; the rest are only counted.
MAX_EXAMPLES = 20
# Reading gives up when no record arrives for this long before the end offsets are reached.
IDLE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LoggedFeature:
    name: str
    value: float | None
    status: str


@dataclass(frozen=True)
class LoggedRecord:
    """One record of the log, as decoded (``schemas/served_features``)."""

    trace_id: str | None
    entity_key: str
    request_time: datetime
    window_end: datetime
    features: tuple[LoggedFeature, ...]

    @classmethod
    def of(cls, record: dict[str, Any]) -> LoggedRecord:
        return cls(
            record["trace_id"],
            record["entity_key"],
            record["request_time"],
            record["window_end"],
            tuple(LoggedFeature(f["name"], f["value"], f["status"]) for f in record["features"]),
        )


@dataclass
class LogSkewReport:
    view: str
    topic: str
    snapshot_id: int | None
    read: int = 0
    compared: int = 0
    equal: int = 0
    differing: int = 0
    unmatched: int = 0
    undecodable: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Share of compared records that differ; unmatched ones could not be compared."""
        return self.differing / self.compared if self.compared else 0.0

    def line(self) -> str:
        return (
            f"{self.view} from log {self.topic} (snapshot {self.snapshot_id}): {self.read} read, "
            f"{self.compared} compared, {self.equal} equal, {self.differing} differing, "
            f"{self.unmatched} unmatched, {self.undecodable} undecodable (skew {self.ratio:.2%})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "topic": self.topic,
            "snapshot_id": self.snapshot_id,
            "read": self.read,
            "compared": self.compared,
            "equal": self.equal,
            "differing": self.differing,
            "unmatched": self.unmatched,
            "undecodable": self.undecodable,
            "ratio": self.ratio,
            "examples": self.examples,
        }


def id_resolver(
    view: FeatureView, known_ids: Collection[str], hash_key: SecretStr | None
) -> Callable[[str], str | None]:
    """How a logged entity key maps back to an id of ``view``; None when it cannot.

    Raises:
        ConfigError: the entity is hashed and the key is missing or too short.
    """
    mode = view.entity.log_key
    if mode == "plain":
        return lambda key: key
    if mode == "redact":
        return lambda _: None
    # The same writer the log used, so a key maps back exactly when the log wrote it from that id.
    write = key_writer(view.entity, hash_key)
    by_key = {write(entity_id): entity_id for entity_id in known_ids}
    return by_key.get


def compare(
    view: FeatureView,
    records: Sequence[LoggedRecord],
    offline: OfflineTiles,
    resolve: Callable[[str], str | None],
    report: LogSkewReport,
) -> LogSkewReport:
    """Compare logged records with Iceberg at each record's window end; counts go to ``report``."""
    names = set(view.feature_names)
    comparable: list[tuple[LoggedRecord, str]] = []
    for record in records:
        entity = resolve(record.entity_key)
        if entity is None or not record.features or any(f.name not in names for f in record.features):
            report.unmatched += 1
        else:
            comparable.append((record, entity))
    if not comparable:
        return report
    frame = pa.table(
        {
            view.entity.join_key: pa.array([entity for _, entity in comparable], pa.string()),
            "event_timestamp": pa.array(
                [to_ms(r.window_end) for r, _ in comparable], pa.timestamp("ms", tz="UTC")
            ),
        }
    )
    features = [f"{view.name}:{name}" for name in view.feature_names]
    table = get_historical_features(
        frame, features, views={view.name: view}, tiles={view.name: offline}
    ).table
    columns = {
        name: (table.column(ref).to_pylist(), table.column(f"{ref}:status").to_pylist())
        for name, ref in zip(view.feature_names, features, strict=True)
    }
    for index, (record, _) in enumerate(comparable):
        report.compared += 1
        diffs = {}
        for served in record.features:
            values, statuses = columns[served.name]
            value, status = values[index], statuses[index]
            if served.status != status or not same_value(served.value, value):
                diffs[served.name] = {"served": [served.value, served.status], "offline": [value, status]}
        if not diffs:
            report.equal += 1
            continue
        report.differing += 1
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(
                {
                    "trace_id": record.trace_id,
                    "entity_key": record.entity_key,
                    "request_time": record.request_time.isoformat(),
                    "window_end": record.window_end.isoformat(),
                    "features": diffs,
                }
            )
    return report


def same_value(served: float | None, offline: float | None) -> bool:
    """Equal within rounding: the log carries every value as a double."""
    if served is None or offline is None:
        return served is offline
    if math.isnan(served) or math.isnan(offline):
        return math.isnan(served) and math.isnan(offline)
    return math.isclose(served, offline, rel_tol=REL_TOLERANCE, abs_tol=0.0)


def read_log(
    view: str,
    topic: str,
    *,
    max_records: int,
    since: datetime | None = None,
    kafka: KafkaConfig | None = None,
    registry: RegistryConfig | None = None,
    timeout_s: float = 10.0,
) -> tuple[list[LoggedRecord], int]:
    """Up to ``max_records`` records of ``view`` before the topic's current end, and the undecodable count.

    Raises:
        ReadError: the topic does not exist, Kafka fails, or the end is not reached in time.
    """
    kafka = kafka or KafkaConfig()
    session = registry_client(registry or RegistryConfig())
    deserializer = AvroDeserializer(session)
    context = SerializationContext(topic, MessageField.VALUE)
    # A group of its own that never commits: the check moves no one's offsets.
    consumer = Consumer(
        librdkafka_config(kafka)
        | {
            "group.id": f"parity-log-skew-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    records: list[LoggedRecord] = []
    undecodable = 0
    try:
        starts, ends = _bounds(consumer, topic, since, timeout_s)
        pending = {p for p, start in starts.items() if start < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while pending and len(records) < max_records:
            if time.monotonic() > deadline:
                raise ReadError(
                    f"no record of {topic!r} arrived for {IDLE_TIMEOUT_S:g} s before its end offsets; "
                    "is Kafka reachable?"
                )
            for message in consumer.consume(num_messages=500, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise ReadError(f"reading {topic!r} failed: {error.str()}")
                    continue
                deadline = time.monotonic() + IDLE_TIMEOUT_S
                partition, offset = message.partition(), message.offset()
                if partition not in pending or offset is None or partition is None:
                    continue
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
                if offset >= ends[partition] or len(records) >= max_records:
                    continue
                try:
                    decoded = deserializer(message.value(), context)
                except Exception:  # a record the registry's schema cannot read is counted, not fatal
                    undecodable += 1
                    continue
                if not isinstance(decoded, dict) or decoded.get("view") != view:
                    continue
                record = LoggedRecord.of(decoded)
                if since is None or record.request_time >= since:
                    records.append(record)
    except KafkaException as exc:
        raise ReadError(f"reading {topic!r} from {kafka.bootstrap_servers} failed: {exc}") from exc
    finally:
        consumer.close()
        session.close()
    return records, undecodable


def _bounds(
    consumer: Consumer, topic: str, since: datetime | None, timeout_s: float
) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition: the first offset to read and the end offset taken now."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise ReadError(
            f"topic {topic!r} does not exist; is served-feature logging on (PARITY_SERVING_LOG_SAMPLE_RATE)?"
        )
    starts, ends = {}, {}
    for partition in sorted(metadata.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        starts[partition], ends[partition] = low, high
    if since is not None:
        wanted = [TopicPartition(topic, p, to_ms(since)) for p in starts]
        for found in consumer.offsets_for_times(wanted, timeout=timeout_s):
            # -1: no record at or after the time, so nothing to read in that partition.
            starts[found.partition] = found.offset if found.offset >= 0 else ends[found.partition]
    return starts, ends


def check_log_skew(
    view: FeatureView,
    offline: OfflineTiles,
    *,
    topic: str,
    hash_key: SecretStr | None,
    max_records: int,
    since: datetime | None = None,
    kafka: KafkaConfig | None = None,
    registry: RegistryConfig | None = None,
) -> LogSkewReport:
    """Read the view's logged records and compare them with Iceberg.

    Raises:
        ConfigError: the view's entity is hashed and ``hash_key`` is unusable.
        ReadError: the log could not be read.
    """
    # Before anything is read: a missing hash key must stop the check, not show up as unmatched.
    resolve = id_resolver(view, offline.by_entity, hash_key)
    records, undecodable = read_log(
        view.name, topic, max_records=max_records, since=since, kafka=kafka, registry=registry
    )
    report = LogSkewReport(view.name, topic, offline.snapshot_id, read=len(records), undecodable=undecodable)
    return compare(view, records, offline, resolve, report)
