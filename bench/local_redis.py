"""A throwaway redis-server for the benchmarks that bring their own Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(
    port: int | None = None, timeout_s: float = 10.0, replica_of: tuple[str, int] | None = None
) -> Iterator[int]:
    """Yield the port of a Redis to use.

    With ``port``, that Redis is someone else's: it is yielded as it is. Without it:
    1. redis-server starts on a free port of 127.0.0.1, in a temporary directory, with
       nothing saved to disk;
    2. the port is yielded once it accepts connections (RuntimeError if not in ``timeout_s``);
    3. on exit the server is stopped and the directory removed.

    With ``replica_of`` (host, port) it is that Redis's replica, yielded once its first
    sync is done.
    """
    if port is not None:
        yield port
        return
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + (["--replicaof", replica_of[0], str(replica_of[1])] if replica_of else []),
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_until_listening(proc, port, timeout_s)
            if replica_of:
                _wait_until_synced(port, timeout_s)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not accept connections on port {port} (exit code {proc.poll()})")


def _wait_until_synced(port: int, timeout_s: float) -> None:
    client = Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if client.info("replication").get("master_link_status") == "up":
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError(f"the replica on port {port} did not finish its first sync in {timeout_s:.0f} s")
