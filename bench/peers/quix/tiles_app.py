"""user_stats tiles as a Quix Streams app: Kafka → decode → 1 h tumbling windows per user → Redis.

One consumer process; ``bench/peers/quix/run.py`` starts several in one consumer group.
Configured through ``PEER_*`` variables (see ``peer_common.PeerConfig``) and
``PEER_WORKER`` (this process's index, for its own state directory).

Steps:

1. the topic is consumed from the beginning in group ``peer-quix-<run>``; values are
   decoded from Confluent Avro and stamped with ``event_time``;
2. ``tiles``: a tumbling 1 h window per user with a 5 min grace, reduced to the tile's
   counts; ``final()`` with the per-key closing strategy emits a tile once an event of
   the same user passes its end + grace (window state in RocksDB with its changelog
   topic, Quix's defaults);
3. closed tiles go to Redis through a batching sink flushed at each checkpoint;
4. the process stops once every input partition it holds is read up to the end offset
   seen at start, or once the group has committed every end offset (a process whose
   partitions all went to the other). Open tiles are not flushed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import peer_common as peer
from confluent_kafka import Consumer, TopicPartition
from quixstreams import Application
from quixstreams.models.serializers import Deserializer
from quixstreams.sinks import BatchingSink, SinkBatch

log = logging.getLogger("peer.quix")

# A safety net only: a process idle this long stops even if the group is not done.
_IDLE_STOP_S = 30.0
# How often a process checks whether the group has committed every end offset.
_GROUP_CHECK_S = 0.5


class ConfluentAvroValue(Deserializer):
    """Confluent Avro values as dicts, ``event_time`` in epoch ms."""

    def __init__(self, registry_url: str) -> None:
        super().__init__()
        self._decode = peer.ConfluentAvroDecoder(registry_url)

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        return self._decode(value)


class RedisTileSink(BatchingSink):
    """Closed tiles to Redis hashes, written when Quix commits a checkpoint.

    At-least-once: a batch whose checkpoint fails is written again after recovery; the
    HSETs of whole values make that harmless.
    """

    def __init__(self, cfg: peer.PeerConfig) -> None:
        super().__init__()
        self._cfg = cfg
        self._writer: peer.RedisTileWriter | None = None

    def setup(self) -> None:
        self._writer = peer.RedisTileWriter(self._cfg)

    def write(self, batch: SinkBatch) -> None:
        if self._writer is None:
            self.setup()
        assert self._writer is not None
        self._writer.write((item.key, item.value["start"] // 1000, item.value["value"]) for item in batch)


class StopAtEnd:
    """Stops the app once every input partition it holds is consumed up to its end offset at start."""

    def __init__(self, app: Application, topic: str, ends: dict[int, int]) -> None:
        self._app = app
        self._topic = topic
        self._ends = ends

    def __call__(self, topic: str, partition: int, offset: int) -> None:
        if topic == self._topic and offset + 1 >= self._ends.get(partition, 0) and self._all_read():
            log.info("read to the end offsets %s; stopping", self._ends)
            self._app.stop()

    def _all_read(self) -> bool:
        # Quix has no public handle on the assignment; its consumer is confluent-kafka's.
        consumer = self._app._consumer
        held = [tp for tp in consumer.assignment() if tp.topic == self._topic]
        for tp in consumer.position(held):
            offset = tp.offset
            if offset < 0:
                # Not read by this process since it got the partition: its committed offset.
                offset = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=10)[0].offset
            if offset < self._ends.get(tp.partition, 0):
                return False
        return True


class GroupDoneWatch(threading.Thread):
    """Stops the app once the group has committed every partition's end offset.

    This ends a process that holds nothing left to read (its partitions went to the
    other process, which read them to the end); it never receives a message to check on.
    """

    def __init__(self, app: Application, cfg: peer.PeerConfig, ends: dict[int, int]) -> None:
        super().__init__(daemon=True)
        self._app = app
        self._cfg = cfg
        self._ends = ends
        self.done = threading.Event()

    def run(self) -> None:
        # A consumer that never subscribes: it reads the group's offsets without joining it.
        consumer = Consumer({"bootstrap.servers": self._cfg.bootstrap, "group.id": self._cfg.group_id})
        partitions = [TopicPartition(self._cfg.topic, p) for p in self._ends]
        try:
            while not self.done.wait(_GROUP_CHECK_S):
                committed = consumer.committed(partitions, timeout=5)
                if all(self._ends[tp.partition] in (0, tp.offset) for tp in committed):
                    log.info("the group has committed every end offset; stopping")
                    self._app.stop()
                    return
        finally:
            consumer.close()


def main() -> int:
    cfg = peer.PeerConfig.from_env()
    worker = os.environ.get("PEER_WORKER", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s quix-{worker} %(message)s")
    ends = peer.end_offsets(cfg)
    app = Application(
        broker_address=cfg.bootstrap,
        consumer_group=cfg.group_id,
        auto_offset_reset="earliest",
        state_dir=Path(cfg.workdir) / f"quix-{cfg.run}" / f"worker-{worker}",
        loglevel="WARNING",
    )
    topic = app.topic(
        cfg.topic,
        key_deserializer="str",
        value_deserializer=ConfluentAvroValue(cfg.registry_url),
        timestamp_extractor=lambda value, headers, ts, ts_type: value["event_time"],
    )
    sdf = app.dataframe(topic)
    sdf = (
        sdf.tumbling_window(duration_ms=peer.HOUR_MS, grace_ms=peer.GRACE_MS, name="tiles")
        .reduce(reducer=peer.add_event, initializer=lambda event: peer.add_event(peer.new_tile(), event))
        .final(closing_strategy="key")
    )
    sdf.sink(RedisTileSink(cfg))
    app._on_message_processed = StopAtEnd(app, cfg.topic, ends)
    log.info("started; end offsets %s", ends)
    watch = GroupDoneWatch(app, cfg, ends)
    watch.start()
    try:
        app.run(timeout=_IDLE_STOP_S)
    finally:
        watch.done.set()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
