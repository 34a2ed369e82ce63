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
     prices freshness; ``job-wait-replica``: with ``PARITY_REDIS_WAIT_REPLICAS=1``,
     which needs ``--replica`` (a replica of the stack's Redis for the whole run,
     every side writing through it alike);
3. samples the resident memory of every stack process and of the side's process tree;
4. counts the commands Redis processed during each run (``INFO stats``
   ``total_commands_processed``, which also counts the commands a Lua script
   calls), so that ``job`` against ``job-no-live`` prices freshness in Redis
   operations as well as in events/s. Nothing else should use the stack's
   Redis meanwhile;
5. samples the side's Kafka consumer's record count from its Prometheus
   endpoint every 2 s, and reports a steady rate besides the whole run's:
   records/s between 20% and 80% of the topic read, so Flink's start-up and
   the final savepoint, which a bounded run pays once, are left out.

Every run includes Flink's start-up and writes under its own Redis prefix, Iceberg
namespace and consumer group. Figures are medians over the runs; ratios compare the
medians of events/s (so above 1 means faster than the side it is compared with).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from local_redis import redis_server
from redis import Redis

from parity import jobctl
from parity.config import KafkaConfig, RedisConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from sinks.redis import connect
from stack.cli import SERVICES
from stack.config import StackConfig
from stack.process import descendants

ROOT = jobctl.PROJECT_ROOT


def pss_mb(pids: list[int]) -> float:
    """Resident memory of these processes, as their proportional set size (Pss).

    Pss splits a page shared by several processes between them, so a forked child
    (the JVM forks to run shell commands, briefly a copy of itself) adds only what it
    does not share. Summing VmRSS counted the JVM twice whenever a sample caught a
    fork, which made one run in three look twice as large.
    """
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total / 1024


SIDE_TREE = "side (its process and every child)"


def command_name(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in args if a]
    script = next((w for w in words[1:] if w.endswith(".py") or w.startswith("-m")), "")
    return " ".join(filter(None, [Path(words[0]).name if words else "?", script]))


class MemorySampler(threading.Thread):
    """Peak memory (Pss) per component, sampled every 0.5 s."""

    def __init__(self, components: dict[str, int], job_pid: int) -> None:
        super().__init__(daemon=True)
        self.components = components
        self.job_pid = job_pid
        self.peak: dict[str, float] = {}
        self.peak_parts: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.components.items():
                self._record(name, pss_mb([pid, *descendants(pid)]))
            parts = {pid: pss_mb([pid]) for pid in [self.job_pid, *descendants(self.job_pid)]}
            side = sum(parts.values())
            if side > self.peak.get(SIDE_TREE, 0.0):
                # What the peak is made of: a spike is otherwise impossible to place.
                self.peak_parts = {f"{pid} {command_name(pid)}": mb for pid, mb in parts.items()}
            self._record(SIDE_TREE, side)
            time.sleep(0.5)

    def _record(self, name: str, value: float) -> None:
        self.peak[name] = max(self.peak.get(name, 0.0), value)


# The Kafka consumer's own count of records it handed to the source, as Flink's Prometheus
# reporter exports it; the local job's mini-cluster serves it on the first free port of these.
CONSUMED = "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_consumed_total"
METRICS_PORTS = range(19254, 19258)


class ProgressSampler(threading.Thread):
    """(seconds since start, records consumed) every 2 s, from the side's Prometheus endpoint.

    Not more often: rendering Flink's metrics page costs the job's JVM CPU, a tenth
    of it when scraped every 0.5 s. The rate interpolates between samples.
    """

    def __init__(self, started: float) -> None:
        super().__init__(daemon=True)
        self.started = started
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            consumed = None
            for port in METRICS_PORTS:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
                        text = reply.read().decode()
                except OSError:
                    continue
                found = [
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith(CONSUMED + "{")
                ]
                if found:
                    consumed = (consumed or 0.0) + sum(found)
            if consumed is not None:
                self.samples.append((time.monotonic() - self.started, consumed))
            time.sleep(2.0)


def steady_rate(
    samples: list[tuple[float, float]], total: int, low: float = 0.2, high: float = 0.8
) -> float | None:
    """Records/s between consuming ``low`` and ``high`` of ``total``: start-up and the stop left out."""

    def when(share: float) -> float | None:
        target = share * total
        previous = None
        for t, consumed in samples:
            if consumed >= target:
                if previous is None or consumed == previous[1]:
                    return t
                (t0, c0) = previous
                return t0 + (t - t0) * (target - c0) / (consumed - c0)
            previous = (t, consumed)
        return None

    start, end = when(low), when(high)
    if start is None or end is None or end <= start:
        return None
    return (high - low) * total / (end - start)


def redis_commands(client: Redis) -> int:
    """Commands the stack's Redis has processed since it started, this INFO call excluded."""
    return int(client.info("stats")["total_commands_processed"])


