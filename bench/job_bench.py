"""Sustained end-to-end events/s of the feature job, against Flink only reading and decoding.

With the stack up (``make up``):

    .venv/bin/python bench/job_bench.py --events 1000000

1. fills a fresh topic with N generated events (20k users over 30 days);
2. runs the feature job (Kafka → tiles → Redis + Iceberg) bounded to that topic;
3. runs the limit on the same topic: the same source, decoded into a blackhole;
4. samples the resident memory of every stack process and the job during both.

Both runs include Flink's start-up; the ratio is feature job / limit in events/s.
"""

from __future__ import annotations

import argparse
import json
import os
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
            self._record(
                "job (mini-cluster + Python workers)", rss_mb([self.job_pid, *descendants(self.job_pid)])
            )
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    args = p.parse_args()

    cfg = StackConfig()
    components = {s.name: pid for s in SERVICES if s.name != "flink" and (pid := s.info(cfg).pid)}
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-job-{run_id}"
    workdir = ROOT / ".parity" / "bench" / run_id
    env = {
        "PARITY_REDIS_KEY_PREFIX": f"bench{run_id}",
        "PARITY_ICEBERG_NAMESPACE": f"bench{run_id}",
        "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / "checkpoints"),
    }

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

    print("running the feature job ...", file=sys.stderr)
    job_cmd = jobctl.stream_command("user_stats", bounded=True, topic=topic, group_id=f"bench-job-{run_id}")
    job_s, job_mem = timed_run(job_cmd, workdir / "job.log", components, env)
    print("running the decode-only limit ...", file=sys.stderr)
    limit_cmd = [
        str(jobctl.job_python()),
        str(ROOT / "bench" / "decode_only.py"),
        "--topic",
        topic,
        "--group-id",
        f"bench-limit-{run_id}",
    ]
    limit_s, limit_mem = timed_run(limit_cmd, workdir / "limit.log", components, env)

    result = {
        "events": args.events,
        "feature_job_s": round(job_s, 1),
        "feature_job_events_per_s": round(args.events / job_s),
        "decode_only_s": round(limit_s, 1),
        "decode_only_events_per_s": round(args.events / limit_s),
        "ratio_job_to_limit": round(limit_s / job_s, 3),
        "peak_rss_mb_during_job": {k: round(v) for k, v in job_mem.items()},
        "peak_rss_mb_during_limit": {k: round(v) for k, v in limit_mem.items()},
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
