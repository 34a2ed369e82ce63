"""The served-feature log without Kafka: sampling, records, redaction, drops, never failing a read."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import fastavro
import httpx
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.schema_registry.error import SchemaRegistryError
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from features.definition import Entity
from parity.config import RedisConfig
from parity.errors import ConfigError, DefinitionError
from schemas.avro import latest
from serving import online
from serving.assembly import to_ms
from serving.config import ServingConfig
from serving.feature_log import REDACTED, FeatureLogger
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from tests.unit.test_serving_fakes import FakeRedis, down
from tests.unit.views import spend, user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "unit-test-hmac-key-0123456789"
VIEWS = {"user_stats": user_stats, "spend": spend}
FEATURES = ["user_stats:clicks_7d", "spend:avg_amount_1d", "user_stats:click_rate_7d"]
SCHEMA = fastavro.parse_schema(latest("served_features").parsed)


def avro(record, _ctx) -> bytes:
    """What the registry's serializer writes, minus the wire-format header: fails on a record unfit for it."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def decode(value: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(value), SCHEMA)


class DeliveryError:
    def str(self) -> str:
        return "Local: Message timed out"


class FakeProducer:
    """Records what is produced; deliveries are reported on poll and flush, as librdkafka does."""

    def __init__(self, *, fail_delivery: bool = False, refuse: Exception | None = None) -> None:
        self.values: list[bytes] = []
        self.pending: list = []
        self.fail_delivery = fail_delivery
        self.refuse = refuse
        self.outstanding_after_flush = 0
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def produce(self, topic, *, value=None, key=None, on_delivery=None, timestamp=0):
        self.waiting.set()
        self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        self.values.append(value)
        self.pending.append(on_delivery)

    def poll(self, timeout=0.0):
        served, self.pending = self.pending, []
        for callback in served:
            callback(DeliveryError() if self.fail_delivery else None, None)
        return len(served)

    def flush(self, timeout=0.0):
        self.poll()
        return self.outstanding_after_flush

    def list_topics(self, topic=None, timeout=-1):
        return None


