"""What the continuity rules cost the feature job: events/s now, against the job before them.

With the stack up (``make up``):

    .venv/bin/python bench/continuity_bench.py --before 10a7ea9 --events 300000 --runs 3

1. exports the ``--before`` commit's tree (``git archive``) next to this one;
2. fills one topic with N generated events;
3. runs each side's feature job with ``--bounded`` over the whole topic, from a
   fresh consumer group, Redis prefix and Iceberg namespace, taking turns
   (before, now, before, now, ...);
4. prints each run, the median events/s of each side, and now / before.

Both sides use the same job runtime and decoder jar (the one ``make jar``
installed), so the difference is the job's Python and SQL: the closed-boundary
filter, the start-time reads of the stores, and a bounded run that ends once a
checkpoint has committed the end offsets and then takes a savepoint, where the
job before ended when the source did. Start-up is included on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events

ROOT = jobctl.PROJECT_ROOT


def export_tree(commit: str, into: Path) -> Path:
    """The commit's files, as ``git archive`` gives them, under into/<commit>."""
    tree = into / commit
    if not tree.exists():
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def run_job(tree: Path, topic: str, workdir: Path, label: str) -> float:
    """Seconds one bounded run of the tree's job takes over the topic, from a fresh start."""
    run_id = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env |= {
        "PYTHONPATH": str(tree),
        "PARITY_REDIS_KEY_PREFIX": f"cbench{run_id}",
        "PARITY_ICEBERG_NAMESPACE": f"cbench{run_id}",
        # One catalog for both sides: the same database, on the same disk.
        "PARITY_ICEBERG_CATALOG_URI": f"sqlite:///{(ROOT / '.parity' / 'iceberg' / 'catalog.db').resolve()}",
        "PARITY_ICEBERG_WAREHOUSE": f"file://{(ROOT / '.parity' / 'iceberg' / 'warehouse').resolve()}",
        "PARITY_FLINK_CHECKPOINT_DIR": str(workdir / run_id / "checkpoints"),
    }
    cmd = [str(jobctl.job_python()), "-m", "jobs.stream", "--view", "user_stats", "--bounded"]
    cmd += ["--topic", topic, "--group-id", f"cbench-{run_id}"]
    log = workdir / f"{label}-{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("wb") as out:
        code = subprocess.call(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"the {label} job failed with {code}; see {log}")
    return time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="10a7ea9", help="the commit to compare with (default 10a7ea9)")
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=3, help="runs per side, alternating (at least 3)")
    args = p.parse_args()
    if args.runs < 3:
        p.error("--runs must be at least 3: the figure is a median")

    workdir = ROOT / ".parity" / "bench" / f"continuity-{uuid.uuid4().hex[:8]}"
    sides = {"before": export_tree(args.before, ROOT / ".parity" / "bench" / "trees"), "now": ROOT}
    topic = f"bench-continuity-{uuid.uuid4().hex[:8]}"
    print(f"producing {args.events:,} events to {topic} ...", file=sys.stderr)
    events = generate(
        GeneratorConfig(
            users=args.users,
            events=args.events,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            span=timedelta(days=args.days),
            seed=1,
        )
    )
    summary = produce_events(events, topic, KafkaConfig(), RegistryConfig())
    if summary.failed:
        sys.exit(f"producer failed: {summary.errors}")
    del events

    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for turn in range(args.runs):
        for name, tree in sides.items():
            elapsed = run_job(tree, topic, workdir, name)
            seconds[name].append(elapsed)
            print(
                f"run {turn + 1} {name:6} {elapsed:6.1f} s  {args.events / elapsed:8,.0f} events/s",
                file=sys.stderr,
            )
    median = {name: args.events / statistics.median(runs) for name, runs in seconds.items()}
    result = {
        "events": args.events,
        "before": args.before,
        "runs_s": {name: [round(s, 1) for s in runs] for name, runs in seconds.items()},
        "median_events_per_s": {name: round(rate) for name, rate in median.items()},
        "ratio_now_to_before": round(median["now"] / median["before"], 3),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
