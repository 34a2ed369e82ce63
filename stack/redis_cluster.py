"""A three-master Redis Cluster from Debian's redis-server (optional service).

Not started by a plain `python -m stack up`; `--only redis-cluster` starts it.
A single Redis never answers MOVED or CROSSSLOT, so cluster-aware clients and
the hash-tagged key layout can only be checked against a real cluster; clients
find it through ``seeds`` (PARITY_REDIS_CLUSTER_NODES).

Each node is a redis-server in the foreground with its own folder under
``.parity/redis-cluster/<port>``, config, pid file and log file. The first
start joins the empty nodes with ``redis-cli --cluster create``. By default
without replicas: a developer machine needs the slots spread, not failover.
PARITY_STACK_REDIS_CLUSTER_REPLICAS=1 (and six ports) gives each master a
replica that takes over when it dies, as in production. Each node keeps
what it knows of the cluster in the ``nodes.conf`` of its folder, so a restart
rejoins the same cluster without creating it again. Like the single Redis:
no persistence (the online store is rebuilt from Kafka) and never evicting (a
full node refuses writes instead of dropping tiles).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.config import BUS_OFFSET, StackConfig
from stack.status import Info

NAME = "redis-cluster"
MARKER = "redis-server"
SLOTS = 16384
PORTS_VARIABLE = "PARITY_STACK_REDIS_CLUSTER_PORTS"
# `python -m stack fetch` installs Debian's redis-server, which brings redis-cli (redis-tools) along.
PACKAGES = {"redis-server": "redis-server", "redis-cli": "redis-tools"}


def addresses(cfg: StackConfig) -> list[str]:
    return [f"{cfg.host}:{port}" for port in cfg.redis_cluster_ports]


def seeds(cfg: StackConfig) -> str:
    """The nodes as clients take them (PARITY_REDIS_CLUSTER_NODES): host:port,host:port,host:port."""
    return ",".join(addresses(cfg))


def paths(cfg: StackConfig) -> dict[str, Path]:
    """The service's folder and log: the create command's output and what start decided."""
    return {"base": cfg.service_dir(NAME), "log": cfg.logs_dir / f"{NAME}.log"}


def node_paths(cfg: StackConfig, port: int) -> dict[str, Path]:
    base = cfg.service_dir(NAME) / str(port)
    return {
        "base": base,
        "conf": base / "redis.conf",
        "nodes": base / "nodes.conf",
        "log": cfg.logs_dir / f"{NAME}-{port}.log",
        "pid": cfg.run_dir / f"{NAME}-{port}.pid",
    }


def config_text(cfg: StackConfig, port: int, data_dir: Path) -> str:
    return (
        f"bind {cfg.host}\n"
        f"port {port}\n"
        "protected-mode yes\n"
        "daemonize no\n"  # the stack owns the process and its pid file
        'logfile ""\n'  # stdout, which the stack sends to the node's log file
        f"dir {data_dir}\n"
        "cluster-enabled yes\n"
        # Relative to dir: each node writes its own. It is the node's cluster membership, kept
        # across restarts; deleting it makes the node forget the cluster.
        "cluster-config-file nodes.conf\n"
        f"cluster-node-timeout {cfg.redis_cluster_node_timeout_ms}\n"
        'save ""\n'
        "appendonly no\n"
        "maxmemory 0\n"  # no limit on a developer machine
        # Explicit, so that a maxmemory set later (CONFIG SET) refuses writes rather than evicting tiles.
        "maxmemory-policy noeviction\n"
    )


def command(host: str, port: int, *args: str, timeout_s: float = 1.0) -> str:
    """One command over a fresh connection; its reply when a simple or bulk string.

    Raises:
        OSError: the node does not answer, or not in full.
        StackError: it answers with an error (e.g. a Redis without cluster support).
    """
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(request.encode())
        with sock.makefile("rb") as reply:
            head = reply.readline().decode("utf-8", "replace").rstrip("\r\n")
            if head.startswith("-"):
                raise StackError(f"{NAME}: {host}:{port} answered {args[0]} with: {head[1:]}")
            if head.startswith("+"):
                return head[1:]
            if head.startswith("$") and head[1:].isdigit():
                size = int(head[1:])
                body = reply.read(size + 2)  # and the closing CRLF
                if len(body) == size + 2:
                    return body[:size].decode("utf-8", "replace")
    raise ConnectionError(f"{host}:{port} sent no complete reply to {args[0]} (it began {head[:40]!r})")


def parse_info(text: str) -> dict[str, str]:
    """CLUSTER INFO's field:value lines as a dict."""
    fields = (line.partition(":") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in fields if sep}


