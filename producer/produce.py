"""Producing Avro events to Kafka in the Confluent wire format.

Values are framed as magic byte 0, a 4-byte schema id and the Avro body, under
the subject ``<topic>-value`` (TopicNameStrategy). Keys are the entity key
(``user_id``) as UTF-8 bytes, so one user's events share a partition and keep
their order; idempotence keeps that order across broker retries.

Protocol of ``produce_events``:

1. Resolve the schema version to write with (pinned or latest).
2. Check the broker answers, then serialize the first event, which registers
   the schema if needed; either failing raises before anything is sent.
3. Produce every event; each delivery report is counted, failures keep their
   reason.
4. Flush with a timeout; whatever is still undelivered counts as failed.

Guarantee: at-least-once per ``produce_events`` call. An event reported as
failed may still have reached Kafka; ``event_id`` identifies such duplicates.

Records carry the time they are produced, not the event time. The broker
forgets an idempotent producer once its newest record timestamp is older than
``producer.id.expiration.ms`` (one day by default), and it checks that on every
restart: records stamped with old event times (a backfill) would lose their
de-duplication across a broker restart, and a retried batch would be written
twice. The replay maps a time range to offsets with the same produce times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from opentelemetry import trace

from parity.config import KafkaConfig, RegistryConfig
from parity.errors import InputError, ParityError, SchemaError
from parity.kafka_security import explain, librdkafka_config
from producer.config import ProducerConfig
from producer.records import read_jsonl
from schemas.avro import SchemaVersion, versions
from schemas.registry import confluent_settings, connection_error, refused_login

__all__ = [
    "DEFAULT_SCHEMA",
    "KEY_FIELD",
    "ProduceSummary",
    "ProgressCallback",
    "kafka_conf",
    "produce_events",
    "read_jsonl",
    "resolve_schema",
    "subject_for",
]

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "ad_event"
# The view's entity join key: partitioning by it keeps each user's events in order.
KEY_FIELD = "user_id"
# Enough reasons to diagnose a failure without flooding the terminal.
_MAX_REASONS = 5

Serializer = Callable[[Any, SerializationContext], bytes | None]
ProgressCallback = Callable[[int, int], None]


class MessageProducer(Protocol):
    """The part of ``confluent_kafka.Producer`` used here; tests pass an in-memory fake."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = ...,
        key: bytes | None = ...,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = ...,
    ) -> None:
        """Queue one message; raises ``BufferError`` when the local queue is full."""

    def poll(self, timeout: float = ...) -> int:
        """Serve delivery callbacks."""

    def flush(self, timeout: float = ...) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any:
        """Cluster metadata; raises ``KafkaException`` when no broker answers."""


