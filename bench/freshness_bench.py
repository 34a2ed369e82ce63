"""Freshness: from sending an event to seeing it in an online read at now, under background load.

With the stack up (``make up``):

    .venv/bin/python bench/freshness_bench.py --rates 1000,10000 --seconds 60

1. starts the user_stats job (unbounded, live tiles on) on a fresh topic, with its
   own Redis prefix, Iceberg namespace and checkpoints;
2. for each rate, a background thread produces that many events per second (20k
   users, event time = send time) while the main thread sends a probe event every
   0.5 s for one of 10 probe users and polls ``get_online_features`` (every 5 ms)
   until the probe's ``impressions_1d`` counts it;
3. reports p50, p99 and max from send to visible per rate, and p99 against the
   1 s goal. It also reports the load actually produced and the job's consumer lag
   at the end of each rate, so a rate the job cannot sustain shows as such.

Probe users are probed every 5 s, so their writes are never held back by the
per-entity freshness interval: this measures the path (Kafka, the live aggregate,
the sink's tick, Redis, the read). An entity updated continuously is written at
most once per freshness interval (1 s), so its newest total can be up to that old.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from confluent_kafka import Producer
from confluent_kafka.serialization import MessageField, SerializationContext

from features.user_stats import view
from jobs.offsets import TopicOffsets
from parity import jobctl
from parity.config import KafkaConfig, RedisConfig, RegistryConfig
from producer.config import ProducerConfig
from producer.produce import avro_serializer, kafka_conf, registry_client, resolve_schema
from serving.online import OnlineStore
from sinks.redis import connect
from sinks.redis_layout import head_key

ROOT = jobctl.PROJECT_ROOT
PROBES = [f"probe-{i}" for i in range(10)]
FEATURE = "user_stats:impressions_1d"


def event(user: str, at: datetime, n: int) -> dict:
    return {
        "event_id": f"fresh-{n}",
        "user_id": user,
        "ad_id": "ad-1",
        "event_type": "impression",
        "event_time": at,
        "campaign_id": "c",
        "country": "DE",
        "cost": 0.1,
        "device": "mobile",
    }


class Sender:
    """One producer and serializer for the load and the probes."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(kafka_conf(KafkaConfig(), ProducerConfig()) | {"linger.ms": 5})
        self.serialize = avro_serializer(registry_client(RegistryConfig()), resolve_schema())
        self.ctx = SerializationContext(topic, MessageField.VALUE)
        self.lock = threading.Lock()
        self.count = 0

    def send(self, events: list[dict]) -> None:
        with self.lock:
            for e in events:
                value = self.serialize(e, self.ctx)
                self.producer.produce(self.topic, value=value, key=e["user_id"].encode())
                self.count += 1
            self.producer.poll(0)

    def flush(self) -> None:
        with self.lock:
            self.producer.flush(5)


def load(sender: Sender, rate: int, stop: threading.Event) -> None:
    """``rate`` events a second in 20 ms steps, event time = send time."""
    rng = random.Random(1)
    step, n, began = 0.02, 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - began) * rate)
        if due > n:
            now = datetime.now(UTC)
            sender.send([event(f"user-{rng.randrange(20_000)}", now, n + i) for i in range(due - n)])
            n = due
        time.sleep(step)


def probe_once(sender: Sender, store: OnlineStore, user: str, n: int, timeout_s: float = 30) -> float | None:
    before = store.get_online_features([FEATURE], [{"user_id": user}])[0][FEATURE].value
    sent = time.time()
    sender.send([event(user, datetime.fromtimestamp(sent, tz=UTC), n)])
    sender.flush()
    while time.time() - sent < timeout_s:
        value = store.get_online_features([FEATURE], [{"user_id": user}])[0][FEATURE].value
        if value > before:
            return time.time() - sent
        time.sleep(0.005)
    return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1000,10000", help="events/s of background load, comma-separated")
    p.add_argument("--seconds", type=float, default=60.0, help="probing time per rate")
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",")]

    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-fresh-{run_id}"
    workdir = ROOT / ".parity" / "bench" / f"fresh-{run_id}"
    redis_cfg = RedisConfig(key_prefix=f"fresh{run_id}")
    env = {
        "PARITY_REDIS_KEY_PREFIX": redis_cfg.key_prefix,
        "PARITY_ICEBERG_NAMESPACE": f"fresh{run_id}",
        "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / "checkpoints"),
    }
    sender = Sender(topic)
    # The topic exists (and its schema is registered) before the job subscribes.
    sender.send([event("warm-up", datetime.now(UTC), -1)])
    sender.flush()
    group = f"bench-fresh-{run_id}"
    job = jobctl.start_local(
        jobctl.stream_command("user_stats", topic=topic, group_id=group), workdir / "job.log", env=env
    )
    store = OnlineStore(redis_cfg)
    client = connect(redis_cfg)

    result: dict[str, object] = {"goal_p99_s": 1.0}
    try:
        print("waiting for the job's first live tile ...", file=sys.stderr)
        deadline = time.monotonic() + 180
        while client.get(head_key(redis_cfg.key_prefix, view)) is None:
            if job.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the job wrote no live tile; see {workdir / 'job.log'}")
            sender.send([event("warm-up", datetime.now(UTC), -1)])
            sender.flush()
            time.sleep(1)
        n = 0
        for rate in rates:
            stop = threading.Event()
            produced_before = sender.count
            thread = threading.Thread(target=load, args=(sender, rate, stop), daemon=True)
            began = time.monotonic()
            thread.start()
            time.sleep(5)  # the job settles into the load
            latencies: list[float] = []
            missed = 0
            while time.monotonic() - began < args.seconds + 5:
                n += 1
                seen = probe_once(sender, store, PROBES[n % len(PROBES)], 10_000_000 + n)
                if seen is None:
                    missed += 1
                else:
                    latencies.append(seen)
                time.sleep(0.5)
            stop.set()
            thread.join()
            elapsed = time.monotonic() - began
            offsets = TopicOffsets(KafkaConfig(), topic, group)
            try:
                lag = offsets.behind(offsets.ends())
            finally:
                offsets.close()
            row = {
                "produced_events_per_s": round((sender.count - produced_before) / elapsed),
                "probes": len(latencies),
                "missed_probes_30s": missed,
                "p50_s": round(statistics.median(latencies), 3) if latencies else None,
                "p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
                "max_s": round(max(latencies), 3) if latencies else None,
                # Committed on checkpoints (every 5 s): a few seconds of load is normal.
                "consumer_lag_at_end": lag,
            }
            if latencies:
                row["p99_vs_goal"] = round(pct(latencies, 0.99) / 1.0, 3)
            result[f"rate_{rate}"] = row
            print(f"rate {rate}/s: {row}", file=sys.stderr)
    finally:
        store.close()
        client.close()
        # The bench's state is thrown away: no savepoint.
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