def cluster_info(host: str, port: int) -> dict[str, str]:
    return parse_info(command(host, port, "CLUSTER", "INFO"))


def _count(info: Mapping[str, str], field: str) -> int:
    value = info.get(field, "")
    return int(value) if value.isdigit() else -1


def serving(info: Mapping[str, str], nodes: int) -> bool:
    """The node sees a healthy cluster of all the nodes, every slot served."""
    return (
        info.get("cluster_state") == "ok"
        and _count(info, "cluster_slots_assigned") == SLOTS
        and _count(info, "cluster_known_nodes") == nodes
    )


def needs_create(infos: Mapping[str, Mapping[str, str]], folder: Path) -> bool:
    """Whether the nodes (CLUSTER INFO by address) are to be joined with `--cluster create`.

    True when every node is empty: a first start. False when every node knows
    all the others and all the slots: a cluster that is up, or a restart from
    kept nodes.conf files. Right after a restart a master reports
    cluster_state:fail for a moment (Redis waits before serving again), so the
    state alone cannot tell a restart from a first start. folder (where the
    nodes' folders are) is named in the error.

    Raises:
        StackError: anything in between, e.g. a node that lost its nodes.conf; creating
            again would fail on the nodes that remember the old cluster.
    """
    nodes = len(infos)

    def empty(info: Mapping[str, str]) -> bool:
        return _count(info, "cluster_known_nodes") == 1 and _count(info, "cluster_slots_assigned") == 0

    def joined(info: Mapping[str, str]) -> bool:
        return (
            _count(info, "cluster_known_nodes") == nodes and _count(info, "cluster_slots_assigned") == SLOTS
        )

    if all(empty(i) for i in infos.values()):
        return True
    if all(joined(i) for i in infos.values()):
        return False
    found = "; ".join(
        f"{address}: {i.get('cluster_known_nodes', '?')} known node(s), "
        f"{i.get('cluster_slots_assigned', '?')} slots assigned"
        for address, i in infos.items()
    )
    raise StackError(
        f"{NAME}: the nodes disagree about the cluster ({found}); a node lost its nodes.conf "
        "or the ports changed. Start afresh (the cluster keeps no data): "
        f"`python -m stack down --only {NAME}`, delete {folder}, "
        f"then `python -m stack up --only {NAME}`"
    )


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StackError(
            f"{NAME}: {name} not found; run `python -m stack fetch` (installs it with apt), "
            f"or apt-get install -y {PACKAGES[name]}"
        )
    return found


