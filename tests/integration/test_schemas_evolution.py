"""v1 and v2 producers write interleaved into one topic; the job reads both through the v2 reader schema.

Checked for both source bindings: Flink's avro-confluent format (the reader
schema passed as 'avro-confluent.schema') and the parity-avro decoder.
"""

from __future__ import annotations

import json
import uuid

import pytest

from parity.config import KafkaConfig, RegistryConfig
from producer.produce import produce_events
from tests.integration.conftest import kill
from tests.integration.test_dead_letters import create_topics, good_events, log_tail, read, start_decoder

pytestmark = pytest.mark.integration


@pytest.fixture
def topic() -> str:
    name = f"schema-test-{uuid.uuid4().hex[:10]}"
    create_topics(name, f"{name}-dlq", f"{name}-out-parity-avro", f"{name}-out-avro-confluent")
    return name


@pytest.mark.parametrize("fmt", ["avro-confluent", "parity-avro"])
def test_mixed_v1_v2_stream_decodes_with_defaults_for_v1(topic, tmp_path, fmt):
    v1 = good_events(40, seed=11)
    v2 = good_events(40, seed=12, version=2)
    sent = []
    for i in range(4):  # v1, v2, v1, v2 batches: two writer schema ids interleaved in one partition
        batch, version = (v1, 1) if i % 2 == 0 else (v2, 2)
        part = batch[(i // 2) * 20 : (i // 2 + 1) * 20]
        summary = produce_events(part, topic, KafkaConfig(), RegistryConfig(), schema_version=version)
        assert (summary.sent, summary.failed) == (len(part), 0)
        sent += part

    job, log = start_decoder(tmp_path, topic, bounded=True, fmt=fmt)
    try:
        assert job.wait(timeout=240) == 0, log_tail(log)
    finally:
        kill(job)
    rows = {r["event_id"]: r for r in map(json.loads, read(f"{topic}-out-{fmt}", len(sent), timeout=30))}
    assert set(rows) == {e["event_id"] for e in sent}
    for event in v1:
        assert rows[event["event_id"]]["device"] is None  # the reader's default for a field v1 lacks
    for event in v2:
        assert rows[event["event_id"]]["device"] == event["device"]
    for event in sent:
        row = rows[event["event_id"]]
        assert (row["user_id"], row["event_type"], row["country"], row["cost"]) == (
            event["user_id"],
            event["event_type"],
            event["country"],
            event["cost"],
        )
