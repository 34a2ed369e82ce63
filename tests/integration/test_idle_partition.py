"""A Kafka partition with no events holds the view's completeness, unless it is let go as idle.

The watermark is the least of the partitions'. Every event here goes to
partition 0 of a two-partition topic: without an idle timeout no tile ever
closes; with ``PARITY_FLINK_SOURCE_IDLE_TIMEOUT_S`` the empty partition stops
counting and both stores close the tiles the events' watermark has passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from features.user_stats import view as user_stats
from parity.config import KafkaConfig, RegistryConfig
from producer.config import ProducerConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import kafka_conf, produce_events
from serving.online import OnlineStore
from tests.integration import reference
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, tzinfo=UTC)
LATENESS_MS = int(user_stats.source.max_out_of_orderness.total_seconds() * 1000)


class _FirstPartitionOnly:
    """A Kafka producer that puts every record in partition 0."""

    def __init__(self) -> None:
        self._producer = Producer(kafka_conf(KafkaConfig(), ProducerConfig()))

    def produce(self, topic: str, **kwargs: Any) -> None:
        self._producer.produce(topic, partition=0, **kwargs)

    def poll(self, timeout: float = 0) -> int:
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30) -> int:
        return int(self._producer.flush(timeout))

    def list_topics(self, topic: str | None = None, timeout: float = 10) -> Any:
        return self._producer.list_topics(topic, timeout=timeout)


def _send_to_one_partition(topic: str) -> list[dict]:
    events = generate(GeneratorConfig(users=20, events=600, start=START, span=timedelta(hours=6), seed=21))
    summary = produce_events(events, topic, KafkaConfig(), RegistryConfig(), producer=_FirstPartitionOnly())
    assert (summary.sent, summary.failed) == (len(events), 0)
    return events


def _completeness(iso) -> int | None:
    store = OnlineStore(iso.redis, {"user_stats": user_stats})
    try:
        return store.completeness(user_stats)
    finally:
        store.close()


def test_without_an_idle_timeout_an_empty_partition_closes_no_tile(isolated):
    _send_to_one_partition(isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)
    assert "stopped with savepoint" in isolated.log.read_text(), isolated.log_tail()
    assert _completeness(isolated) is None


def test_with_an_idle_timeout_the_empty_partition_stops_holding_completeness(isolated, monkeypatch):
    events = _send_to_one_partition(isolated.topic)
    monkeypatch.setenv("PARITY_FLINK_SOURCE_IDLE_TIMEOUT_S", "2")
    isolated.start_job("user_stats", bounded=False)
    watermark = max(reference.ms(e["event_time"]) for e in events) - LATENESS_MS
    closed = watermark - watermark % reference.HOUR_MS
    assert wait_for(
        lambda: _completeness(isolated) == closed,
        timeout=240,
        what="the tiles before the watermark to close",
        detail=isolated.log_tail,
    )
    truth = {k: v for k, v in reference.tiles(events).items() if k[1] + reference.HOUR_MS <= closed}
    store = OnlineStore(isolated.redis, {"user_stats": user_stats})
    try:
        users = sorted({user for user, _ in truth})
        online = {
            (user, tile.start_ms): (tile.events, *tile.values)
            for user in users
            for tile in store.tiles(user_stats, user)
            if tile.start_ms + reference.HOUR_MS <= closed
        }
    finally:
        store.close()
    assert online == truth
