"""Served-feature logging against the real Kafka and registry.

Tiles are written the way the job writes them, without Flink (``seed``); reads
are logged at sample rate 1.0 to a topic private to the test, and the topic
is read back with the registry's AvroDeserializer: each record must hold what
its read returned, under the read's trace id, with the entity id hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from features.user_stats import view as user_stats
from parity.config import KafkaConfig, RegistryConfig
from producer.produce import registry_client
from schemas.avro import latest
from schemas.registry import RegistryClient
from serving.assembly import from_ms, to_ms
from serving.config import ServingConfig
from serving.feature_log import FeatureLogger
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from tests.integration.conftest import HttpServer, wait_for
from tests.integration.test_serving_consistency import HOUR, T0, seed

pytestmark = pytest.mark.integration

KEY = "integration-hmac-key-0123456789"
FEATURES = [f"user_stats:{f}" for f in user_stats.feature_names]
# Raw ids that could not turn up in a record by chance.
USERS = ["alice.raw-id-7f3a@example.com", "bob.raw-id-91c2", "carol.raw-id-05de", "cold.raw-id-never-seen"]


def hmac_hex(entity_id: str) -> str:
    return hmac.new(KEY.encode(), entity_id.encode(), hashlib.sha256).hexdigest()


def seed_users(iso) -> int:
    """Three users' tiles (impressions, clicks, mobile clicks) over three days; returns the watermark."""
    rows = [
        TileRow(user, to_ms(T0) + hour * HOUR, to_ms(T0) + (hour + 1) * HOUR, 3 + u, (2 + u, 1, 1))
        for u, user in enumerate(USERS[:3])
        for hour in range(u, 72, 5)
    ]
    return seed(iso, rows, closed_hours=72)


def consume(topic: str, count: int, timeout: float = 60) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": KafkaConfig().bootstrap_servers,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([topic])
        while len(messages) < count and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(num_messages=100, timeout=1) if m.error() is None]
    finally:
        consumer.close()
    return messages


def decode(topic: str, messages: list[Message]) -> list[dict]:
    session = registry_client(RegistryConfig())
    try:
        deserializer = AvroDeserializer(session)
        context = SerializationContext(topic, MessageField.VALUE)
        return [deserializer(m.value(), context) for m in messages]
    finally:
        session.close()


def assert_no_raw_id(messages: list[Message]) -> None:
    for message in messages:
        for user in USERS:
            assert user.encode() not in message.value()
            assert message.key() is None or user.encode() not in message.key()


def test_logged_records_equal_what_reads_returned_under_their_trace_id_with_hashed_keys(isolated):
    topic = f"{isolated.topic}.served-features"
    watermark = seed_users(isolated)
    cfg = ServingConfig(log_sample_rate=1.0, log_topic=topic, log_hash_key=SecretStr(KEY))
    metrics = ServingMetrics(CollectorRegistry())
    views = {"user_stats": user_stats}
    logger = FeatureLogger(views, cfg, metrics=metrics)
    store = OnlineStore(isolated.redis, views, serving=cfg, metrics=metrics, feature_log=logger)
    tracer = TracerProvider().get_tracer(__name__)
    reads: dict[str, list] = {}  # trace id -> rows
    try:
        # At the watermark (values the sink precomputed) and 30 h before it (merged at read time).
        for as_of in (from_ms(watermark), from_ms(watermark - 30 * HOUR)):
            with tracer.start_as_current_span("request") as span:
                rows = store.get_online_features(FEATURES, [{"user_id": u} for u in USERS], as_of=as_of)
            reads[format(span.get_span_context().trace_id, "032x")] = rows
    finally:
        store.close()
        logger.close()
    expected = len(reads) * len(USERS)
    assert metrics.registry.get_sample_value("feature_log_records_total") == expected
    assert metrics.registry.get_sample_value("feature_log_dropped_total", {"reason": "kafka"}) == 0

    messages = consume(topic, expected)
    assert len(messages) == expected
    assert_no_raw_id(messages)
    records = decode(topic, messages)
    statuses = set()
    seen = set()
    for record in records:
        rows = reads[record["trace_id"]]
        (index,) = [i for i, user in enumerate(USERS) if hmac_hex(user) == record["entity_key"]]
        row = rows[index]
        assert record["view"] == "user_stats"
        assert [f["name"] for f in record["features"]] == list(user_stats.feature_names)
        assert [(f["value"], f["status"]) for f in record["features"]] == [
            (row[name].value, row[name].status.value) for name in FEATURES
        ]
        assert record["window_end"] == row[FEATURES[0]].window_end
        assert record["request_time"].tzinfo is not None
        statuses.update(f["status"] for f in record["features"])
        seen.add((record["trace_id"], index))
    assert len(seen) == expected  # each (read, entity) once
    assert {"present", "missing"} <= statuses

    # The serializer registered the schema under the topic's subject.
    with RegistryClient(RegistryConfig()) as client:
        assert client.lookup(f"{topic}-value", latest("served_features").text) is not None


def test_serve_logs_sampled_http_reads(isolated, tmp_path):
    topic = f"{isolated.topic}.served-http"
    watermark = seed_users(isolated)
    env = isolated.env() | {
        "PARITY_SERVING_LOG_SAMPLE_RATE": "1",
        "PARITY_SERVING_LOG_TOPIC": topic,
        "PARITY_SERVING_LOG_HASH_KEY": KEY,
        "PARITY_SERVING_TRACE_EXPORTER": "console",
    }
    log = tmp_path / "serve.log"
    body = {
        "features": ["user_stats:clicks_7d"],
        "entities": [{"user_id": u} for u in USERS[:2]],
        "as_of": from_ms(watermark).isoformat(),
    }
    with HttpServer(env, log, healthy=(200, 503)) as base:
        response = httpx.post(f"{base}/features", json=body)
        assert response.status_code == 200, response.text
        served = [r["features"]["user_stats:clicks_7d"] for r in response.json()["results"]]
        pattern = re.compile(r"^feature_log_records_total ([0-9.]+)$", re.MULTILINE)

        def acknowledged() -> bool:
            match = pattern.search(httpx.get(f"{base}/metrics").text)
            return match is not None and float(match.group(1)) == 2

        wait_for(acknowledged, timeout=30, what="two records acknowledged", detail=log.read_text)
    messages = consume(topic, 2)
    assert_no_raw_id(messages)
    records = {r["entity_key"]: r for r in decode(topic, messages)}
    assert [v["status"] for v in served] == ["present", "present"]
    for user, value in zip(USERS[:2], served, strict=True):
        (feature,) = records[hmac_hex(user)]["features"]
        assert (feature["value"], feature["status"]) == (value["value"], value["status"])
    (trace_id,) = {r["trace_id"] for r in records.values()}
    # The console exporter prints the read's span with its trace id.
    wait_for(lambda: f"0x{trace_id}" in log.read_text(), timeout=15, what="the read's span in the log")
