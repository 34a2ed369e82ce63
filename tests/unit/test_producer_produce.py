"""produce_events against in-memory fakes: delivery accounting, keys, and nothing sent on errors."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.schema_registry.error import SchemaRegistryError

from parity.config import KafkaConfig, RegistryConfig
from parity.errors import ParityError, SchemaError
from producer.config import ProducerConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from schemas.avro import latest

KAFKA = KafkaConfig(bootstrap_servers="kafka.invalid:9092")
REGISTRY = RegistryConfig(url="http://registry.invalid/apis/ccompat/v7")
TUNING = ProducerConfig(flush_timeout_s=0.1, progress_interval_s=0.001)


class FakeMessage:
    def __init__(self, topic, key, value):
        self.topic, self.key, self.value = topic, key, value

    def partition(self):
        return 0


class FakeProducer:
    """Queues messages and reports them on poll/flush; fail_every makes some deliveries fail."""

    def __init__(self, fail_every=0, keep=0, reachable=True, buffer_errors=0):
        self.sent = []
        self.pending = []
        self.fail_every = fail_every
        self.keep = keep
        self.reachable = reachable
        self.buffer_errors = buffer_errors

    def list_topics(self, topic=None, timeout=-1):
        if not self.reachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return object()

    def produce(self, topic, *, value=None, key=None, on_delivery=None):
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("queue full")
        self.pending.append((FakeMessage(topic, key, value), on_delivery))

    def poll(self, timeout=-1):
        return self._deliver(len(self.pending))

    def flush(self, timeout=-1):
        self._deliver(len(self.pending) - self.keep)
        return len(self.pending)

    def _deliver(self, count):
        for _ in range(count):
            msg, callback = self.pending.pop(0)
            self.sent.append(msg)
            number = len(self.sent)
            failed = self.fail_every and number % self.fail_every == 0
            callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if failed else None, msg)
        return count


def fake_serializer(event, ctx):
    return f"{ctx.topic}:{event['event_id']}".encode()


def _events(n=2500):
    return generate(GeneratorConfig(users=20, events=n, seed=5))


def test_all_delivered_keyed_by_user():
    fake = FakeProducer()
    events = _events()
    progress = []
    summary = produce_events(
        events,
        "t",
        KAFKA,
        REGISTRY,
        tuning=TUNING,
        producer=fake,
        serializer=fake_serializer,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert (summary.sent, summary.failed, summary.errors) == (2500, 0, [])
    assert [m.key for m in fake.sent] == [e["user_id"].encode() for e in events]
    assert fake.sent[0].value == f"t:{events[0]['event_id']}".encode()
    assert progress and all(total == 2500 for _, total in progress)
    assert summary.line().startswith("sent 2500, failed 0, ")


def test_failed_deliveries_are_counted_with_reasons():
    summary = produce_events(
        _events(),
        "t",
        KAFKA,
        REGISTRY,
        tuning=TUNING,
        producer=FakeProducer(fail_every=100),
        serializer=fake_serializer,
    )
    assert (summary.sent, summary.failed) == (2475, 25)
    assert len(summary.errors) == 5 and "too large" in summary.errors[0].lower()


def test_undelivered_after_flush_count_as_failed():
    summary = produce_events(
        _events(10),
        "t",
        KAFKA,
        REGISTRY,
        tuning=TUNING,
        producer=FakeProducer(keep=3),
        serializer=fake_serializer,
    )
    assert (summary.sent, summary.failed) == (7, 3)
    assert "3 still undelivered" in summary.errors[0]


def test_full_queue_is_waited_out():
    summary = produce_events(
        _events(10),
        "t",
        KAFKA,
        REGISTRY,
        tuning=TUNING,
        producer=FakeProducer(buffer_errors=3),
        serializer=fake_serializer,
    )
    assert (summary.sent, summary.failed) == (10, 0)


def test_unreachable_broker_fails_before_sending():
    fake = FakeProducer(reachable=False)
    with pytest.raises(ParityError, match=r"kafka\.invalid:9092 .*make up"):
        produce_events(
            _events(10), "t", KAFKA, REGISTRY, tuning=TUNING, producer=fake, serializer=fake_serializer
        )
    assert fake.sent == [] and fake.pending == []


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (409, "incompatible: Incompatible artifact.*--schema-version"),
        (422, "invalid: bad schema.*Fix the .avsc"),
    ],
)
def test_registry_refusal_is_a_schema_error_and_nothing_is_sent(status, message):
    def refusing(event, ctx):
        raise SchemaRegistryError(
            status, status * 100, "Incompatible artifact" if status == 409 else "bad schema"
        )

    fake = FakeProducer()
    with pytest.raises(SchemaError, match=message) as caught:
        produce_events(
            _events(10), "ad-events", KAFKA, REGISTRY, tuning=TUNING, producer=fake, serializer=refusing
        )
    assert "subject 'ad-events-value'" in str(caught.value)
    assert fake.pending == [] and fake.sent == []


def test_unknown_schema_version():
    with pytest.raises(SchemaError, match=r"v99\.avsc does not exist"):
        produce_events(
            [], "t", KAFKA, REGISTRY, schema_version=99, producer=FakeProducer(), serializer=fake_serializer
        )


def test_real_serializer_is_wire_format_without_network(monkeypatch):
    """The registry-backed serializer only needs the registry once; a stub stands in for it."""
    from confluent_kafka.schema_registry import RegisteredSchema, SchemaRegistryClient

    from producer.produce import avro_serializer

    calls = []

    def register(self, subject, schema, normalize_schemas=False):
        calls.append(subject)
        return RegisteredSchema(schema_id=42, guid=None, schema=schema, subject=subject, version=1)

    monkeypatch.setattr(SchemaRegistryClient, "register_schema_full_response", register)
    serializer = avro_serializer(SchemaRegistryClient({"url": REGISTRY.url}), latest("ad_event"))
    fake = FakeProducer()
    summary = produce_events(
        _events(5), "topic-a", KAFKA, REGISTRY, tuning=TUNING, producer=fake, serializer=serializer
    )
    assert summary.sent == 5
    assert calls == ["topic-a-value"]
    assert all(m.value[:5] == b"\x00\x00\x00\x00\x2a" for m in fake.sent)
