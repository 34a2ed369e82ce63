"""Redis from Debian's redis-server, in the foreground with a generated config.

No persistence: the online store is rebuilt from Kafka by the jobs.

Never evicting: a Redis that evicts keys under memory pressure would drop
tiles without an error anywhere, and online reads would quietly disagree with
Iceberg. With ``noeviction`` a full Redis refuses writes, so the job's sink
fails instead.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.config import StackConfig
from stack.status import Info

NAME = "redis"
MARKER = "redis-server"


def config_text(cfg: StackConfig, data_dir: Path) -> str:
    return (
        f"bind {cfg.host}\n"
        f"port {cfg.redis_port}\n"
        "protected-mode yes\n"
        "daemonize no\n"  # the stack owns the process and its pid file
        'logfile ""\n'  # stdout, which the stack sends to the log file
        f"dir {data_dir}\n"
        'save ""\n'
        "appendonly no\n"
        "maxmemory 0\n"  # no limit on a developer machine
        # Explicit, so that a maxmemory set later (CONFIG SET) refuses writes rather than evicting tiles.
        "maxmemory-policy noeviction\n"
    )


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "conf": base / "redis.conf",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    process.check_ports_free(NAME, {"PARITY_STACK_REDIS_PORT": cfg.redis_port}, cfg.host)
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis: redis-server not found; run `python -m stack fetch` (installs it with apt)")
    p = paths(cfg)
    p["base"].mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(config_text(cfg, p["base"]))
    proc = process.spawn([binary, str(p["conf"])], log_file=p["log"], pid_file=p["pid"])
    process.wait_until(
        lambda: is_up(cfg),
        service=NAME,
        log_file=p["log"],
        timeout_s=cfg.start_timeout_s,
        proc=proc,
        interval_s=0.1,
    )


def stop(cfg: StackConfig) -> None:
    process.stop_by_pid_file(paths(cfg)["pid"], MARKER)


def ping(host: str, port: int, timeout_s: float = 1.0) -> bool:
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def is_up(cfg: StackConfig) -> bool:
    try:
        return ping(cfg.host, cfg.redis_port)
    except OSError:
        return False


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    return Info(
        NAME, f"{cfg.host}:{cfg.redis_port}", process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg)
    )