@pytest.fixture
def fake(monkeypatch):
    client = FakeRedis(VIEWS, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    rng = random.Random(3)
    for u in range(4):
        for hour in sorted(rng.sample(range(24 * 8), 30)):
            start = to_ms(T0) + hour * HOUR
            client.put(user_stats, TileRow(f"user-{u}", start, start + HOUR, 3, (2, 1)))
            client.put(spend, TileRow(f"user-{u}", start, start + HOUR, 1, (1, 2.5, 2.5, 2.5)))
    for view in VIEWS.values():
        client.set_completeness(view, to_ms(T0) + 24 * 8 * HOUR)
    return client


def serving(**settings) -> ServingConfig:
    return ServingConfig(**{"log_sample_rate": 1.0, "log_hash_key": SecretStr(KEY), **settings})


def make(views=VIEWS, producer=None, serializer=avro, **settings):
    metrics = ServingMetrics(CollectorRegistry())
    producer = producer or FakeProducer()
    logger = FeatureLogger(
        views, serving(**settings), metrics=metrics, producer=producer, serializer=serializer
    )
    store = OnlineStore(
        RedisConfig(key_prefix="t"), views, serving=serving(**settings), metrics=metrics, feature_log=logger
    )
    return store, logger, producer, metrics


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def hmac_hex(entity_id: str) -> str:
    return hmac.new(KEY.encode(), entity_id.encode(), hashlib.sha256).hexdigest()


def read(store, users, features=FEATURES):
    as_of = datetime(2026, 1, 8, 12, tzinfo=UTC)
    return store.get_online_features(features, [{"user_id": u} for u in users], as_of=as_of)


def test_each_record_holds_what_the_read_returned_with_the_trace_id_and_the_hashed_key(fake):
    store, logger, producer, metrics = make()
    users = ["user-0", "user-1", "user-3", "cold-user"]
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as parent:
        rows = read(store, users)
    logger.close()
    records = [decode(v) for v in producer.values]
    assert len(records) == 2 * len(users)  # one per view and entity
    trace_id = format(parent.get_span_context().trace_id, "032x")
    by_key = {(r["view"], r["entity_key"]): r for r in records}
    for user, row in zip(users, rows, strict=True):
        for view in VIEWS:
            record = by_key[(view, hmac_hex(user))]
            wanted = [f for f in FEATURES if f.startswith(f"{view}:")]
            assert [f["name"] for f in record["features"]] == [w.split(":")[1] for w in wanted]
            assert [(f["value"], f["status"]) for f in record["features"]] == [
                (row[w].value, row[w].status.value) for w in wanted
            ]
            assert record["window_end"] == row[wanted[0]].window_end
            assert record["trace_id"] == trace_id
            assert record["request_time"].tzinfo is not None
    assert {f["status"] for r in records for f in r["features"]} >= {"present", "missing"}
    # The raw ids never reach the topic, in any field.
    assert not any(user.encode() in value for user in users for value in producer.values)
    assert sample(metrics, "feature_log_records_total") == len(records)
    store.close()


def test_redact_and_plain_entities_and_no_trace_outside_a_span(fake):
    redacted = replace(user_stats, entity=Entity("user", "user_id", log_key="redact"))
    plain = replace(spend, entity=Entity("user", "user_id", log_key="plain"))
    store, logger, producer, _ = make({"user_stats": redacted, "spend": plain}, log_hash_key=None)
    read(store, ["user-2"])
    logger.close()
    records = {r["view"]: r for r in map(decode, producer.values)}
    assert records["user_stats"]["entity_key"] == REDACTED
    assert records["spend"]["entity_key"] == "user-2"
    assert records["user_stats"]["trace_id"] is None


def test_hashing_without_a_usable_key_refuses_to_start():
    for key in (None, SecretStr(""), SecretStr("short")):
        with pytest.raises(ConfigError, match="PARITY_SERVING_LOG_HASH_KEY"):
            FeatureLogger(VIEWS, serving(log_hash_key=key), producer=FakeProducer(), serializer=avro)


def test_entity_log_key_is_validated():
    with pytest.raises(DefinitionError, match=r"log_key 'md5' is not one of \['hash', 'redact', 'plain'\]"):
        Entity("user", "user_id", log_key="md5")  # type: ignore[arg-type]
    assert Entity("user", "user_id").log_key == "hash"


def test_the_hash_key_is_a_secret_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PARITY_SERVING_LOG_HASH_KEY", KEY)
    cfg = ServingConfig()
    assert cfg.log_hash_key is not None and cfg.log_hash_key.get_secret_value() == KEY
    assert KEY not in repr(cfg)
    assert cfg.log_sample_rate == 0.0  # off unless asked for


def test_sampling_is_decided_before_anything_is_built(fake):
    draws = iter([0.05, 0.5, 0.2, 0.99, 0.0])
    metrics = ServingMetrics(CollectorRegistry())
    logger = FeatureLogger(
        VIEWS,
        serving(log_sample_rate=0.25),
        metrics=metrics,
        producer=FakeProducer(),
        serializer=avro,
        draw=lambda: next(draws),
    )
    calls = []
    original = logger.log
    logger.log = lambda *args: calls.append(args) or original(*args)  # type: ignore[method-assign]
    store = OnlineStore(RedisConfig(key_prefix="t"), VIEWS, metrics=metrics, feature_log=logger)
    for _ in range(5):
        read(store, ["user-0"], ["user_stats:clicks_7d"])
    logger.close()
    assert len(calls) == 3  # draws 0.05, 0.2 and 0.0 fall below 0.25
    assert sample(metrics, "feature_log_records_total") == 3

    off = FeatureLogger(VIEWS, serving(log_sample_rate=0.0), producer=FakeProducer(), serializer=avro)
    assert not any(off.sampled() for _ in range(1000))
    off.close()


def test_a_full_queue_drops_and_counts_without_waiting(fake):
    producer = FakeProducer()
    producer.gate.clear()  # the log's thread blocks on its first record, as behind a stuck broker
    store, logger, _, metrics = make(producer=producer, log_queue_size=2, log_close_timeout_s=0.5)
    read(store, ["user-0", "user-1"])
    assert producer.waiting.wait(5)
    started = time.perf_counter()
    for _ in range(5):
        read(store, ["user-0", "user-1"])
    elapsed = time.perf_counter() - started
    # The first read is held by the thread, two wait in the queue, three are dropped: 2 views x 2 rows each.
    assert sample(metrics, "feature_log_dropped_total", reason="queue_full") == 3 * 4
    assert elapsed < 1.0
    producer.gate.set()
    logger.close()
    assert sample(metrics, "feature_log_records_total") == 3 * 4


@pytest.mark.parametrize(
    ("serializer_error", "refuse", "fail_delivery", "reason"),
    [
        (SchemaRegistryError(503, 50003, "unavailable"), None, False, "registry"),
        (httpx.ConnectError("connection refused"), None, False, "registry"),
        (ValueError("not a double"), None, False, "serialize"),
        (None, BufferError("Local: Queue full"), False, "kafka"),
        (None, KafkaException("broker down"), False, "kafka"),
        (None, None, True, "kafka"),
    ],
)
def test_registry_and_kafka_failures_are_counted_never_raised(
    fake, serializer_error, refuse, fail_delivery, reason
):
    def failing(record, ctx):
        raise serializer_error

    producer = FakeProducer(refuse=refuse, fail_delivery=fail_delivery)
    store, logger, _, metrics = make(producer=producer, serializer=failing if serializer_error else avro)
    rows = read(store, ["user-0", "user-1"])
    assert rows[0]["user_stats:clicks_7d"].status.value == "present"
    logger.close()
    assert sample(metrics, "feature_log_dropped_total", reason=reason) == 4
    assert sample(metrics, "feature_log_records_total") == 0


def test_a_read_that_fails_over_to_defaults_is_logged_too(fake):
    store, logger, producer, _ = make()
    fake.fail = down()
    rows = read(store, ["user-0"])
    logger.close()
    statuses = {f["status"] for r in map(decode, producer.values) for f in r["features"]}
    assert statuses == {"error"} == {v.status.value for v in rows[0].values()}


def test_close_flushes_within_its_timeout_and_counts_the_rest(fake):
    producer = FakeProducer()
    producer.outstanding_after_flush = 3
    store, logger, _, metrics = make(producer=producer)
    read(store, ["user-0"])
    logger.close()
    assert sample(metrics, "feature_log_dropped_total", reason="closed") == 3
    read(store, ["user-0"])  # after close: counted, not sent, not raised
    assert sample(metrics, "feature_log_dropped_total", reason="closed") == 3 + 2

    stuck = FakeProducer()
    stuck.gate.clear()
    store, logger, _, metrics = make(producer=stuck, log_close_timeout_s=0.3)
    read(store, ["user-0"])
    read(store, ["user-1"])
    started = time.monotonic()
    logger.close()
    assert time.monotonic() - started < 1.0
    stuck.gate.set()


def test_serve_refuses_to_start_logging_without_the_hash_key():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARITY_SERVING_")}
    env["PARITY_SERVING_LOG_SAMPLE_RATE"] = "0.5"
    done = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "PARITY_SERVING_LOG_HASH_KEY" in done.stderr
    assert "Deprecat" not in done.stderr