def timed_run(
    cmd: list[str], log: Path, components: dict[str, int], env: dict[str, str], client: Redis
) -> tuple[float, dict[str, float], int, list[tuple[float, float]]]:
    """Seconds, peak memory per component, Redis commands processed, and progress samples."""
    commands = redis_commands(client)
    started = time.monotonic()
    proc = jobctl.start_local(cmd, log, env=env)
    sampler = MemorySampler(components, proc.pid)
    sampler.start()
    progress = ProgressSampler(started)
    progress.start()
    code = proc.wait()
    elapsed = time.monotonic() - started
    for thread in (sampler, progress):
        thread.done.set()
        thread.join()
    if code != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed with {code}; see {log}")
    parts = sorted(sampler.peak_parts.items(), key=lambda kv: -kv[1])
    print(
        f"  peak memory (Pss) of the side: {sum(mb for _, mb in parts):,.0f} MB = "
        + " + ".join(f"{name} {mb:,.0f}" for name, mb in parts if mb >= 1),
        flush=True,
    )
    # The first INFO is counted by the second.
    return elapsed, sampler.peak, redis_commands(client) - commands - 1, progress.samples


SIDES: dict[str, tuple[str, ...]] = {
    "job": (),
    "limit": (),
    "job-python-sink": (),
    "job-no-archive": ("archive",),
    "job-no-iceberg-tiles": ("iceberg-tiles",),
    "job-no-iceberg-progress": ("iceberg-progress",),
    "job-redis-only": ("archive", "iceberg-tiles", "iceberg-progress"),
    "job-no-live": ("live",),
    "job-wait-replica": (),
}
# Settings a side runs with besides the run's own.
SIDE_ENV: dict[str, dict[str, str]] = {
    "job-python-sink": {"PARITY_FLINK_REDIS_SINK": "python"},
    "job-wait-replica": {"PARITY_REDIS_WAIT_REPLICAS": "1"},
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
    p.add_argument(
        "--replica",
        action="store_true",
        help="give the stack's Redis a replica for the whole run (job-wait-replica needs one)",
    )
    args = p.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        p.error(f"unknown side(s) {unknown}; choose from {', '.join(SIDES)}")
    if "job-wait-replica" in sides and not args.replica:
        p.error("job-wait-replica waits for a replica the stack's Redis lacks: add --replica")

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

    client = connect(RedisConfig())
    # A with block: a run that fails exits through sys.exit, and the replica must stop too.
    with contextlib.ExitStack() as replica:
        if args.replica:
            redis_cfg = RedisConfig()
            print("starting a replica of the stack's Redis ...", file=sys.stderr)
            replica.enter_context(redis_server(replica_of=(redis_cfg.host, redis_cfg.port), timeout_s=60))
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        memory: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        commands: dict[str, list[int]] = {side: [] for side in sides}
        steady_rates: dict[str, list[float | None]] = {side: [] for side in sides}
        for round_no in range(1, args.runs + 1):
            for side in sides:
                run_id = f"{bench_id}r{round_no}{side.replace('-', '')}"
                workdir = ROOT / ".parity" / "bench" / run_id
                env = {
                    "PARITY_REDIS_KEY_PREFIX": f"bench{run_id}",
                    "PARITY_ICEBERG_NAMESPACE": f"bench{run_id}",
                    "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / "checkpoints"),
                }
                env |= SIDE_ENV.get(side, {})
                cmd = side_command(side, topic, f"bench-{run_id}")
                print(f"round {round_no}/{args.runs}: {side} ...", file=sys.stderr)
                elapsed, peak, sent, samples = timed_run(
                    cmd, workdir / f"{side}.log", components, env, client
                )
                steady = steady_rate(samples, args.events)
                print(
                    f"  {args.events / elapsed:,.0f} events/s in {elapsed:.1f} s"
                    f" (steady: {'unmeasured' if steady is None else f'{steady:,.0f}'}); "
                    f"{sent:,} Redis commands ({sent / elapsed:,.0f}/s)",
                    file=sys.stderr,
                )
                seconds[side].append(elapsed)
                memory[side].append(peak)
                commands[side].append(sent)
                steady_rates[side].append(steady)

    client.close()
    rate = {side: args.events / statistics.median(runs) for side, runs in seconds.items()}
    result: dict[str, object] = {
        "events": args.events,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "events_per_s": {side: [round(args.events / s) for s in runs] for side, runs in seconds.items()},
        "median_events_per_s": {side: round(r) for side, r in rate.items()},
        "redis_commands": commands,
        "median_redis_commands": {side: round(statistics.median(c)) for side, c in commands.items()},
        "median_redis_commands_per_s": {
            side: round(statistics.median(c / s for c, s in zip(commands[side], seconds[side], strict=True)))
            for side in sides
        },
        "peak_rss_mb_median": {
            side: {name: round(statistics.median(p.get(name, 0.0) for p in peaks)) for name in peaks[0]}
            for side, peaks in memory.items()
        },
    }
    ratios = {}
    if "job" in rate:
        ratios = {f"job / {side}": round(rate["job"] / r, 3) for side, r in rate.items() if side != "job"}
    result["ratios"] = ratios
    # Between 20% and 80% of the topic read: Flink's start-up and the final savepoint left out.
    steady = {
        side: statistics.median(r for r in runs if r is not None)
        for side, runs in steady_rates.items()
        if any(r is not None for r in runs)
    }
    result["steady_events_per_s"] = {
        side: [None if r is None else round(r) for r in runs] for side, runs in steady_rates.items()
    }
    result["median_steady_events_per_s"] = {side: round(r) for side, r in steady.items()}
    if "job" in steady:
        result["steady_ratios"] = {
            f"job / {side}": round(steady["job"] / r, 3) for side, r in steady.items() if side != "job"
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
