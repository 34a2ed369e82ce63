"""A well-behaved client's latency while an abusive one bursts: the HTTP server's limits at work.

    .venv/bin/python bench/serving_abuse_bench.py [--redis-port P] [--runs 3] [--seconds 8] [--abusers 200]

Without --redis-port a private redis-server is started on a free port (and
stopped at the end). The server is ``python -m serving serve`` with its default
limits, over 1,000 entities of user_stats, each holding eight days of hourly
tiles written by the job's sink. Measured:
- quiet: one client reading 1 entity x 2 features, now, one request at a time
  (paced at up to 100 a second), for --seconds;
- burst: the same client while --abusers concurrent connections, in a process
  of their own, ask for all 1,000 entities x 8 features as of three hours ago
  (merged from tiles inside Redis), again as soon as they are answered, never
  waiting for Retry-After.
The two sides take turns, --runs times each. Prints each run's p50/p99 and
status counts, the median p99 of each side, their ratio, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from local_redis import free_port, redis_server

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3_600_000
ENTITIES = [f"u{e:04d}" for e in range(1000)]
TILES = 192  # eight days of hourly tiles: everything the online store keeps
GOOD = {"features": ["user_stats:clicks_1d", "user_stats:clicks_7d"], "entities": [{"user_id": "u0001"}]}


def load(port: int, prefix: str) -> None:
    from features.user_stats import view as user_stats
    from parity.config import RedisConfig
    from serving.assembly import to_ms
    from sinks.base import TileRow
    from sinks.redis import RedisTileSink

    now = to_ms(datetime.now(UTC))
    end = now - now % HOUR
    sink = RedisTileSink(user_stats, RedisConfig(port=port, key_prefix=prefix))
    sink.open()
    try:
        for at in range(0, len(ENTITIES), 50):
            sink.write(
                [
                    TileRow(entity, end - h * HOUR, end - (h - 1) * HOUR, 2, (1, 1, 0))
                    for entity in ENTITIES[at : at + 50]
                    for h in range(1, TILES + 1)
                ]
            )
        sink.advance_completeness(end)
    finally:
        sink.close()


def abuse(url: str, abusers: int) -> None:
    """The abusive side, in its own process: runs until SIGTERM, then prints its status counts."""
    from features.user_stats import view as user_stats

    body = json.dumps(
        {
            "features": [f"user_stats:{f}" for f in user_stats.feature_names],
            "entities": [{"user_id": e} for e in ENTITIES],
            "as_of": (datetime.now(UTC) - timedelta(hours=3)).isoformat(),
        }
    ).encode()
    seen: Counter[str] = Counter()

    async def burst() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        limits = httpx.Limits(max_connections=abusers, max_keepalive_connections=abusers, keepalive_expiry=2)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def abuser() -> None:
                while not stop.is_set():
                    try:
                        response = await client.post(
                            url, content=body, headers={"content-type": "application/json"}
                        )
                        seen[str(response.status_code)] += 1
                    except httpx.HTTPError as exc:
                        seen[type(exc).__name__] += 1

            tasks = [asyncio.create_task(abuser()) for _ in range(abusers)]
            print("ready", flush=True)
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(burst())
    print(json.dumps(dict(seen)), flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000,
    }


def measure(base: str, seconds: float) -> dict:
    """The well-behaved client: latency of every answer, and how many were 200 with present values."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    present = 0
    with httpx.Client(base_url=base, timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.post("/features", json=GOOD)
            latencies.append(time.perf_counter() - started)
            codes[str(response.status_code)] += 1
            if response.status_code == 200:
                values = [v for r in response.json()["results"] for v in r["features"].values()]
                present += all(v["status"] == "present" for v in values)
            time.sleep(max(0.0, 0.01 - (time.perf_counter() - started)))
    return {**percentiles(latencies), "requests": len(latencies), "codes": dict(codes), "present": present}


def take_turns(base: str, turns: int, seconds: float, abusers: int) -> dict[str, list[dict]]:
    """Each side ``turns`` times, alternating which goes first; prints each run's figures."""
    runs: dict[str, list[dict]] = {"quiet": [], "burst": []}
    for run in range(turns):
        for side in ("quiet", "burst") if run % 2 == 0 else ("burst", "quiet"):
            abusing = None
            if side == "burst":
                abusing = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--abuse",
                        f"{base}/features",
                        "--abusers",
                        str(abusers),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert abusing.stdout is not None
                abusing.stdout.readline()  # "ready"
                time.sleep(1.0)  # the burst under way before measuring
            figures = measure(base, seconds)
            if abusing is not None:
                abusing.send_signal(signal.SIGTERM)
                out, _ = abusing.communicate(timeout=60)
                figures["abusers"] = json.loads(out.strip().splitlines()[-1])
            runs[side].append(figures)
            line = f"run {run + 1} {side:>5}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
            line += f", {figures['requests']} requests {figures['codes']}, present {figures['present']}"
            if "abusers" in figures:
                line += f"; abusers {figures['abusers']}"
            print(line, file=sys.stderr)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-port", type=int, help="use this Redis (default: a private redis-server)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one run (default 8)")
    parser.add_argument("--abusers", type=int, default=200, help="concurrent abusive connections")
    parser.add_argument("--abuse", help=argparse.SUPPRESS)  # the abusive process: the URL to abuse
    args = parser.parse_args()
    if args.abuse:
        abuse(args.abuse, args.abusers)
        return 0

    with redis_server(args.redis_port) as port:
        prefix = f"abusebench{int(time.time())}"
        load(port, prefix)
        http_port = free_port()
        env = {
            **os.environ,
            "PARITY_REDIS_PORT": str(port),
            "PARITY_REDIS_KEY_PREFIX": prefix,
            "PARITY_ICEBERG_NAMESPACE": prefix,  # never written: the lost-store check stays quiet
            "PARITY_SERVING_TRACE_EXPORTER": "none",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", "--port", str(http_port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{http_port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            measure(base, 1.0)  # warm-up
            runs = take_turns(base, args.runs, args.seconds, args.abusers)
            health = httpx.get(f"{base}/healthz", timeout=5).json()
        finally:
            server.terminate()
            server.wait(timeout=10)

    p99 = {side: statistics.median(r["p99_ms"] for r in figures) for side, figures in runs.items()}
    p50 = {side: statistics.median(r["p50_ms"] for r in figures) for side, figures in runs.items()}
    ratio = p99["burst"] / p99["quiet"]
    print(f"{'side':>6} {'p50 ms':>9} {'p99 ms':>9}   (medians of {args.runs} runs)")
    for side in ("quiet", "burst"):
        print(f"{side:>6} {p50[side]:>9.2f} {p99[side]:>9.2f}")
    print(f"p99 burst/quiet: {ratio:.2f}; circuit after the bursts: {health['circuit']}")
    print(json.dumps({"runs": runs, "p99_ms": p99, "p50_ms": p50, "ratio": ratio, "health": health}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
