"""Served-feature logging: a sample of online reads, as Avro records on a Kafka topic.

Training needs what the model was actually served; this log records it. One
record per sampled read, view and entity row (``schemas/served_features``):
when the read was served, its trace id, the view, the entity key as the
view's ``Entity.log_key`` declares, each feature's value and status, and the
window end they describe.

A read never waits for the log and never fails because of it:

1. ``OnlineStore`` asks ``sampled()`` first; a read that is not sampled does
   nothing more. A sampled one calls ``log``, which copies the rows it is
   handed (the caller owns them) and puts them on a bounded queue without
   waiting. A full queue drops the read, counted as ``queue_full``.
2. One thread takes reads off the queue, builds their records, writes each
   entity id as declared (an HMAC-SHA256 under PARITY_SERVING_LOG_HASH_KEY by
   default), serializes them with the registry's AvroSerializer (the newest
   version under ``schemas/served_features``, registered under
   ``<topic>-value`` on first use) and produces them.
3. Delivery reports count records (``feature_log_records_total``). Whatever
   the registry or Kafka refuses, or does not take in time, is dropped and
   counted in ``feature_log_dropped_total{reason}``; a warning is logged once
   per reason until a record gets through again.
4. ``close()`` stops taking reads, sends what is queued and flushes, within
   PARITY_SERVING_LOG_CLOSE_TIMEOUT_S; the rest is counted ``closed``.

Guarantee: at most once, best effort. A record is never sent twice, and one
that is lost is counted. Only the sample rate bounds the log's cost, so it is
a setting: a serializing thread shares the process with the reads.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from opentelemetry.trace import SpanContext
from pydantic import SecretStr

from features.definition import Entity, FeatureView
from parity.config import KafkaConfig, RegistryConfig
from parity.errors import ConfigError
from parity.kafka_security import librdkafka_config
from producer.produce import MessageProducer, Serializer, avro_serializer, registry_client
from schemas.avro import latest
from serving.assembly import FeatureValue, to_ms
from serving.config import ServingConfig
from serving.metrics import LOG_DROP_REASONS, ServingMetrics

if TYPE_CHECKING:
    from serving.online import FeatureRef

log = logging.getLogger(__name__)

SCHEMA = "served_features"
# What the log writes for an entity declared log_key="redact".
REDACTED = "<redacted>"
# A shorter HMAC key can be guessed, and with it every hashed id tried against the log.
MIN_HASH_KEY_CHARS = 16
# How long the thread waits for a read before it serves delivery reports and checks for close.
_IDLE_S = 0.1


class _Read(NamedTuple):
    """One sampled read, as queued for the log's thread."""

    served_ms: int
    span: SpanContext
    refs: Sequence[FeatureRef]
    entities: Mapping[str, Sequence[str]]  # per view, the entity id of each row
    rows: list[dict[str, FeatureValue]]

    @property
    def records(self) -> int:
        return len(self.rows) * len(self.entities)


def key_writer(entity: Entity, hash_key: SecretStr | None) -> Callable[[str], str]:
    """How the log writes an id of ``entity``: hashed, redacted or plain, as it declares.

    Raises:
        ConfigError: the entity is hashed and the key is missing or shorter than 16 characters.
    """
    if entity.log_key == "plain":
        return str
    if entity.log_key == "redact":
        return lambda _: REDACTED
    secret = hash_key.get_secret_value() if hash_key is not None else ""
    if len(secret) < MIN_HASH_KEY_CHARS:
        raise ConfigError(
            f"entity {entity.name!r} is logged hashed (log_key='hash'), so the served-feature log needs "
            f"PARITY_SERVING_LOG_HASH_KEY, a secret of at least {MIN_HASH_KEY_CHARS} characters"
            f"{' (it is shorter)' if secret else ''}; or set PARITY_SERVING_LOG_SAMPLE_RATE=0."
        )
    keyed = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def hashed(entity_id: str) -> str:
        digest = keyed.copy()  # the key's pads are computed once; a copy costs less than a new HMAC
        digest.update(entity_id.encode())
        return digest.hexdigest()

    return hashed


