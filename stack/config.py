"""Settings of the local stack, read from PARITY_STACK_* variables.

Every service binds 127.0.0.1 only. Relative paths are taken from the
current directory (the repository root when run through make).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Redis Cluster's bus port is the client port plus this (Redis's default, cluster-port 0).
BUS_OFFSET = 10000


class StackConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARITY_STACK_", extra="forbid", frozen=True)

    home: Path = Path(".parity")  # state, generated configs, logs, pid files
    cache: Path = Path(".cache")  # downloaded jars and tarballs
    job_venv: Path = Path(".venv-job")  # the venv holding apache-flink

    host: str = "127.0.0.1"
    kafka_port: int = Field(default=19092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=19093, ge=1, le=65535)
    registry_port: int = Field(default=18081, ge=1, le=65535)
    registry_management_port: int = Field(default=18091, ge=1, le=65535)
    redis_port: int = Field(default=16379, ge=1, le=65535)
    # The optional redis-cluster service's nodes; each also listens on port + 10000 (the
    # cluster bus that nodes gossip over). Three masters, each with redis_cluster_replicas
    # replicas: 3 * (1 + replicas) ports.
    redis_cluster_ports: tuple[int, ...] = (17001, 17002, 17003)
    redis_cluster_replicas: int = Field(default=0, ge=0, le=2)
    # How long a master may be silent before the others mark it failed and a replica takes
    # over (Redis's cluster-node-timeout).
    redis_cluster_node_timeout_ms: int = Field(default=5000, ge=100)
    flink_rest_port: int = Field(default=18088, ge=1, le=65535)
    flink_rpc_port: int = Field(default=16123, ge=1, le=65535)
    # TaskManagers `up` starts, each with the cluster's taskmanager.numberOfTaskSlots slots.
    flink_taskmanagers: int = Field(default=1, ge=1, le=16)
    # Flink's Prometheus reporter: one port per JobManager / TaskManager, from this range.
    flink_metrics_ports: tuple[int, int] = (19250, 19253)
    # Where jobs in a local mini-cluster (`parity job run`) export their metrics:
    # Prometheus scrapes this range; PARITY_FLINK_METRICS_PORTS sets the job's side.
    job_metrics_ports: tuple[int, int] = (19254, 19257)
    prometheus_port: int = Field(default=19090, ge=1, le=65535)
    # Where `parity serve` listens by default; Prometheus scrapes it.
    serving_port: int = Field(default=8000, ge=1, le=65535)

    kafka_heap: str = "512m"
    registry_heap: str = "512m"
    # Extra Flink settings (flat keys) appended to the generated config.yaml,
    # e.g. a metrics reporter: PARITY_STACK_FLINK_EXTRA_CONF='{"metrics.reporter.prom.port": "19250"}'
    flink_extra_conf: dict[str, str] = Field(default_factory=dict)

    # Seconds to wait for a started service to answer.
    start_timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _metrics_ports_fit_the_cluster(self) -> StackConfig:
        # A daemon that finds no free port in the range runs without metrics, unscraped.
        first, last = self.flink_metrics_ports
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"flink_metrics_ports {first}-{last} is not a port range; give (first, last)")
        if last - first < self.flink_taskmanagers:
            raise ValueError(
                f"flink_metrics_ports {first}-{last} has {last - first + 1} port(s) for the JobManager and "
                f"{self.flink_taskmanagers} TaskManager(s); widen PARITY_STACK_FLINK_METRICS_PORTS "
                "(and move PARITY_STACK_JOB_METRICS_PORTS past it)"
            )
        return self

    @model_validator(mode="after")
    def _redis_cluster_ports_have_room_for_the_bus(self) -> StackConfig:
        ports, nodes = self.redis_cluster_ports, 3 * (1 + self.redis_cluster_replicas)
        if (
            len(ports) != nodes
            or len(set(ports)) != len(ports)
            or not all(1 <= p <= 65535 - BUS_OFFSET for p in ports)
        ):
            raise ValueError(
                f"redis_cluster_ports {ports} must be {nodes} different ports (3 masters, "
                f"{self.redis_cluster_replicas} replica(s) each) of at most {65535 - BUS_OFFSET} "
                f"(each node's cluster bus listens {BUS_OFFSET} higher); "
                "fix PARITY_STACK_REDIS_CLUSTER_PORTS or PARITY_STACK_REDIS_CLUSTER_REPLICAS"
            )
        return self

    # Absolute, without resolving symlinks: a venv's python is a symlink and
    # must stay inside the venv.
    @property
    def home_dir(self) -> Path:
        return self.home.absolute()

    @property
    def cache_dir(self) -> Path:
        return self.cache.absolute()

    @property
    def job_venv_dir(self) -> Path:
        return self.job_venv.absolute()

    @property
    def logs_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home_dir / "run"

    def service_dir(self, name: str) -> Path:
        return self.home_dir / name
