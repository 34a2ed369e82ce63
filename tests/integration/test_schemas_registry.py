"""The registry enforces what `parity schemas check` enforces: BACKWARD, 409 on an incompatible version."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from parity.config import KafkaConfig, RegistryConfig
from parity.errors import SchemaError
from producer.generate import GeneratorConfig, generate
from producer.produce import avro_serializer, produce_events, registry_client
from schemas import avro
from schemas.cli import main
from schemas.registry import RegistryClient, RegistryRefusedError

pytestmark = pytest.mark.integration


def _root(tmp_path: Path, subject: str, v3: dict | None = None) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(avro.SCHEMA_ROOT / "ad_event", root / "ad_event")
    (root / "subjects.toml").write_text(f'[ad_event]\nsubjects = ["{subject}"]\n')
    if v3 is not None:
        (root / "ad_event" / "v3.avsc").write_text(json.dumps(v3))
    return root


def _retyped_cost() -> dict:
    schema = json.loads(avro.latest("ad_event").text)
    next(f for f in schema["fields"] if f["name"] == "cost")["type"] = "string"
    return schema


@pytest.fixture
def topic() -> str:
    return f"schema-test-{uuid.uuid4().hex[:10]}"


def test_register_sets_backward_and_is_idempotent(tmp_path, topic, capsys):
    subject = f"{topic}-value"
    root = _root(tmp_path, subject)
    assert main(["register", "--root", str(root), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["results"]
    assert [r["action"] for r in first] == ["registered", "registered"]
    assert main(["register", "--root", str(root), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["results"]
    assert [r["action"] for r in again] == ["already registered", "already registered"]
    with RegistryClient(RegistryConfig()) as client:
        assert client.compatibility(subject) == "BACKWARD"


def test_incompatible_v3_is_refused_by_check_registry_and_producer(tmp_path, topic, capsys):
    subject = f"{topic}-value"
    assert main(["register", "--root", str(_root(tmp_path / "ok", subject))]) == 0
    capsys.readouterr()
    bad_root = _root(tmp_path / "bad", subject, _retyped_cost())

    # The check fails locally and the registry agrees.
    assert main(["check", "--json", "--root", str(bad_root)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["registry"]["checked"] is True
    sources = {(v["source"], v["version"]) for v in report["violations"]}
    assert ("local", 3) in sources and ("registry", 3) in sources
    assert {v["field"] for v in report["violations"] if v["source"] == "local"} == {"cost"}

    bad = avro.versions("ad_event", bad_root)[-1]
    with RegistryClient(RegistryConfig()) as client, pytest.raises(RegistryRefusedError) as refused:
        client.register(subject, bad.text)
    assert refused.value.status == 409

    # The producer refuses before sending anything.
    events = generate(GeneratorConfig(users=2, events=5, seed=3))
    for event in events:
        event["cost"] = str(event["cost"])
    session = registry_client(RegistryConfig())
    try:
        with pytest.raises(SchemaError, match=r"refused .* as incompatible"):
            produce_events(
                events, topic, KafkaConfig(), RegistryConfig(), serializer=avro_serializer(session, bad)
            )
    finally:
        session.close()
    consumer = Consumer(
        {
            "bootstrap.servers": KafkaConfig().bootstrap_servers,
            "group.id": topic,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        received = consumer.consume(num_messages=10, timeout=3)
        # An unknown-topic notice may arrive as an error message; no record may.
        assert [m for m in received if m.error() is None] == []
    finally:
        consumer.close()
