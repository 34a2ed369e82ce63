"""user_stats tiles as a Bytewax dataflow: Kafka → decode → hourly tumbling fold per user → Redis.

Run by ``bench/peers/bytewax/run.py`` (``python -m bytewax.run tiles_flow:build()`` per
process), configured through ``PEER_*`` variables (see ``peer_common.PeerConfig``).

Steps:

1. ``kafka``: each partition is read from the beginning up to the end offset it had
   when the partition was built; then the partition reports end of input.
2. ``decode``: Confluent Avro values → ``(user_id, event)``.
3. ``tiles``: a fold per user over 1 h tumbling windows on ``event_time``. The clock is
   per user and purely on event time: watermark = newest event time seen - 5 min.
   At end of input the watermark stays where it is, so open tiles are not flushed.
4. ``redis``: every closed tile becomes one hash field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import (
    UTC_MIN,
    Clock,
    ClockLogic,
    TumblingWindower,
    fold_window,
)
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from peer_common import (
    GRACE_MS,
    HOUR_MS,
    ConfluentAvroDecoder,
    PeerConfig,
    RedisTileWriter,
    add_event,
    merge_tiles,
    new_tile,
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BATCH = 2000


class _PartitionReader(StatefulSourcePartition[bytes, None]):
    def __init__(self, cfg: PeerConfig, partition: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": cfg.bootstrap,
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
            }
        )
        tp = TopicPartition(cfg.topic, partition)
        self._end = self._consumer.get_watermark_offsets(tp, timeout=10)[1]
        self._next = 0
        self._consumer.assign([TopicPartition(cfg.topic, partition, OFFSET_BEGINNING)])

    def next_batch(self) -> list[bytes]:
        if self._next >= self._end:
            raise StopIteration
        values = []
        for msg in self._consumer.consume(_BATCH, timeout=0.2):
            if msg.error() is not None:
                raise KafkaException(msg.error())
            self._next = msg.offset() + 1
            if msg.offset() < self._end:
                values.append(msg.value())
        return values

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._consumer.close()


class TopicToEndSource(FixedPartitionedSource[bytes, None]):
    """Every partition of the topic, from the beginning to its end offset at start."""

    def __init__(self, cfg: PeerConfig) -> None:
        self._cfg = cfg

    def list_parts(self) -> list[str]:
        consumer = Consumer({"bootstrap.servers": self._cfg.bootstrap, "group.id": self._cfg.group_id})
        try:
            topic = consumer.list_topics(self._cfg.topic, timeout=10).topics[self._cfg.topic]
            return [str(p) for p in sorted(topic.partitions)]
        finally:
            consumer.close()

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _PartitionReader:
        return _PartitionReader(self._cfg, int(for_part))


@dataclass
class _EventTimeClockLogic(ClockLogic[dict[str, Any], datetime]):
    wait: timedelta
    newest: datetime

    def _watermark(self) -> datetime:
        return UTC_MIN if self.newest == UTC_MIN else self.newest - self.wait

    def before_batch(self) -> None:
        pass

    def on_item(self, value: dict[str, Any]) -> tuple[datetime, datetime]:
        ts = EPOCH + timedelta(milliseconds=value["event_time"])
        self.newest = max(self.newest, ts)
        return ts, self._watermark()

    def on_notify(self) -> datetime:
        return self._watermark()

    def on_eof(self) -> datetime:
        # Not UTC_MAX: open tiles stay open at the end, like parity's bounded run.
        return self._watermark()

    def to_system_utc(self, timestamp: datetime) -> None:
        # Never wake up on wall-clock time: only events move the watermark.
        return None

    def snapshot(self) -> datetime:
        return self.newest


@dataclass
class EventTimeClock(Clock[dict[str, Any], datetime]):
    """Watermark = newest event time seen for the key - ``wait``; wall-clock time plays no part.

    Bytewax's own EventClock also advances with system time and closes every window at
    end of input; neither matches the Flink job replaying history.
    """

    wait: timedelta

    def build(self, resume_state: datetime | None) -> _EventTimeClockLogic:
        return _EventTimeClockLogic(self.wait, resume_state or UTC_MIN)


class _RedisPartition(StatelessSinkPartition[tuple[str, tuple[int, list[int]]]]):
    def __init__(self, cfg: PeerConfig) -> None:
        self._writer = RedisTileWriter(cfg)

    def write_batch(self, items: list[tuple[str, tuple[int, list[int]]]]) -> None:
        self._writer.write((user, window_id * HOUR_MS // 1000, tile) for user, (window_id, tile) in items)

    def close(self) -> None:
        self._writer.close()


class RedisTileSink(DynamicSink[tuple[str, tuple[int, list[int]]]]):
    """Closed tiles to Redis hashes, one writer per worker; idempotent HSETs (at-least-once)."""

    def __init__(self, cfg: PeerConfig) -> None:
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self._cfg)


def build() -> Dataflow:
    """The dataflow for the ``PEER_*`` settings of this process."""
    cfg = PeerConfig.from_env()
    decode = ConfluentAvroDecoder(cfg.registry_url)

    def decode_batch(values: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
        events = [decode(value) for value in values]
        return [(event["user_id"], event) for event in events]

    flow = Dataflow("user_stats_tiles")
    raw = op.input("kafka", flow, TopicToEndSource(cfg))
    keyed = op.flat_map_batch("decode", raw, decode_batch)
    tiles = fold_window(
        "tiles",
        keyed,  # type: ignore[arg-type]
        EventTimeClock(timedelta(milliseconds=GRACE_MS)),
        TumblingWindower(length=timedelta(milliseconds=HOUR_MS), align_to=EPOCH),
        new_tile,
        add_event,
        merge_tiles,
        ordered=False,
    )
    op.output("redis", tiles.down, RedisTileSink(cfg))
    return flow
