"""Runs the Quix Streams peer to the end of a topic: one consumer process per core, one group.

    .parity/bench/peers/quix-venv/bin/python bench/peers/quix/run.py --topic T --run R

Each process holds its share of the topic's partitions and stops once they are read to
their end offsets at start. The processes' RocksDB state is deleted at the end, and so
are the changelog topics Quix created for the run's consumer group.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))

from confluent_kafka.admin import AdminClient
from peer_common import PeerConfig, launch_workers, launcher_args


def _delete_changelogs(cfg: PeerConfig) -> None:
    admin = AdminClient({"bootstrap.servers": cfg.bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if cfg.group_id in t]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()


def main() -> int:
    cfg, processes = launcher_args("quix", __doc__)
    here = Path(__file__).resolve().parent
    code = 0
    try:
        code = launch_workers(
            cfg,
            [[str(here / "tiles_app.py")] for _ in range(processes)],
            {"PYTHONPATH": str(here)},
            per_worker_env=[{"PEER_WORKER": str(k)} for k in range(processes)],
        )
    finally:
        shutil.rmtree(Path(cfg.workdir) / f"quix-{cfg.run}", ignore_errors=True)
        _delete_changelogs(cfg)
    return code


if __name__ == "__main__":
    sys.exit(main())