@dataclass
class ProduceSummary:
    """What happened to a batch of events.

    Attributes:
        sent: Events Kafka acknowledged.
        failed: Events that failed to produce or were not acknowledged in time.
        seconds: Wall time from the first produce to the end of the flush.
        errors: The first few failure reasons.
    """

    sent: int
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary: ``sent N, failed M, X events/s``."""
        return f"sent {self.sent}, failed {self.failed}, {self.events_per_s:.0f} events/s"


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


def resolve_schema(name: str = DEFAULT_SCHEMA, version: int | None = None) -> SchemaVersion:
    """``schemas/<name>/v<version>.avsc``, or the latest version when ``version`` is None.

    Raises:
        SchemaError: the schema or that version does not exist.
    """
    known = versions(name)
    if version is None:
        return known[-1]
    for candidate in known:
        if candidate.version == version:
            return candidate
    raise SchemaError(
        f"schemas/{name}/v{version}.avsc does not exist; known versions: {[v.version for v in known]}."
    )


def kafka_conf(kafka: KafkaConfig, tuning: ProducerConfig) -> dict[str, Any]:
    """librdkafka settings for an ordered, idempotent producer."""
    return librdkafka_config(kafka) | {
        # Idempotence implies acks=all and keeps per-partition order when batches are retried.
        "enable.idempotence": True,
        "linger.ms": tuning.linger_ms,
        "compression.type": tuning.compression_type,
        "message.timeout.ms": int(tuning.message_timeout_s * 1000),
    }


def registry_client(registry: RegistryConfig) -> SchemaRegistryClient:
    """A registry client that gives up quickly: one retry, so an absent registry fails in seconds."""
    return SchemaRegistryClient(
        {
            "url": registry.url,
            "timeout": registry.timeout_s,
            "max.retries": 1,
            "retries.wait.ms": 200,
            "retries.max.wait.ms": 1000,
            **confluent_settings(registry),
        }
    )


def avro_serializer(client: SchemaRegistryClient, schema: SchemaVersion) -> Serializer:
    """An AvroSerializer writing ``schema`` under ``<topic>-value``, registering it if needed."""
    serializer: Serializer = AvroSerializer(
        client,
        schema.text,
        conf={
            "auto.register.schemas": True,
            # The default strategy of confluent-kafka >= 2.14 first asks the registry for
            # topic "associations", an API the Apicurio ccompat registry does not have.
            # The plain callable keeps the classic <topic>-value subject on every version.
            "subject.name.strategy": topic_subject_name_strategy,
        },
    )
    return serializer


def produce_events(
    events: Sequence[dict[str, Any]],
    topic: str,
    kafka: KafkaConfig,
    registry: RegistryConfig,
    schema_version: int | None = None,
    *,
    schema_name: str = DEFAULT_SCHEMA,
    tuning: ProducerConfig | None = None,
    on_progress: ProgressCallback | None = None,
    producer: MessageProducer | None = None,
    serializer: Serializer | None = None,
) -> ProduceSummary:
    """Produce events (already valid for the schema) and wait for every delivery report.

    Args:
        events: Avro-ready dicts, in the order to produce them.
        topic: Target topic; values go under subject ``<topic>-value``.
        kafka: Where the broker is.
        registry: Where the schema registry is.
        schema_version: Write with ``schemas/<schema_name>/v<N>.avsc``; None for the latest.
        schema_name: Folder under ``schemas/``.
        tuning: Producer settings; read from PARITY_PRODUCER_* when None.
        on_progress: Called with (produced, total) about every ``tuning.progress_interval_s``.
        producer: Used instead of a new ``confluent_kafka.Producer`` (tests).
        serializer: Used instead of a registry-backed ``AvroSerializer`` (tests).

    Returns:
        Counts of acknowledged and failed events; check ``failed``, nothing is raised for it.

    Raises:
        SchemaError: the schema version is unknown, the registry is unreachable, or it
            refused the schema (incompatible or invalid).
        InputError: an event cannot be serialized with the schema.
        ParityError: no Kafka broker answers.
    """
    tuning = tuning or ProducerConfig()
    schema = resolve_schema(schema_name, schema_version)
    registry_session = None
    if serializer is None:
        registry_session = registry_client(registry)
        serializer = avro_serializer(registry_session, schema)
    tracer = trace.get_tracer("parity.producer")
    try:
        with tracer.start_as_current_span(
            "produce", attributes={"messaging.destination.name": topic, "parity.events": len(events)}
        ) as span:
            summary = _produce_all(
                events, topic, kafka, registry, schema, tuning, on_progress, producer, serializer
            )
            span.set_attribute("parity.sent", summary.sent)
            span.set_attribute("parity.failed", summary.failed)
            return summary
    finally:
        if registry_session is not None:
            # Closes the registry's HTTP connections; left open they leak sockets.
            registry_session.close()


def _produce_all(
    events: Sequence[dict[str, Any]],
    topic: str,
    kafka: KafkaConfig,
    registry: RegistryConfig,
    schema: SchemaVersion,
    tuning: ProducerConfig,
    on_progress: ProgressCallback | None,
    producer: MessageProducer | None,
    serializer: Serializer,
) -> ProduceSummary:
    client: MessageProducer = producer if producer is not None else Producer(kafka_conf(kafka, tuning))
    _check_broker(client, kafka, tuning)
    ctx = SerializationContext(topic, MessageField.VALUE)
    if events:
        # The first serialization registers the schema; a refusal must stop us before any send.
        _serialize(serializer, events[0], ctx, 0, registry, schema, topic)

    tally = _Tally()
    started = time.monotonic()
    next_report = started + tuning.progress_interval_s
    total = len(events)
    for index, event in enumerate(events):
        value = _serialize(serializer, event, ctx, index, registry, schema, topic)
        key = str(event[KEY_FIELD]).encode()
        _produce_one(client, topic, key, value, tally)
        if index % 1000 == 0:
            client.poll(0)
            now = time.monotonic()
            if on_progress is not None and now >= next_report:
                on_progress(index + 1, total)
                next_report = now + tuning.progress_interval_s
    outstanding = client.flush(tuning.flush_timeout_s)
    if outstanding:
        tally.fail(outstanding, f"{outstanding} still undelivered after a {tuning.flush_timeout_s:g} s flush")
    seconds = time.monotonic() - started
    summary = ProduceSummary(tally.sent, tally.failed, seconds, tally.reasons)
    log.info("%s: %s", topic, summary.line())
    return summary


class _Tally:
    """Delivery outcomes; the callback runs on the producing thread inside poll/flush."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.reasons: list[str] = []

    def fail(self, count: int, reason: str) -> None:
        self.failed += count
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.sent += 1
        else:
            self.fail(1, f"partition {msg.partition()}: {err.str()}")


