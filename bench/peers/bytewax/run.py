"""Runs the Bytewax peer to the end of a topic: one process per core, one worker each.

    .parity/bench/peers/bytewax-venv/bin/python bench/peers/bytewax/run.py --topic T --run R

The processes form one Bytewax cluster (``bytewax.run -i <k> -a <addresses>``); each
reads its share of the partitions and the fold is exchanged by user across them.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))

from peer_common import launch_workers, launcher_args


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def main() -> int:
    cfg, processes = launcher_args("bytewax", __doc__)
    addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(processes))
    argv = [
        ["-m", "bytewax.run", "tiles_flow:build()", "-i", str(k), "-a", addresses] for k in range(processes)
    ]
    return launch_workers(cfg, argv, {"PYTHONPATH": str(Path(__file__).resolve().parent)})


if __name__ == "__main__":
    sys.exit(main())
