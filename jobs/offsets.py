"""How far a streaming job has read its topic, from the offsets Flink commits to Kafka.

Flink's Kafka source commits, for its consumer group, the next offset to read
of every partition when a checkpoint completes. Once those offsets reach the
end offsets taken at some moment, every record before that moment has been
processed and its effects are in a completed checkpoint: tiles closed by the
watermark are in both stores, and open tiles are in the checkpointed state.
"""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from parity.config import KafkaConfig
from parity.errors import JobError
from parity.kafka_security import librdkafka_config


class TopicOffsets:
    """End offsets of a topic and a consumer group's committed ones."""

    def __init__(self, kafka: KafkaConfig, topic: str, group_id: str, timeout_s: float = 10.0) -> None:
        self._topic, self._timeout_s = topic, timeout_s
        # Only asks; never subscribes, so it never joins or rebalances the group.
        self._consumer = Consumer(
            librdkafka_config(kafka) | {"group.id": group_id, "enable.auto.commit": False}
        )

    def close(self) -> None:
        self._consumer.close()

    def ends(self) -> dict[int, int]:
        """The next offset to be written of every partition: what 'the end of the topic now' means."""
        metadata = self._consumer.list_topics(self._topic, timeout=self._timeout_s).topics.get(self._topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise JobError(f"topic {self._topic!r} does not exist; produce events to it first")
        ends = {}
        for partition in sorted(metadata.partitions):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=self._timeout_s
            )
            ends[partition] = high
        return ends

    def behind(self, ends: dict[int, int]) -> int:
        """Records before ``ends`` that the group has not committed yet (0 once caught up)."""
        wanted = [TopicPartition(self._topic, p) for p, end in ends.items() if end > 0]
        if not wanted:
            return 0
        committed = self._consumer.committed(wanted, timeout=self._timeout_s)
        lag = 0
        for tp in committed:
            # Asked of the broker: this consumer never fetches, so its cached offsets are
            # unknown (-1001), and a partition whose records were deleted would never count
            # as read. No commit yet reads as a negative offset; an emptied partition starts at low.
            low, _ = self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s, cached=False)
            position = max(tp.offset, low)
            lag += max(0, ends[tp.partition] - position)
        return lag
