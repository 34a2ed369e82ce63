"""Online read latency: parity's get_online_features against the limit and Feast, same Redis, one run.

    .venv/bin/python bench/serving_bench.py [--redis-port P] [--entities 1000] [--reads 2000] [--no-feast]

Without --redis-port a private redis-server is started on a free port (and
stopped at the end). Measured, each as p50/p99 over --reads calls, for 1
entity x 10 features and 100 entities x 10 features:
- parity: OnlineStore.get_online_features over a bench-only view of 10
  features (5 counts x 1 d and 7 d windows), each entity holding 192 hourly
  tiles (8 days: everything the online store keeps) and the open tile of the
  current hour, written by the job's sink, which also precomputes the window
  values: one MGET per request, the head included;
- parity-merged: the same reads as of one hour earlier, which the precomputed
  values do not cover, so every entity is merged from its tiles in Redis (the
  read path for a past as_of, or for values awaiting the job's refresh);
- the limit: a pipelined HMGET of 10 precomputed values per entity;
- Feast 0.67 get_online_features on the same Redis, in its own environment
  (.cache/feast-venv, created from bench/feast/requirements.txt on first run).
parity and the limit take turns call by call. Prints a table and one JSON
line with the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from local_redis import redis_server
from prometheus_client import CollectorRegistry

from features.definition import AggKind, Aggregation, FeatureView
from features.user_stats import view as user_stats
from parity.config import RedisConfig
from serving.assembly import to_ms
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis import RedisTileSink

ROOT = Path(__file__).resolve().parents[1]
FEAST_VENV = ROOT / ".cache" / "feast-venv"
HOUR = 3_600_000

bench_view = FeatureView(
    name="bench_stats",
    version=1,
    owner="bench",
    entity=user_stats.entity,
    source=user_stats.source,
    tile=timedelta(hours=1),
    aggregations=tuple(Aggregation(f"a{i}", AggKind.COUNT) for i in range(5)),
    windows=(timedelta(days=1), timedelta(days=7)),
    defaults={f"a{i}_{w}": 0 for i in range(5) for w in ("1d", "7d")},
    max_staleness=timedelta(hours=2),
)
FEATURES = [f"bench_stats:{f}" for f in bench_view.feature_names]


def percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
    }


def timed(calls: dict, reads: int) -> dict[str, dict[str, float]]:
    """Percentiles per reader; the readers take turns call by call, so a noisy
    neighbour slows them alike instead of whichever happened to run then."""
    for _ in range(min(200, reads)):
        for call in calls.values():
            call(0)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(reads):
        for name, call in calls.items():
            started = time.perf_counter()
            call(i)
            samples[name].append(time.perf_counter() - started)
    return {name: percentiles(taken) for name, taken in samples.items()}


def load(cfg: RedisConfig, entities: int, now_ms: int) -> None:
    sink = RedisTileSink(bench_view, cfg)
    sink.open()
    end = now_ms - now_ms % HOUR
    client = redis.Redis(host=cfg.host, port=cfg.port)
    try:
        for start in range(0, entities, 100):
            rows = [
                TileRow(f"u{e:06d}", end - h * HOUR, end - (h - 1) * HOUR, 5, (1, 1, 1, 1, 1))
                for e in range(start, min(entities, start + 100))
                for h in range(0, 193)  # h = 0: the open tile of the current hour, a read's head
            ]
            sink.write(rows)
        sink.advance_completeness(end)
        pipe = client.pipeline(transaction=False)
        for e in range(entities):
            pipe.hset(f"{cfg.key_prefix}:pre:u{e:06d}", mapping={f"f{i}": 24 for i in range(10)})
        pipe.execute()
    finally:
        sink.close()
        client.close()


def feast(port: int, entities: int, reads: int) -> dict | None:
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        print("creating the Feast environment in .cache/feast-venv ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "-r",
                str(ROOT / "bench" / "feast" / "requirements.txt"),
            ],
            check=True,
        )
    out = subprocess.run(
        [
            str(python),
            str(ROOT / "bench" / "feast" / "feast_bench.py"),
            "--port",
            str(port),
            "--entities",
            str(entities),
            "--reads",
            str(reads),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        print(f"Feast run failed:\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-port", type=int, help="use this Redis (default: a private redis-server)")
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--no-feast", action="store_true")
    args = parser.parse_args()

    with redis_server(args.redis_port) as port:
        cfg = RedisConfig(port=port, key_prefix=f"bench{int(time.time())}")
        now_ms = to_ms(datetime.now(UTC))
        load(cfg, args.entities, now_ms)
        store = OnlineStore(cfg, {"bench_stats": bench_view}, metrics=ServingMetrics(CollectorRegistry()))
        raw = redis.Redis(host=cfg.host, port=cfg.port)
        fields = [f"f{i}" for i in range(10)]
        n = args.entities

        def parity(batch: int, as_of: datetime | None = None):
            def call(i: int) -> None:
                rows = [{"user_id": f"u{(i * batch + j) % n:06d}"} for j in range(batch)]
                store.get_online_features(FEATURES, rows, as_of=as_of)

            return call

        hour_ago = datetime.now(UTC) - timedelta(hours=1)

        def limit(batch: int):
            def call(i: int) -> None:
                pipe = raw.pipeline(transaction=False)
                for j in range(batch):
                    pipe.hmget(f"{cfg.key_prefix}:pre:u{(i * batch + j) % n:06d}", fields)
                pipe.execute()

            return call

        check = store.get_online_features(FEATURES, [{"user_id": "u000001"}])[0]
        # 24 and 168 closed tiles, plus the head: a read at now takes the open tile.
        assert check["bench_stats:a0_1d"].value == 25 and check["bench_stats:a0_7d"].value == 169, check
        results: dict[str, dict[str, dict[str, float]]] = {"parity": {}, "limit": {}}
        for b in (1, 100):
            both = timed({"parity": parity(b), "limit": limit(b)}, args.reads)
            for reader, figures in both.items():
                results[reader][str(b)] = figures
        counted = store.metrics.registry.get_sample_value
        read = counted("feature_entities_read_total", {"view": "bench_stats"})
        merged = counted("feature_entities_merged_total", {"view": "bench_stats"}) or 0
        print(f"parity: entities read {read:.0f}, merged from tiles {merged:.0f}", file=sys.stderr)
        results["parity-merged"] = {
            str(b): timed({"merged": parity(b, hour_ago)}, args.reads // 4)["merged"] for b in (1, 100)
        }
        store.close()
        raw.close()
        if not args.no_feast:
            got = feast(port, args.entities, args.reads)
            if got is not None:
                results["feast"] = got

    print(f"{'entities':>8} {'reader':>13} {'p50 ms':>9} {'p99 ms':>9}")
    for batch in ("1", "100"):
        for reader, by_batch in results.items():
            r = by_batch[batch]
            print(f"{batch:>8} {reader:>13} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f}")
    ratios = {
        f"parity/{peer} p50 @{b}": results["parity"][b]["p50_ms"] / results[peer][b]["p50_ms"]
        for peer in results
        if peer not in ("parity", "parity-merged")
        for b in ("1", "100")
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(json.dumps({"results": results, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
