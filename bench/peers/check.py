"""Correctness check of the peer engines: their Redis tiles against an independent reference.

With the stack up and the peers installed (``bench/peers/setup.sh``):

    .venv/bin/python bench/peers/check.py [--peers bytewax quix]

1. produces a small fresh topic (5,000 events, 200 users, 3 days) with producer.generate;
2. runs each peer to the end of that topic;
3. computes the reference from the generated events in plain Python
   (tests/integration/reference.py's ``tiles``), keeping only the tiles a peer closes:
   those of users with an event at or after ``tile end + max_out_of_orderness``
   (each peer's watermark is per user, and open tiles are not flushed at the end);
4. compares every (user, tile) of the peer's Redis hashes with the reference.

Exits 1 naming the first differing (user, tile) of a peer; its Redis keys are deleted
either way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from features.user_stats import view
from parity import jobctl
from parity.config import KafkaConfig, RedisConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events

ROOT = jobctl.PROJECT_ROOT
PEERS = ("bytewax", "quix")
TILE_MS = int(view.tile / timedelta(milliseconds=1))
GRACE_MS = int(view.source.max_out_of_orderness / timedelta(milliseconds=1))

Tiles = dict[tuple[str, int], str]


def peer_python(name: str) -> Path:
    """The interpreter of a peer's own virtualenv."""
    path = ROOT / ".parity" / "bench" / "peers" / f"{name}-venv" / "bin" / "python"
    if not path.exists():
        sys.exit(f"{path} is missing; run bench/peers/setup.sh {name}")
    return path


def peer_env() -> dict[str, str]:
    """The ``PEER_*`` settings that point a peer at the services parity's own config names."""
    kafka, registry, store = KafkaConfig(), RegistryConfig(), RedisConfig()
    return {
        "PEER_BOOTSTRAP": kafka.bootstrap_servers,
        "PEER_REGISTRY_URL": registry.url,
        "PEER_REDIS_URL": f"redis://{store.host}:{store.port}/{store.db}",
    }


def redis_client() -> redis.Redis:
    store = RedisConfig()
    return redis.Redis(host=store.host, port=store.port, db=store.db)


def peer_command(name: str, topic: str, run: str) -> list[str]:
    """The argv that runs a peer to the end of ``topic``, its tiles under ``peer:<name>:<run>:``."""
    script = ROOT / "bench" / "peers" / name / "run.py"
    return [str(peer_python(name)), str(script), "--topic", topic, "--run", run]


def make_topic(
    prefix: str, events: int, users: int, days: int, seed: int
) -> tuple[str, list[dict[str, Any]]]:
    """A fresh topic filled with generated events (the same generator as bench/job_bench.py)."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    generated = generate(
        GeneratorConfig(
            users=users,
            events=events,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            span=timedelta(days=days),
            seed=seed,
        )
    )
    summary = produce_events(generated, topic, KafkaConfig(), RegistryConfig())
    if summary.failed:
        sys.exit(f"producer failed: {summary.errors}")
    return topic, generated


def expected_tiles(events: Iterable[dict[str, Any]]) -> Tiles:
    """The reference tiles that a peer closes: ``(user, start epoch s) -> 'events|imps|clicks|mobile'``."""
    events = list(events)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.integration.reference import ms, tiles

    newest: dict[str, int] = {}
    for e in events:
        newest[e["user_id"]] = max(newest.get(e["user_id"], 0), ms(e["event_time"]))
    return {
        (user, start_ms // 1000): "|".join(str(n) for n in counts)
        for (user, start_ms), counts in tiles(events).items()
        if newest[user] >= start_ms + TILE_MS + GRACE_MS
    }


def read_tiles(client: redis.Redis, name: str, run: str) -> Tiles:
    """Every tile a peer wrote for a run, from its ``peer:<name>:<run>:e:<user>`` hashes."""
    prefix = f"peer:{name}:{run}:e:"
    found: Tiles = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        user = key.decode()[len(prefix) :]
        for field, value in client.hgetall(key).items():
            found[(user, int(field))] = value.decode()
    return found


def delete_tiles(client: redis.Redis, name: str, run: str) -> None:
    keys = list(client.scan_iter(match=f"peer:{name}:{run}:e:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def first_difference(expected: Tiles, actual: Tiles) -> str | None:
    """The first (user, tile) in order whose value differs, missing or extra, described; None if equal."""
    for user, start in sorted(expected.keys() | actual.keys()):
        want, got = expected.get((user, start)), actual.get((user, start))
        if want != got:
            hour = datetime.fromtimestamp(start, UTC).isoformat()
            return f"user {user} tile {start} ({hour}): expected {want or 'no tile'}, got {got or 'no tile'}"
    return None


def delete_topics(names: Sequence[str]) -> None:
    """Deletes the topics."""
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    if names:
        for future in admin.delete_topics(list(names), operation_timeout=30).values():
            future.result()


def check_peer(name: str, topic: str, expected: Tiles, workdir: Path, timeout_s: float = 600) -> str | None:
    """Runs one peer over ``topic`` and compares its tiles with ``expected``; None when equal."""
    run = f"check{uuid.uuid4().hex[:8]}"
    log = workdir / f"check-{name}-{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    client = redis_client()
    try:
        with log.open("wb") as out:
            code = subprocess.run(
                peer_command(name, topic, run),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | peer_env(),
                timeout=timeout_s,
                check=False,
            ).returncode
        if code != 0:
            return f"{name} exited with {code}; see {log}"
        actual = read_tiles(client, name, run)
        difference = first_difference(expected, actual)
        if difference is None:
            print(f"{name}: {len(actual)} tiles match the reference", file=sys.stderr)
        return None if difference is None else f"{name}: {difference} ({len(actual)} tiles written)"
    finally:
        delete_tiles(client, name, run)
        client.close()


def verify(peers: Sequence[str], events: int = 5000, users: int = 200, days: int = 3, seed: int = 7) -> int:
    """Checks each peer on a fresh small topic; returns the process exit code (0: all match)."""
    workdir = ROOT / ".parity" / "bench" / "peers"
    topic, generated = make_topic("peers-check", events, users, days, seed)
    expected = expected_tiles(generated)
    print(f"{topic}: {len(generated)} events, {len(expected)} closed tiles expected", file=sys.stderr)
    failures = []
    try:
        for name in peers:
            failure = check_peer(name, topic, expected, workdir)
            if failure is not None:
                failures.append(failure)
                print(failure, file=sys.stderr)
    finally:
        delete_topics([topic])
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    return verify(args.peers, args.events, args.users, args.days, args.seed)


if __name__ == "__main__":
    sys.exit(main())
