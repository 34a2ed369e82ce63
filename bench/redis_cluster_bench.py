"""Redis Cluster against one Redis: tile writes and online reads, same machine, one run.

    .venv/bin/python bench/redis_cluster_bench.py [--entities 2000] [--tiles 48] [--reads 500] [--rounds 3]

Starts a private redis-server (the single side) and the stack's optional
`redis-cluster` service (three masters; stopped again if this started it).
Each round, taking turns:
- writes: ``--entities`` x ``--tiles`` hourly tiles of user_stats ending now,
  through the sink that `replay --to-online` and `repair-online` use (one
  pipelined round trip of set_tiles calls per 1000 tiles, window values
  recomputed), under a fresh key prefix; tiles/s;
- reads: ``--reads`` calls of get_online_features for 100 entities and every
  feature of the view at now (one MGET each), alternating call by call; p50.

On the cluster every key of the view carries its hash tag, so all of them sit
on one master: the figures price the cluster client and its routing, not a
spread of one view over three nodes. Prints medians and one JSON line with the
ratios (cluster / single: above 1 means the cluster side is faster for
writes, slower for reads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

from local_redis import redis_server
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis import RedisTileSink, connect
from sinks.redis_layout import view_pattern
from stack import redis_cluster
from stack.config import StackConfig

HOUR = 3_600_000
READ_BATCH = 100


def rows(entities: int, tiles: int, now_ms: int) -> list[TileRow]:
    """``tiles`` closed hourly tiles per entity, up to the current hour (user_stats' three counts)."""
    newest = now_ms - now_ms % HOUR
    return [
        TileRow(f"u{e}", start, start + HOUR, 5, (3, 2, 1))
        for e in range(entities)
        for start in range(newest - tiles * HOUR, newest, HOUR)
    ]


def write(cfg: RedisConfig, batch: list[TileRow], now_ms: int) -> float:
    """Seconds to set every tile, 1000 per pipelined round trip."""
    sink = RedisTileSink(user_stats, cfg, clock=lambda: now_ms)
    sink.open()
    try:
        began = time.perf_counter()
        for i in range(0, len(batch), 1000):
            sink.write(batch[i : i + 1000])
        sink.advance_completeness(now_ms - now_ms % HOUR)
        return time.perf_counter() - began
    finally:
        sink.close()


def drop(cfg: RedisConfig) -> None:
    client = connect(cfg)
    try:
        keys = list(client.scan_iter(match=view_pattern(cfg.key_prefix, user_stats), count=1000))
        for key in keys:
            client.unlink(key)
    finally:
        client.close()


def store(cfg: RedisConfig) -> OnlineStore:
    return OnlineStore(cfg, views={"user_stats": user_stats}, metrics=ServingMetrics(CollectorRegistry()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--tiles", type=int, default=48)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    stack = StackConfig()
    started = not redis_cluster.is_up(stack)
    if started:
        redis_cluster.start(stack)
    try:
        with redis_server() as port:
            sides = {
                "single": {"host": "127.0.0.1", "port": port},
                "cluster": {"mode": "cluster", "cluster_nodes": redis_cluster.seeds(stack)},
            }
            result = run(sides, args)
    finally:
        if started:
            redis_cluster.stop(stack)
    print(json.dumps(result))
    return 0


def run(sides: dict[str, dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
    batch = rows(args.entities, args.tiles, now_ms)
    refs = [f"user_stats:{name}" for name in user_stats.feature_names]
    written: dict[str, list[float]] = {side: [] for side in sides}
    read: dict[str, list[float]] = {side: [] for side in sides}
    for round_no in range(1, args.rounds + 1):
        # Rounds take turns at which side writes first.
        order = list(sides) if round_no % 2 else list(reversed(sides))
        cfgs = {side: RedisConfig(key_prefix=f"bench{uuid.uuid4().hex[:6]}", **sides[side]) for side in order}
        for side, cfg in cfgs.items():
            seconds = write(cfg, batch, now_ms)
            written[side].append(len(batch) / seconds)
            print(f"round {round_no}: {side} wrote {len(batch):,} tiles in {seconds:.2f} s", file=sys.stderr)
        stores = {side: store(cfg) for side, cfg in cfgs.items()}
        try:
            samples: dict[str, list[float]] = {side: [] for side in sides}
            for i in range(args.reads):
                first = i * READ_BATCH % args.entities
                entity_rows = [{"user_id": f"u{(first + k) % args.entities}"} for k in range(READ_BATCH)]
                for side, online in stores.items():
                    began = time.perf_counter()
                    values = online.get_online_features(refs, entity_rows)
                    samples[side].append(time.perf_counter() - began)
                    # Every entity holds 3 impressions per hour: a read that found nothing fails here.
                    got = [row["user_stats:impressions_1d"].value for row in values]
                    assert got == [3 * 24] * READ_BATCH, f"{side}: read {got[:3]}..., not 72 each"
            for side, taken in samples.items():
                read[side].append(statistics.median(taken) * 1000)
                print(f"round {round_no}: {side} read p50 {read[side][-1]:.2f} ms", file=sys.stderr)
        finally:
            for online in stores.values():
                online.close()
            for cfg in cfgs.values():
                drop(cfg)
    writes = {side: round(statistics.median(v)) for side, v in written.items()}
    reads = {side: round(statistics.median(v), 3) for side, v in read.items()}
    return {
        "entities": args.entities,
        "tiles_per_entity": args.tiles,
        "rounds": args.rounds,
        "write_tiles_per_s": writes,
        "read_p50_ms_100_entities": reads,
        "ratios": {
            "write cluster / single": round(writes["cluster"] / writes["single"], 3),
            "read p50 cluster / single": round(reads["cluster"] / reads["single"], 3),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
