"""Throughput of produce_events against a bare confluent-kafka + fastavro loop.

Needs a running stack (``make up``); reads PARITY_KAFKA_BOOTSTRAP_SERVERS and
PARITY_REGISTRY_URL. Both runs write the same generated events, each to a
fresh topic, with the same librdkafka settings; the bare loop frames the Avro
body itself with a schema id looked up once, so the ratio is the cost of
parity's per-event checks, registry-aware serializer and delivery accounting.

    python bench/producer_bench.py --events 200000
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import time

import fastavro
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema

from parity.config import KafkaConfig, RegistryConfig
from producer.config import ProducerConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import (
    KEY_FIELD,
    kafka_conf,
    produce_events,
    registry_client,
    resolve_schema,
    subject_for,
)


def bare_loop(events, topic, kafka, registry, tuning):
    """The floor: schemaless_writer + a hand-made 5-byte header, deliveries still counted."""
    schema = resolve_schema()
    schema_id = registry_client(registry).register_schema(subject_for(topic), Schema(schema.text, "AVRO"))
    parsed = fastavro.parse_schema(schema.parsed)
    header = struct.pack(">bI", 0, schema_id)
    producer = Producer(kafka_conf(kafka, tuning))
    outcome = {"sent": 0, "failed": 0}

    def on_delivery(err, msg):
        outcome["failed" if err else "sent"] += 1

    started = time.monotonic()
    for index, event in enumerate(events):
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, event)
        while True:
            try:
                key = event[KEY_FIELD].encode()
                producer.produce(topic, value=buf.getvalue(), key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        if index % 1000 == 0:
            producer.poll(0)
    outcome["failed"] += producer.flush(tuning.flush_timeout_s)
    return outcome["sent"], outcome["failed"], time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default: %(default)s)")
    parser.add_argument("--users", type=int, default=2000, help="distinct users (default: %(default)s)")
    parser.add_argument("--topic-prefix", default="producer-bench", help="topic name prefix")
    args = parser.parse_args(argv)

    kafka, registry, tuning = KafkaConfig(), RegistryConfig(), ProducerConfig()
    events = generate(GeneratorConfig(users=args.users, events=args.events, seed=1))
    stamp = int(time.time())
    ours_topic = f"{args.topic_prefix}-ours-{stamp}"
    bare_topic = f"{args.topic_prefix}-bare-{stamp}"

    ours = produce_events(events, ours_topic, kafka, registry, tuning=tuning)
    bare_sent, bare_failed, bare_seconds = bare_loop(events, bare_topic, kafka, registry, tuning)

    ours_rate = ours.sent / ours.seconds
    bare_rate = bare_sent / bare_seconds
    print(f"parity produce_events: {ours.line()} ({ours.seconds:.2f} s) -> {ours_topic}")
    bare_line = f"sent {bare_sent}, failed {bare_failed}, {bare_rate:.0f} events/s"
    print(f"bare loop:             {bare_line} ({bare_seconds:.2f} s) -> {bare_topic}")
    print(f"ratio ours/bare:       {ours_rate / bare_rate:.2f}")
    result = {
        "events": args.events,
        "ours_events_per_s": round(ours_rate),
        "bare_events_per_s": round(bare_rate),
        "ratio": round(ours_rate / bare_rate, 3),
        "ours_failed": ours.failed,
        "bare_failed": bare_failed,
    }
    print(json.dumps(result))
    return 1 if ours.failed or bare_failed else 0


if __name__ == "__main__":
    sys.exit(main())
