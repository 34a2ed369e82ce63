"""Bad input never stops the job and is never lost: the parity-avro decoder and its dead-letter topic.

Each test runs ``python -m jobs.decode`` (the view's source binding through
jobs.decode.decoded_source_statements) as a streaming job that writes its good
rows as JSON to an output topic, and reads the dead-letter topic back.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import KafkaConfig
from producer.generate import GeneratorConfig, generate
from schemas import avro
from stack import process
from stack.artifacts import load
from stack.config import StackConfig
from stack.fetch import registry_dir
from tests.integration.conftest import kill, wait_for

pytestmark = pytest.mark.integration

K = 3
START = datetime(2026, 1, 1, tzinfo=UTC)
BOOTSTRAP = KafkaConfig().bootstrap_servers
# The decoder's default bound on a value (parity-avro.max-record-bytes); topics take twice that.
MAX_RECORD_BYTES = 1 << 20


# ---- helpers shared with test_schemas_evolution -------------------------------------------------


def create_topics(*names: str) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    config = {"max.message.bytes": str(2 * MAX_RECORD_BYTES)}
    for future in admin.create_topics(
        [NewTopic(n, num_partitions=1, replication_factor=1, config=config) for n in names]
    ).values():
        future.result(timeout=30)


def frame(schema_id: int, schema_text: str, record: dict) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(schema_text)), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def register(url: str, subject: str, version: int) -> int:
    client = SchemaRegistryClient({"url": url})
    try:
        text = avro.versions("ad_event")[version - 1].text
        return int(client.register_schema(subject, Schema(text, "AVRO")))
    finally:
        client.close()


def send(topic: str, values: list[bytes | None]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "enable.idempotence": True,
            "message.max.bytes": 2 * MAX_RECORD_BYTES,
        }
    )
    for value in values:
        producer.produce(topic, value=value, key=b"k")
    assert producer.flush(30) == 0


def read(topic: str, count: int, timeout: float = 120) -> list[bytes]:
    """The first ``count`` values of partition 0, waiting up to ``timeout`` for them."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"read-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1):
                if message.error() is None:
                    values.append(message.value())
    finally:
        consumer.close()
    return values


def good_events(n: int, seed: int, version: int = 1) -> list[dict]:
    events = generate(GeneratorConfig(users=7, events=n, seed=seed, start=START))
    if version >= 2:
        devices = ["mobile", "desktop", "tablet", None]
        events = [dict(e, device=devices[i % 4]) for i, e in enumerate(events)]
    return events


def start_decoder(
    workdir: Path,
    topic: str,
    *,
    env: dict[str, str] | None = None,
    bounded: bool = False,
    fmt: str = "parity-avro",
) -> tuple[subprocess.Popen[bytes], Path]:
    cmd = [
        str(jobctl.job_python()),
        "-m",
        "jobs.decode",
        "--view",
        "user_stats",
        "--topic",
        topic,
        "--group-id",
        f"g-{topic}-{fmt}",
        "--format",
        fmt,
        "--sink",
        f"kafka:{topic}-out-{fmt}",
        "--dead-letter-topic",
        f"{topic}-dlq",
        "--parallelism",
        "1",
    ]
    if bounded:
        cmd.append("--bounded")
    log = workdir / f"decode-{fmt}.log"
    return jobctl.start_local(cmd, log, env=env), log


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@pytest.fixture
def topic() -> str:
    name = f"dlq-test-{uuid.uuid4().hex[:10]}"
    create_topics(name, f"{name}-dlq", f"{name}-out-parity-avro", f"{name}-out-avro-confluent")
    return name


# ---- the bad records -----------------------------------------------------------------------------


