"""Integration fixtures.

Every test gets its own topic, Redis key prefix, Iceberg namespace and checkpoints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.offsets import TopicOffsets
from parity import jobctl
from parity.config import IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig
from producer.produce import produce_events
from stack.config import StackConfig

pytestmark = pytest.mark.integration


def closing_event(after: datetime, event_id: str, user_id: str) -> dict:
    """An impression three days after ``after``: it moves the watermark past every tile before it."""
    return {
        "event_id": event_id,
        "user_id": user_id,
        "ad_id": CLOSER,
        "event_type": "impression",
        "event_time": after + timedelta(days=3),
        "campaign_id": "closer",
        "country": "ZZ",
        "cost": 0.0,
        "device": None,
    }


def assert_served_as_reference(windows, users: list[str], served: list[dict], end_ms: int) -> int:
    """Every served value at the tile boundary ``end_ms`` equals the reference's (``missing`` where it
    has none); returns how many were present."""
    from serving.assembly import Status

    present = 0
    for user, values in zip(users, served, strict=True):
        for name, want in windows.expected(user, end_ms).items():
            got = values[f"user_stats:{name}"]
            if want is None:
                assert got.status is Status.MISSING, (user, name, got)
            else:
                assert (got.value, got.status) == (want, Status.PRESENT), (user, name, got)
                present += 1
    return present


# The entity of the event that closes a test's tiles (Isolated.close_tiles).
CLOSER = "zz-closer"


def _reachable(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    redis_cfg = RedisConfig()
    registry = RegistryConfig().url.split("/")[2]
    for name, address in (
        ("Kafka", KafkaConfig().bootstrap_servers.split(",")[0]),
        ("schema registry", registry),
        ("Redis", f"{redis_cfg.host}:{redis_cfg.port}"),
    ):
        if not _reachable(address):
            pytest.fail(
                f"{name} is not answering at {address}: start the stack with `make up`", pytrace=False
            )


@dataclass
class Isolated:
    """Names and settings private to one test."""

    suffix: str
    workdir: Path
    jobs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Most tests' events are from months ago, a backlog by the wall clock, and they check
    # the live tiles of its open hours: their jobs keep live totals for a backlog too.
    # Tests of the default (a backlog written closed only) turn it off.
    live_backlog: bool = True

    @property
    def topic(self) -> str:
        return f"it-{self.suffix}"

    @property
    def redis(self) -> RedisConfig:
        return RedisConfig(key_prefix=f"it{self.suffix}")

    @property
    def iceberg(self) -> IcebergConfig:
        return IcebergConfig(namespace=f"it{self.suffix}")

    @property
    def checkpoints(self) -> Path:
        return self.workdir / "checkpoints"

    def env(self) -> dict[str, str]:
        return {
            "PARITY_REDIS_KEY_PREFIX": self.redis.key_prefix,
            "PARITY_ICEBERG_NAMESPACE": self.iceberg.namespace,
            "PARITY_FLINK_CHECKPOINT_DIR": str(self.checkpoints),
            "PARITY_FLINK_CHECKPOINT_INTERVAL_S": "2",
            "PARITY_FLINK_LIVE_BACKLOG": "true" if self.live_backlog else "false",
        }

    def start_job(
        self,
        view: str,
        *,
        bounded: bool,
        drain: bool = False,
        from_checkpoint: Path | None = None,
        without_state: bool = False,
    ):
        cmd = jobctl.stream_command(
            view,
            bounded=bounded,
            drain=drain,
            from_checkpoint=from_checkpoint,
            without_state=without_state,
            group_id=f"it-{self.suffix}-{view}",
            topic=self.topic,
        )
        proc = jobctl.start_local(cmd, self.log, env=self.env())
        self.jobs.append(proc)
        return proc

    @property
    def log(self) -> Path:
        return self.workdir / "job.log"

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
            pytest.fail(f"job did not finish in {timeout}s; log tail:\n{self.log_tail()}")
        if code != 0:
            pytest.fail(f"job exited {code}; log tail:\n{self.log_tail()}")

    def close_tiles(self, after: datetime) -> list[dict]:
        """Produce events of closing entities three days after ``after``, in every partition.

        No stop closes an open tile, so a test that wants every tile of its
        events closed moves the watermark past them, as later events would.
        The watermark is the least of the partitions', hence one event in
        each. The closing events' own tiles stay open. Returns the events.
        """
        events = [closing_event(after, f"closer-{self.suffix}-{i}", f"{CLOSER}-{i}") for i in range(8)]
        offsets = TopicOffsets(KafkaConfig(), self.topic, f"it-{self.suffix}-closer")
        try:
            before = offsets.ends()
            summary = produce_events(events, self.topic, KafkaConfig(), RegistryConfig())
            assert (summary.sent, summary.failed) == (len(events), 0)
            after_ends = offsets.ends()
        finally:
            offsets.close()
        assert all(after_ends[p] > before[p] for p in before), "a partition got no closing event"
        return events

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the job and its Python workers (its whole process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def wait_for(condition, timeout: float, what: str, interval: float = 0.5, detail=None):
    """``condition()``'s first truthy value; fails after ``timeout``, adding ``detail()`` if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f":\n{detail()}" if detail else ""))


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Isolated]:
    iso = Isolated(uuid.uuid4().hex[:10], tmp_path)
    yield iso
    for proc in iso.jobs:
        kill(proc)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """``python -m serving serve`` on a free port, for a ``with`` block that gets its base URL.

    1. On entry the server starts with ``env`` over this process's environment, its output
       in ``log``.
    2. It is up once /healthz answers with a status in ``healthy``; if it exits first or is
       not up in 30 s, it is stopped and the test fails (with the log when it exited).
    3. On exit it gets SIGTERM and is waited for.
    """

    def __init__(self, env: dict[str, str], log: Path, healthy: tuple[int, ...] = (200,)) -> None:
        self.env = env
        self.log = log
        self.healthy = healthy
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        import sys

        import httpx

        port = free_port()
        with self.log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "serving", "serve", "--port", str(port)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.proc = proc
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=0.5).status_code in self.healthy
            except httpx.HTTPError:
                return proc.poll() is not None

        try:
            wait_for(up, timeout=30, what="the HTTP server", interval=0.2)
            assert proc.poll() is None, self.log.read_text()
        except BaseException:
            self.__exit__()
            raise
        return base

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None


def local_job_metric(name: str, job_id: str | None = None) -> float | None:
    """The sum of one metric (of one job, if given) over the local job reporters' ports; None if
    no reporter has it."""
    first, last = StackConfig().job_metrics_ports
    values: list[float] = []
    for port in range(first, last + 1):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        values += [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and (job_id is None or f'job_id="{job_id}"' in line)
        ]
    return sum(values) if values else None