def kafka_conf(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings of the log's producer: bounded memory, batched, never retried forever.

    A refused login is not raised from the log's background thread (reads must not
    fail for the log): its records time out and are counted as dropped.
    """
    conf = librdkafka_config(kafka)
    conf.pop("error_cb", None)
    return conf | {
        "client.id": "parity-feature-log",
        # The log is not latency-sensitive; larger batches cost the process less.
        "linger.ms": 100,
        "compression.type": "lz4",
        # A record Kafka has not taken within this is dropped and counted, not held on to.
        "message.timeout.ms": 30_000,
        # While Kafka is away records wait here; past it they are dropped, so memory stays bounded.
        "queue.buffering.max.messages": 100_000,
    }


class FeatureLogger:
    """Logs a sample of online reads to Kafka; hand it to ``OnlineStore(feature_log=...)``.

    Args:
        views: the views reads may ask for; each entity's ``log_key`` is checked here, at start.
        cfg: sample rate, topic, queue size, hash key and close timeout (PARITY_SERVING_LOG_*).
        kafka: where the topic is; ``KafkaConfig()`` by default.
        registry: the schema registry; ``RegistryConfig()`` by default.
        metrics: where to count; the process-wide registry by default.
        producer: used instead of a new ``confluent_kafka.Producer`` (tests).
        serializer: used instead of the registry's AvroSerializer (tests).
        draw: a uniform number in [0, 1) per read, for sampling.

    Raises:
        ConfigError: a view's entity is hashed and PARITY_SERVING_LOG_HASH_KEY is unusable.
    """

    def __init__(
        self,
        views: Mapping[str, FeatureView],
        cfg: ServingConfig | None = None,
        *,
        kafka: KafkaConfig | None = None,
        registry: RegistryConfig | None = None,
        metrics: ServingMetrics | None = None,
        producer: MessageProducer | None = None,
        serializer: Serializer | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._cfg = cfg or ServingConfig()
        # Before anything is opened: a missing key must stop the start, not show up in the log.
        self._keys = {name: key_writer(view.entity, self._cfg.log_hash_key) for name, view in views.items()}
        self._rate = self._cfg.log_sample_rate
        self._draw = draw
        self._topic = self._cfg.log_topic
        self._context = SerializationContext(self._topic, MessageField.VALUE)
        metrics = metrics or ServingMetrics.default()
        self._delivered_total = metrics.log_records
        self._dropped = {reason: metrics.log_dropped.labels(reason) for reason in LOG_DROP_REASONS}
        self._queue: queue.Queue[_Read] = queue.Queue(maxsize=self._cfg.log_queue_size)
        self._session = None
        if serializer is None:
            self._session = registry_client(registry or RegistryConfig())
            serializer = avro_serializer(self._session, latest(SCHEMA))
        self._serializer = serializer
        self._producer: MessageProducer = producer or Producer(kafka_conf(kafka or KafkaConfig()))
        # Reasons already warned about; only the log's thread reads or changes it.
        self._failing: set[str] = set()
        self._deadline = math.inf
        self._closing = threading.Event()
        # A daemon: a send stuck past the close timeout must not keep the process from exiting.
        self._thread = threading.Thread(target=self._run, name="feature-log", daemon=True)
        self._thread.start()

    @property
    def topic(self) -> str:
        return self._topic

    def sampled(self) -> bool:
        """Is this read to be logged? Asked before anything is built for it."""
        rate = self._rate
        return rate >= 1.0 or (rate > 0.0 and self._draw() < rate)

    def log(
        self,
        refs: Sequence[FeatureRef],
        entities: Mapping[str, Sequence[str]],
        rows: Sequence[Mapping[str, FeatureValue]],
        span: SpanContext,
    ) -> None:
        """Queue one sampled read for the log's thread. Never waits, never raises.

        Args:
            refs: the features read, in request order.
            entities: per view, the entity id of each row.
            rows: what the read returned, one mapping per row keyed ``<view>:<feature>``.
            span: the read's span; its trace id goes into every record.
        """
        read = _Read(int(time.time() * 1000), span, refs, entities, [dict(row) for row in rows])
        if not read.records:
            return
        if self._closing.is_set():
            self._dropped["closed"].inc(read.records)
            return
        try:
            self._queue.put_nowait(read)
        except queue.Full:
            # Counted, not logged: a line per dropped read would flood the log when it matters least.
            self._dropped["queue_full"].inc(read.records)

    def close(self) -> None:
        """Stop taking reads; send what is queued and flush within the close timeout. Idempotent."""
        if self._closing.is_set():
            return
        timeout = self._cfg.log_close_timeout_s
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(timeout + 2 * _IDLE_S)
        if self._thread.is_alive():
            log.warning("served-feature log: still sending after %g s; leaving it", timeout)
        if self._session is not None:
            self._session.close()

    def _run(self) -> None:
        while True:
            try:
                read = self._queue.get(timeout=_IDLE_S)
            except queue.Empty:
                if self._closing.is_set():
                    break
                self._producer.poll(0)
                continue
            if time.monotonic() >= self._deadline:
                self._dropped["closed"].inc(read.records)
                continue
            try:
                self._send(read)
            except Exception:  # the thread must outlive any one read, or logging stops for good
                log.exception("served-feature log: a read could not be logged")
            self._producer.poll(0)
        left = self._producer.flush(max(0.0, self._deadline - time.monotonic()))
        if left:
            self._dropped["closed"].inc(left)

    def _send(self, read: _Read) -> None:
        try:
            records = self._records(read)
        except Exception as exc:  # e.g. a view this logger was not given
            self._drop("serialize", read.records, exc)
            return
        for index, record in enumerate(records):
            try:
                value = self._serializer(record, self._context)
            except (SchemaRegistryError, httpx.HTTPError) as exc:
                # The next record would wait for the same registry: give up on the read.
                self._drop("registry", len(records) - index, exc)
                return
            except Exception as exc:  # fastavro's errors are not one type
                self._drop("serialize", 1, exc)
                continue
            try:
                self._producer.produce(self._topic, value=value, on_delivery=self._delivered)
            except BufferError as exc:
                # librdkafka's queue is full: Kafka has been away a while. Never wait for it.
                self._drop("kafka", len(records) - index, exc)
                return
            except KafkaException as exc:
                self._drop("kafka", 1, exc)

    def _records(self, read: _Read) -> list[dict[str, Any]]:
        """One record per view and row, features in request order."""
        trace_id = format(read.span.trace_id, "032x") if read.span.is_valid else None
        by_view: dict[str, list[tuple[str, str]]] = {}
        for ref in read.refs:
            by_view.setdefault(ref.view.name, []).append((ref.feature, ref.qualified))
        records = []
        for view, features in by_view.items():
            key_of = self._keys[view]
            for entity_id, row in zip(read.entities[view], read.rows, strict=True):
                values = [(name, row[qualified]) for name, qualified in features]
                records.append(
                    {
                        "request_time": read.served_ms,
                        "trace_id": trace_id,
                        "view": view,
                        "entity_key": key_of(entity_id),
                        "features": [
                            {"name": name, "value": float(v.value), "status": v.status.value}
                            for name, v in values
                        ],
                        # Every feature of a view in one read describes the same window end.
                        "window_end": to_ms(values[0][1].window_end),
                    }
                )
        return records

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        # Called on the log's thread, inside poll and flush.
        if err is not None:
            self._drop("kafka", 1, err.str())
            return
        self._delivered_total.inc()
        if self._failing:
            self._failing.clear()

    def _drop(self, reason: str, count: int, cause: object) -> None:
        self._dropped[reason].inc(count)
        if reason not in self._failing:
            self._failing.add(reason)
            log.warning("served-feature log: dropping records (%s): %s", reason, cause)