def bad_records(schema_id: int, text: str) -> dict[str, list[bytes | None]]:
    """K records of each class, built from good events; the key is the reason they must get."""
    base = good_events(K, seed=99)
    valid = [frame(schema_id, text, e) for e in base]
    future = datetime.now(tz=UTC) + timedelta(days=30)
    header = b"\x00" + schema_id.to_bytes(4, "big")
    return {
        "not_avro": [
            b"\x00" + schema_id.to_bytes(4, "big") + b"\x01garbage",  # a negative string length
            b"\x00" + schema_id.to_bytes(4, "big") + b"\x03\x80\x80",
            valid[0] + b"\x02\x04",  # a whole record and then bytes left over
        ],
        "wrong_magic_byte": [json.dumps({"user_id": "u"}).encode(), b"\x01" + valid[1][1:], b"plain text"],
        "unknown_schema_id": [
            b"\x00" + (2_000_000_000 + i).to_bytes(4, "big") + valid[i][5:] for i in range(K)
        ],
        "truncated": [valid[0][: len(valid[0]) // 2], valid[1][:-3], b"\x00\x00\x00"],
        "missing_entity_key": [frame(schema_id, text, dict(e, user_id="")) for e in base],
        "event_time_in_future": [frame(schema_id, text, dict(e, event_time=future)) for e in base],
        "event_time_before_1970": [
            frame(schema_id, text, dict(e, event_time=-1000 - i)) for i, e in enumerate(base)
        ],
        "empty_value": [b"", None, b""],
        "length_out_of_bounds": [
            header + b"\x80\xd0\xac\xf3\x0e",  # 10 bytes: event_id declares 2e9 bytes
            header + b"\x02a" + b"\x80\xd0\xac\xf3\x0e",  # user_id declares 2e9 bytes
            header + b"\x82\x80\x80\x01",  # event_id declares 1 MiB + 1 bytes, over parity-avro.max-length
        ],
        "record_too_large": [v + bytes(MAX_RECORD_BYTES + 1 - len(v)) for v in valid],
    }


def test_bad_records_go_to_the_dead_letter_topic_and_the_job_keeps_running(topic, tmp_path):
    from parity.config import RegistryConfig

    url = RegistryConfig().url
    schema_id = register(url, f"{topic}-value", 1)
    text = avro.versions("ad_event")[0].text
    first = good_events(60, seed=1)
    bad = bad_records(schema_id, text)
    # Interleave: every class sits between good records.
    values: list[bytes | None] = []
    bad_flat = [v for values_ in bad.values() for v in values_]
    for i, event in enumerate(first):
        values.append(frame(schema_id, text, event))
        if i < len(bad_flat):
            values.append(bad_flat[i])
    send(topic, values)

    job, log = start_decoder(tmp_path, topic)
    try:
        out = read(f"{topic}-out-parity-avro", len(first))
        assert len(out) == len(first), log_tail(log)
        dead = read(f"{topic}-dlq", len(bad_flat), timeout=30)
        envelopes = [json.loads(v) for v in dead]
        assert Counter(e["reason"] for e in envelopes) == {reason: K for reason in bad}
        by_offset = {e["offset"]: e for e in envelopes}
        assert len(by_offset) == len(envelopes)
        # The envelope carries where the record was and its exact bytes.
        offsets = [i for i, v in enumerate(values) if v in bad_flat or v is None]
        assert sorted(by_offset) == offsets
        for offset, envelope in by_offset.items():
            original = values[offset] or b""
            if envelope["reason"] == "record_too_large":  # only its first bytes, so the topic takes it
                original = original[:1024]
            assert base64.b64decode(envelope["value_base64"] or "") == original
            assert (envelope["source_topic"], envelope["partition"]) == (topic, 0)
            assert envelope["feature_view"] == user_stats.qualified_name and envelope["detail"]

        # Good events around the bad ones decode exactly.
        rows = {r["event_id"]: r for r in map(json.loads, out)}
        assert set(rows) == {e["event_id"] for e in first}
        for event in first:
            row = rows[event["event_id"]]
            assert (row["user_id"], row["event_type"], row["cost"], row["device"]) == (
                event["user_id"],
                event["event_type"],
                event["cost"],
                None,
            )
            assert row["event_time"] == event["event_time"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].rstrip(
                "0"
            ).rstrip(".")

        # Still running: later good events keep flowing.
        assert job.poll() is None, log_tail(log)
        later = good_events(20, seed=2)
        send(topic, [frame(schema_id, text, e) for e in later])
        out = read(f"{topic}-out-parity-avro", len(first) + len(later))
        assert {json.loads(v)["event_id"] for v in out[len(first) :]} == {e["event_id"] for e in later}
        assert job.poll() is None, log_tail(log)
    finally:
        kill(job)


# ---- registry outage -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_registry(tmp_path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An Apicurio of our own on free ports (never the shared one), stopped by the test."""
    arts = load()
    app = registry_dir(StackConfig(), arts)
    if not (app / "quarkus-run.jar").is_file():
        pytest.skip(f"no Apicurio in {app}: run `python -m stack fetch`")
    java = process.java(arts.registry_java, search_jvm_dir=True)
    port, management = _free_port(), _free_port()
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [
            java,
            "-Xmx256m",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={port}",
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={management}",
            "-Dapicurio.rules.global.compatibility=BACKWARD",
            "-jar",
            str(app / "quarkus-run.jar"),
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/subjects", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 120, "the private registry")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()


def test_registry_outage_known_ids_flow_new_ids_are_dead_lettered(topic, tmp_path, private_registry):
    url, registry = private_registry
    v1_id = register(url, f"{topic}-value", 1)
    v2_id = register(url, f"{topic}-value", 2)  # registered, but no record uses it before the outage
    v1_text, v2_text = (v.text for v in avro.versions("ad_event")[:2])
    before = good_events(20, seed=5)
    send(topic, [frame(v1_id, v1_text, e) for e in before])
    job, log = start_decoder(tmp_path, topic, env={"PARITY_REGISTRY_URL": url})
    try:
        assert len(read(f"{topic}-out-parity-avro", len(before))) == len(before), log_tail(log)

        registry.terminate()
        registry.wait(timeout=30)
        known = good_events(10, seed=6)
        unseen = good_events(5, seed=7, version=2)
        send(topic, [frame(v1_id, v1_text, e) for e in known] + [frame(v2_id, v2_text, e) for e in unseen])

        out = read(f"{topic}-out-parity-avro", len(before) + len(known), timeout=60)
        assert {json.loads(v)["event_id"] for v in out[len(before) :]} == {e["event_id"] for e in known}
        dead = [json.loads(v) for v in read(f"{topic}-dlq", len(unseen), timeout=60)]
        assert [d["reason"] for d in dead] == ["registry_unavailable"] * len(unseen)
        assert all(d["schema_id"] == v2_id and "registry" in d["detail"] for d in dead)
        assert job.poll() is None, log_tail(log)
    finally:
        kill(job)
