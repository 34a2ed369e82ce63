"""Decode throughput: the dead-letter decoder (parity-avro) next to Flink's avro-confluent, same topic.

Runs in the client environment with the stack up: ``.venv/bin/python bench/dlq_bench.py``.

1. Produces N valid v2 events (Confluent-framed, one partition) to a fresh topic,
   and the same events with 1% of them replaced by bad records to a second one.
2. Runs ``python -m jobs.decode --bounded --sink blackhole`` (job runtime) over the
   first topic with each format, then over the second with parity-avro.
3. Reports events/s from each job's net runtime (Flink's measure: from job start
   to finish, without the client's planning), which still includes task start-up.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import fastavro
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from schemas import avro


def _produce(topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": KafkaConfig().bootstrap_servers, "linger.ms": 20})
    for value in values:
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def _run(topic: str, fmt: str, parallelism: int) -> tuple[float, float]:
    cmd = [
        str(jobctl.job_python()), "-m", "jobs.decode", "--view", "user_stats", "--topic", topic,
        "--group-id", f"bench-{uuid.uuid4().hex[:8]}", "--bounded", "--format", fmt,
        "--sink", "blackhole", "--dead-letter-topic", f"{topic}-dlq", "--parallelism", str(parallelism),
    ]  # fmt: skip
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=jobctl.PROJECT_ROOT, check=False)
    wall = time.monotonic() - started
    match = re.search(r"net runtime (\d+) ms", out.stdout)
    if out.returncode != 0 or not match:
        sys.exit(f"{fmt} on {topic} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return int(match.group(1)) / 1000, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=500_000)
    p.add_argument("--bad-share", type=float, default=0.01)
    p.add_argument("--parallelism", type=int, default=1)
    args = p.parse_args()

    run = uuid.uuid4().hex[:8]
    clean, dirty = f"dlq-test-bench-{run}", f"dlq-test-bench-{run}-bad"
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    topics = [NewTopic(t, num_partitions=1, replication_factor=1) for t in (clean, dirty, f"{dirty}-dlq")]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)
    schema = avro.latest("ad_event")
    registry = SchemaRegistryClient({"url": RegistryConfig().url})
    try:
        schema_id = registry.register_schema(f"{clean}-value", Schema(schema.text, "AVRO"))
    finally:
        registry.close()
    parsed = fastavro.parse_schema(json.loads(schema.text))
    header = b"\x00" + schema_id.to_bytes(4, "big")
    events = generate(
        GeneratorConfig(users=2000, events=args.events, seed=1, start=datetime(2026, 1, 1, tzinfo=UTC))
    )
    values = []
    for event in events:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, event)
        values.append(header + body.getvalue())
    every = max(1, round(1 / args.bad_share)) if args.bad_share > 0 else 0
    bad_kinds = [b"not confluent", header[:3], b"\x00\x7f\xff\xff\xff" + values[0][5:], header + b"\x01x"]
    dirty_values = [
        bad_kinds[(i // every) % len(bad_kinds)] if every and i % every == every - 1 else v
        for i, v in enumerate(values)
    ]
    print(f"producing {len(values)} events to {clean} and {dirty} ({args.bad_share:.0%} bad) ...", flush=True)
    _produce(clean, values)
    _produce(dirty, dirty_values)

    results = {}
    for name, topic, fmt in (
        ("avro-confluent, 0% bad", clean, "avro-confluent"),
        ("parity-avro, 0% bad", clean, "parity-avro"),
        (f"parity-avro, {args.bad_share:.0%} bad", dirty, "parity-avro"),
    ):
        net, wall = _run(topic, fmt, args.parallelism)
        results[name] = len(values) / net
        print(
            f"{name:28s} net {net:6.1f} s  wall {wall:6.1f} s  {len(values) / net:9.0f} events/s", flush=True
        )
    base = results["avro-confluent, 0% bad"]
    for name, rate in results.items():
        print(f"{name:28s} {rate / base:5.2f} x avro-confluent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