def _log(cfg: StackConfig, text: str) -> None:
    log = paths(cfg)["log"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def node_pids(cfg: StackConfig) -> dict[int, int | None]:
    """Each node's pid by port, None for a node that is not running."""
    return {port: process.read_pid(node_paths(cfg, port)["pid"], MARKER) for port in cfg.redis_cluster_ports}


def _spawn_node(cfg: StackConfig, server: str, port: int) -> subprocess.Popen[bytes]:
    p = node_paths(cfg, port)
    p["base"].mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(config_text(cfg, port, p["base"]))
    return process.spawn([server, str(p["conf"])], log_file=p["log"], pid_file=p["pid"], cwd=p["base"])


def _create(cfg: StackConfig, cli: str) -> None:
    argv = [
        cli,
        "--cluster",
        "create",
        *addresses(cfg),
        "--cluster-replicas",
        str(cfg.redis_cluster_replicas),
        "--cluster-yes",
    ]
    _log(cfg, f"creating the cluster: {' '.join(argv)}")
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            # redis-cli colours its report whenever TERM names an xterm, even into a pipe.
            env={**os.environ, "TERM": "dumb"},
            timeout=cfg.start_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"{NAME}: `redis-cli --cluster create` did not finish within {cfg.start_timeout_s:.0f} s; "
            f"read the nodes' logs in {cfg.logs_dir}"
        ) from exc
    _log(cfg, f"redis-cli exited with code {result.returncode}:\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise process.start_failure(NAME, paths(cfg)["log"], "`redis-cli --cluster create` failed")


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    # Nodes still running from a half-finished start are kept; the others need their ports.
    idle = [port for port, pid in node_pids(cfg).items() if pid is None]
    for port in idle:
        process.check_ports_free(f"{NAME} node {port}", {PORTS_VARIABLE: port}, cfg.host)
        process.check_ports_free(
            f"{NAME} node {port}'s cluster bus", {PORTS_VARIABLE: port + BUS_OFFSET}, cfg.host
        )
    # Both before any node starts: the nodes cannot form a cluster without redis-cli.
    server, cli = binary("redis-server"), binary("redis-cli")
    procs = {port: _spawn_node(cfg, server, port) for port in idle}
    for port in cfg.redis_cluster_ports:
        process.wait_until(
            functools.partial(_pings, cfg.host, port),
            service=f"{NAME} node {port}",
            log_file=node_paths(cfg, port)["log"],
            timeout_s=cfg.start_timeout_s,
            proc=procs.get(port),
            interval_s=0.1,
        )
    infos = {f"{cfg.host}:{port}": cluster_info(cfg.host, port) for port in cfg.redis_cluster_ports}
    if needs_create(infos, paths(cfg)["base"]):
        _create(cfg, cli)
    else:
        _log(cfg, "the nodes remember their cluster (nodes.conf); waiting for cluster_state:ok")
    process.wait_until(
        lambda: is_up(cfg),
        service=NAME,
        log_file=paths(cfg)["log"],
        timeout_s=cfg.start_timeout_s,
        running=lambda: all(node_pids(cfg).values()),
        interval_s=0.2,
    )


def stop(cfg: StackConfig) -> None:
    for port in cfg.redis_cluster_ports:
        process.stop_by_pid_file(node_paths(cfg, port)["pid"], MARKER)


def _pings(host: str, port: int) -> bool:
    try:
        return command(host, port, "PING") == "PONG"
    except (OSError, StackError):
        return False


def is_up(cfg: StackConfig) -> bool:
    """Every node answers and sees the whole cluster serving all slots, and every replica is in sync.

    A replica that has not finished its first sync with its master cannot take
    over from it, so until then the cluster is not up as configured.
    """
    nodes = len(cfg.redis_cluster_ports)
    try:
        if not all(serving(cluster_info(cfg.host, port), nodes) for port in cfg.redis_cluster_ports):
            return False
        roles = [
            parse_info(command(cfg.host, port, "INFO", "replication")) for port in cfg.redis_cluster_ports
        ]
    except (OSError, StackError):
        return False
    return replicas_in_sync(roles, 3 * cfg.redis_cluster_replicas)


def replicas_in_sync(roles: Sequence[Mapping[str, str]], replicas: int) -> bool:
    """The nodes' INFO replication show ``replicas`` replicas, each linked to its master."""
    linked = [r for r in roles if r.get("role") == "slave" and r.get("master_link_status") == "up"]
    return len(linked) == replicas and sum(r.get("role") == "slave" for r in roles) == replicas


def info(cfg: StackConfig) -> Info:
    # One pid for the status line: the first node's.
    first = node_paths(cfg, cfg.redis_cluster_ports[0])
    return Info(NAME, seeds(cfg), process.read_pid(first["pid"], MARKER), paths(cfg)["log"], is_up(cfg))