def _produce_one(
    producer: MessageProducer, topic: str, key: bytes, value: bytes | None, tally: _Tally
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=tally.on_delivery)
            return
        except BufferError:
            # The local queue is full: serve delivery reports until there is room.
            producer.poll(0.1)
        except KafkaException as exc:
            tally.fail(1, str(exc.args[0]) if exc.args else repr(exc))
            return


def _check_broker(producer: MessageProducer, kafka: KafkaConfig, tuning: ProducerConfig) -> None:
    """Wait up to ``tuning.connect_timeout_s`` for the brokers' metadata.

    A secured connection is asked in short steps, each followed by a ``poll`` that
    serves the error callback: a refused login or TLS handshake raises ``ConfigError``
    there at once (see ``librdkafka_config``) instead of after the whole wait.
    """
    secured = kafka.security_protocol != "PLAINTEXT"
    deadline = time.monotonic() + tuning.connect_timeout_s
    while True:
        step = min(0.5, tuning.connect_timeout_s) if secured else tuning.connect_timeout_s
        try:
            producer.list_topics(timeout=step)
            return
        except KafkaException as exc:
            producer.poll(0)
            if secured and time.monotonic() < deadline:
                continue
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            cause = f": {explain(kafka, error)}" if error is not None else ""
            raise ParityError(
                f"no Kafka broker answered at {kafka.bootstrap_servers} within {tuning.connect_timeout_s:g} s"
                f"{cause}. Start the local stack with `make up` or set PARITY_KAFKA_BOOTSTRAP_SERVERS."
            ) from exc


def _serialize(
    serializer: Serializer,
    event: dict[str, Any],
    ctx: SerializationContext,
    index: int,
    registry: RegistryConfig,
    schema: SchemaVersion,
    topic: str,
) -> bytes | None:
    try:
        return serializer(event, ctx)
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            raise refused_login(registry, exc.http_status_code) from exc
        raise _registry_refusal(exc, schema, topic) from exc
    except httpx.HTTPError as exc:
        raise connection_error(registry, exc) from exc
    except (TypeError, ValueError, AttributeError, SerializationError) as exc:
        raise InputError(
            f"event #{index} ({event.get('event_id', '?')}) cannot be written with "
            f"{schema.name} v{schema.version}: {exc}"
        ) from exc


def _registry_refusal(exc: SchemaRegistryError, schema: SchemaVersion, topic: str) -> SchemaError:
    where = f"schemas/{schema.name}/v{schema.version}.avsc under subject {subject_for(topic)!r}"
    if exc.http_status_code == 409:
        return SchemaError(
            f"the registry refused {where} as incompatible: {exc.error_message}. Make the change "
            "compatible (e.g. add new fields with defaults) in a new version, or write with a "
            "version already registered there via --schema-version."
        )
    if exc.http_status_code == 422:
        return SchemaError(
            f"the registry refused {where} as invalid: {exc.error_message}. Fix the .avsc file "
            "(check it with fastavro.parse_schema) and retry."
        )
    return SchemaError(f"the registry failed on {where}: {exc}")
