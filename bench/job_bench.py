"""Sustained end-to-end events/s of the feature job, against Flink only reading and decoding.

With the stack up (``make up``):

    .venv/bin/python bench/job_bench.py --events 1000000 --runs 3

1. fills a fresh topic with N generated events (20k users over 30 days);
2. runs each side bounded to that topic, taking turns side by side, ``--runs`` times:
   - ``job``: the feature job (Kafka → tiles → Redis + Iceberg + raw archive), Redis
     written by the JVM sink;
   - ``limit``: the same source, decoded into a blackhole;
   - ``job-python-sink``: the feature job with ``PARITY_FLINK_REDIS_SINK=python``;
   - ``job-no-archive``, ``job-no-iceberg-tiles``, ``job-no-iceberg-progress``,
     ``job-redis-only``: the feature job without that writer (``jobs.stream --skip``),
     which prices each offline writer; ``job-no-live``: without live tiles, which
     prices freshness;
3. samples the resident memory of every stack process and of the side's process tree.

Every run includes Flink's start-up and writes under its own Redis prefix, Iceberg
namespace and consumer group. Figures are medians over the runs; ratios compare the
medians of events/s (so above 1 means faster than the side it is compared with).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from stack.cli import SERVICES
from stack.config import StackConfig
from stack.process import descendants

ROOT = jobctl.PROJECT_ROOT


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class MemorySampler(threading.Thread):
    """Peak RSS per component, sampled every 0.5 s."""

    def __init__(self, components: dict[str, int], job_pid: int) -> None:
        super().__init__(daemon=True)
        self.components = components
        self.job_pid = job_pid
        self.peak: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.components.items():
                self._record(name, rss_mb([pid, *descendants(pid)]))
            side = rss_mb([self.job_pid, *descendants(self.job_pid)])
            self._record("side (its process and every child)", side)
            time.sleep(0.5)

    def _record(self, name: str, value: float) -> None:
        self.peak[name] = max(self.peak.get(name, 0.0), value)


def timed_run(
    cmd: list[str], log: Path, components: dict[str, int], env: dict[str, str]
) -> tuple[float, dict[str, float]]:
    started = time.monotonic()
    proc = jobctl.start_local(cmd, log, env=env)
    sampler = MemorySampler(components, proc.pid)
    sampler.start()
    code = proc.wait()
    elapsed = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    if code != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed with {code}; see {log}")
    return elapsed, sampler.peak


SIDES: dict[str, tuple[str, ...]] = {
    "job": (),
    "limit": (),
    "job-python-sink": (),
    "job-no-archive": ("archive",),
    "job-no-iceberg-tiles": ("iceberg-tiles",),
    "job-no-iceberg-progress": ("iceberg-progress",),
    "job-redis-only": ("archive", "iceberg-tiles", "iceberg-progress"),
    "job-no-live": ("live",),
}


def side_command(side: str, topic: str, group_id: str) -> list[str]:
    if side == "limit":
        script = str(ROOT / "bench" / "decode_only.py")
        return [str(jobctl.job_python()), script, "--topic", topic, "--group-id", group_id]
    cmd = jobctl.stream_command("user_stats", bounded=True, topic=topic, group_id=group_id)
    for writer in SIDES[side]:
        cmd += ["--skip", writer]
    return cmd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=3, help="rounds; each round runs every side once")
    p.add_argument(
        "--sides",
        default="job,limit,job-python-sink",
        help=f"comma-separated, run in this order each round; from {', '.join(SIDES)}",
    )
    args = p.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        p.error(f"unknown side(s) {unknown}; choose from {', '.join(SIDES)}")

    cfg = StackConfig()
    components = {s.name: pid for s in SERVICES if s.name != "flink" and (pid := s.info(cfg).pid)}
    bench_id = uuid.uuid4().hex[:8]
    topic = f"bench-job-{bench_id}"

    print(f"generating {args.events:,} events ...", file=sys.stderr)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = generate(
        GeneratorConfig(
            users=args.users, events=args.events, start=start, span=timedelta(days=args.days), seed=1
        )
    )
    print(f"producing to {topic} ...", file=sys.stderr)
    summary = produce_events(events, topic, KafkaConfig(), RegistryConfig())
    if summary.failed:
        sys.exit(f"producer failed: {summary.errors}")
    del events

    seconds: dict[str, list[float]] = {side: [] for side in sides}
    memory: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for round_no in range(1, args.runs + 1):
        for side in sides:
            run_id = f"{bench_id}r{round_no}{side.replace('-', '')}"
            workdir = ROOT / ".parity" / "bench" / run_id
            env = {
                "PARITY_REDIS_KEY_PREFIX": f"bench{run_id}",
                "PARITY_ICEBERG_NAMESPACE": f"bench{run_id}",
                "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / "checkpoints"),
            }
            if side == "job-python-sink":
                env["PARITY_FLINK_REDIS_SINK"] = "python"
            cmd = side_command(side, topic, f"bench-{run_id}")
            print(f"round {round_no}/{args.runs}: {side} ...", file=sys.stderr)
            elapsed, peak = timed_run(cmd, workdir / f"{side}.log", components, env)
            print(f"  {args.events / elapsed:,.0f} events/s in {elapsed:.1f} s", file=sys.stderr)
            seconds[side].append(elapsed)
            memory[side].append(peak)

    rate = {side: args.events / statistics.median(runs) for side, runs in seconds.items()}
    result: dict[str, object] = {
        "events": args.events,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "events_per_s": {side: [round(args.events / s) for s in runs] for side, runs in seconds.items()},
        "median_events_per_s": {side: round(r) for side, r in rate.items()},
        "peak_rss_mb_median": {
            side: {name: round(statistics.median(p.get(name, 0.0) for p in peaks)) for name in peaks[0]}
            for side, peaks in memory.items()
        },
    }
    ratios = {}
    if "job" in rate:
        ratios = {f"job / {side}": round(rate["job"] / r, 3) for side, r in rate.items() if side != "job"}
    result["ratios"] = ratios
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
