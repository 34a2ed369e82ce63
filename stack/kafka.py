"""Kafka 4.x, one node in KRaft combined mode (broker and controller in one JVM)."""

from __future__ import annotations

import base64
import socket
import struct
import uuid
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.artifacts import load
from stack.config import StackConfig
from stack.fetch import kafka_dir
from stack.status import Info

NAME = "kafka"
MARKER = "kafka.Kafka"

LOG4J2 = """\
# The broker writes to stdout; the stack redirects it to the service's log file.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def server_properties(cfg: StackConfig, data_dir: Path) -> str:
    h, port, ctl = cfg.host, cfg.kafka_port, cfg.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{h}:{ctl}",
        "listeners": f"PLAINTEXT://{h}:{port},CONTROLLER://{h}:{ctl}",
        "advertised.listeners": f"PLAINTEXT://{h}:{port},CONTROLLER://{h}:{ctl}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "2",
        "auto.create.topics.enable": "true",
        # One node: every internal topic must live with a single replica.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Records carry their event time as timestamp (so a replay can map a time range to
        # offsets), and retention is measured on it: with time-based retention, replayed or
        # historical events would be deleted minutes after they are written. The local stack
        # keeps everything; the raw archive in Iceberg is what outlives retention in production.
        "log.retention.ms": "-1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions: quicker first consumer group on 2 cores.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """Same shape as StorageTool random-uuid (url-safe base64 of 16 bytes), without a JVM start."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that look like options
            return text


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "data": base / "data",
        "props": base / "server.properties",
        "log4j": base / "log4j2.properties",
        "cluster_id": base / "cluster-id",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def write_config(cfg: StackConfig) -> dict[str, Path]:
    p = paths(cfg)
    p["data"].mkdir(parents=True, exist_ok=True)
    p["props"].write_text(server_properties(cfg, p["data"]))
    p["log4j"].write_text(LOG4J2)
    if not p["cluster_id"].is_file():
        p["cluster_id"].write_text(new_cluster_id() + "\n")
    return p


def _classpath(cfg: StackConfig) -> str:
    folder = kafka_dir(cfg, load())
    if not any(folder.glob("kafka_*.jar")):
        raise StackError(f"kafka: no broker jars in {folder}; run `python -m stack fetch`")
    return f"{folder}/*"


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    process.check_ports_free(
        NAME,
        {
            "PARITY_STACK_KAFKA_PORT": cfg.kafka_port,
            "PARITY_STACK_KAFKA_CONTROLLER_PORT": cfg.kafka_controller_port,
        },
        cfg.host,
    )
    java = process.java()
    p = write_config(cfg)
    jvm = [
        java,
        f"-Xmx{cfg.kafka_heap}",
        f"-Xms{cfg.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={p['log4j']}",
        "-cp",
        _classpath(cfg),
    ]
    if not (p["data"] / "meta.properties").is_file():
        cluster_id = p["cluster_id"].read_text().strip()
        fmt = process.spawn(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(p["props"]),
            ],
            log_file=p["log"],
            pid_file=p["base"] / "format.pid",
        )
        code = fmt.wait(timeout=120)
        (p["base"] / "format.pid").unlink(missing_ok=True)
        if code != 0:
            raise process.start_failure(NAME, p["log"], "formatting the storage failed")
    proc = process.spawn([*jvm, MARKER, str(p["props"])], log_file=p["log"], pid_file=p["pid"])
    process.wait_until(
        lambda: is_up(cfg), service=NAME, log_file=p["log"], timeout_s=cfg.start_timeout_s, proc=proc
    )


def stop(cfg: StackConfig) -> None:
    # A controlled shutdown hands over partitions and flushes logs; give it time.
    process.stop_by_pid_file(paths(cfg)["pid"], MARKER, timeout_s=30)


def _metadata_request() -> bytes:
    # Metadata v4 (Kafka 4 dropped v0-v3): all topics, no auto-creation.
    client = b"parity-stack"
    header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    body = struct.pack(">ib", -1, 0)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def broker_count(host: str, port: int, timeout_s: float = 2.0) -> int:
    """Brokers listed in a Metadata response: at least 1 once the broker serves requests."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(_metadata_request())
        (size,) = struct.unpack(">i", _recv(sock, 4))
        reply = _recv(sock, size)
    # correlation id (4), throttle time (4), then the brokers array length.
    (count,) = struct.unpack(">i", reply[8:12])
    return int(count)


def is_up(cfg: StackConfig) -> bool:
    try:
        return broker_count(cfg.host, cfg.kafka_port) >= 1
    except (OSError, struct.error):
        return False


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    return Info(
        NAME, f"{cfg.host}:{cfg.kafka_port}", process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg)
    )
