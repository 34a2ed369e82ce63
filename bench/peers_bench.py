"""Events/s of parity's feature job against peer stream engines computing the same tiles.

With the stack up and the peers installed (``bench/peers/setup.sh``):

    .venv/bin/python bench/peers_bench.py [--events 1000000] [--runs 3]
        [--sides parity parity-redis-only bytewax quix]

1. fills one fresh topic with N generated events (20k users over 30 days, seed 1: the
   topic of bench/job_bench.py);
2. checks each peer on a small topic first (bench/peers/check.py) and stops if one differs;
3. times ``--runs`` rounds; each round runs every side once, in an order rotated from
   round to round: parity's feature job (bounded, as bench/job_bench.py runs it, with
   fresh Redis keys, Iceberg namespace and checkpoints), the same job without its
   Iceberg writers (``parity-redis-only``, like for like with the peers) and each peer
   (bench/peers/);
4. samples the resident memory of each side's process tree, and of the stack services.

Every run includes its engine's start-up and ends when the engine has read the topic to
the end offsets it saw at start. Peers write tiles only (no Iceberg, archive or window
values). The ratio is parity's median events/s over the faster peer's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import uuid
from pathlib import Path

import redis
from job_bench import pss_mb, timed_run
from peers.check import PEERS, delete_topics, make_topic, peer_command, peer_env, verify

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import RedisConfig
from sinks.redis_layout import entity_key
from stack.cli import SERVICES
from stack.config import StackConfig

ROOT = jobctl.PROJECT_ROOT
PARITY = "parity"
# parity without its Iceberg writers (tiles, progress, raw archive): what the peers do.
PARITY_REDIS_ONLY = "parity-redis-only"
PARITY_SIDES = {PARITY: [], PARITY_REDIS_ONLY: ["archive", "iceberg-tiles", "iceberg-progress"]}
SIDES = (*PARITY_SIDES, *PEERS)


def _redis() -> redis.Redis:
    store = RedisConfig()
    return redis.Redis(host=store.host, port=store.port, db=store.db)


def _count_fields(client: redis.Redis, pattern: str) -> int:
    """Hash fields (tiles) under the keys matching ``pattern``."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hlen(key)
    return sum(pipe.execute()) if keys else 0


def _delete_keys(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def _run_side(side: str, topic: str, workdir: Path, components: dict[str, int]) -> dict[str, float]:
    """One timed run of a side over the whole topic: seconds, peak RSS and tiles written."""
    run_id = uuid.uuid4().hex[:8]
    client = _redis()
    if side in PARITY_SIDES:
        prefix = f"peersbench{run_id}"
        cmd = jobctl.stream_command("user_stats", bounded=True, topic=topic, group_id=f"peers-bench-{run_id}")
        for writer in PARITY_SIDES[side]:
            cmd += ["--skip", writer]
        env = {
            "PARITY_REDIS_KEY_PREFIX": prefix,
            "PARITY_ICEBERG_NAMESPACE": prefix,
            "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / run_id / "checkpoints"),
        }
        tiles_pattern = entity_key(prefix, user_stats, "*")
        cleanup_pattern = f"{prefix}:*"
    else:
        cmd = peer_command(side, topic, run_id)
        env = peer_env()
        tiles_pattern = cleanup_pattern = f"peer:{side}:{run_id}:e:*"
    seconds, peak, _, _ = timed_run(cmd, workdir / f"{side}-{run_id}.log", components, env, client)
    try:
        tiles = _count_fields(client, tiles_pattern)
    finally:
        _delete_keys(client, cleanup_pattern)
        client.close()
    # The sampler's one entry that is not a stack service is the side's own process tree.
    own = max((v for k, v in peak.items() if k not in components), default=0.0)
    stack = {k: v for k, v in peak.items() if k in components}
    return {"seconds": seconds, "peak_rss_mb": own, "tiles": tiles, **stack}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    args = p.parse_args()
    sides = [s for s in SIDES if s in args.sides]

    cfg = StackConfig()
    components = {s.name: pid for s in SERVICES if s.name != "flink" and (pid := s.info(cfg).pid)}
    peers = [s for s in sides if s not in PARITY_SIDES]
    if peers:
        print(f"checking {', '.join(peers)} against the reference ...", file=sys.stderr)
        if verify(peers) != 0:
            sys.exit("a peer differs from the reference; not timing it")

    print(f"producing {args.events:,} events ...", file=sys.stderr)
    topic, events = make_topic("bench-peers", args.events, args.users, args.days, seed=1)
    del events
    workdir = ROOT / ".parity" / "bench" / f"peers-{topic}"
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    try:
        for round_no in range(args.runs):
            # Rotated, so no side always runs first (cold caches) or right after the same one.
            shift = round_no % len(sides)
            for side in sides[shift:] + sides[:shift]:
                print(f"round {round_no + 1}/{args.runs}: {side} ...", file=sys.stderr)
                run = _run_side(side, topic, workdir, components)
                results[side].append(run)
                print(f"  {run['seconds']:.1f} s, {run['tiles']:,} tiles", file=sys.stderr)
    finally:
        delete_topics([topic])

    report: dict[str, object] = {"events": args.events, "runs": args.runs, "cpus": os.cpu_count()}
    medians = {}
    for side, runs in results.items():
        rates = [args.events / r["seconds"] for r in runs]
        medians[side] = statistics.median(rates)
        report[side] = {
            "median_events_per_s": round(medians[side]),
            "events_per_s": [round(x) for x in rates],
            "seconds": [round(r["seconds"], 1) for r in runs],
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
            "tiles_in_redis": [int(r["tiles"]) for r in runs],
            "peak_rss_mb_stack": {
                name: round(max(r.get(name, 0.0) for r in runs)) for name in components if name in runs[0]
            },
        }
    if peers:
        faster = max(peers, key=medians.__getitem__)
        report["faster_peer"] = faster
        for side in (s for s in PARITY_SIDES if s in medians):
            ratio = round(medians[side] / medians[faster], 3)
            report[f"ratio_{side.replace('-', '_')}_to_faster_peer"] = ratio
    report["stack_rss_mb_now"] = {name: round(pss_mb([pid])) for name, pid in components.items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
