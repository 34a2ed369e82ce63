"""How far a group has read, against a real broker: records deleted under it count as read.

A bounded run waits until its group's committed offsets reach the end offsets
taken at its start. When retention (or an operator) deletes a partition's
records, the group can never commit past them: the log's start offset stands
in for its position, or the run would wait forever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from jobs.offsets import TopicOffsets
from parity.config import KafkaConfig, RegistryConfig
from parity.kafka_security import librdkafka_config
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events

pytestmark = pytest.mark.integration


def test_records_deleted_before_a_commit_count_as_read(isolated):
    events = generate(
        GeneratorConfig(
            users=20, events=300, start=datetime(2026, 1, 1, tzinfo=UTC), span=timedelta(hours=3), seed=4
        )
    )
    summary = produce_events(events, isolated.topic, KafkaConfig(), RegistryConfig())
    assert (summary.sent, summary.failed) == (len(events), 0)
    offsets = TopicOffsets(KafkaConfig(), isolated.topic, f"it-{isolated.suffix}-offsets")
    try:
        ends = offsets.ends()
        assert sum(ends.values()) == len(events)
        assert offsets.behind(ends) == len(events), "nothing committed: every record is behind"

        # Delete the first half of every partition, then all of it, as retention would.
        admin = AdminClient(librdkafka_config(KafkaConfig()))
        half = [TopicPartition(isolated.topic, p, end // 2) for p, end in ends.items()]
        for future in admin.delete_records(half).values():
            future.result(timeout=30)
        assert offsets.behind(ends) == sum(end - end // 2 for end in ends.values())
        whole = [TopicPartition(isolated.topic, p, end) for p, end in ends.items()]
        for future in admin.delete_records(whole).values():
            future.result(timeout=30)
        assert offsets.behind(ends) == 0
    finally:
        offsets.close()
