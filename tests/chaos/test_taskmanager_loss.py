"""One of two TaskManagers SIGKILLed under a job that needs every slot of both.

The stack's TaskManager and one started here give the job its four slots
(parallelism 4, one Kafka partition per source subtask). The added one dies
mid-stream with its Python workers; with two slots left the job cannot
run at parallelism 4, so a replacement TaskManager joins and Flink restarts
the job from its last checkpoint. Afterwards both stores equal the
reference over every event, and the raw archive holds each Kafka position
once. The TaskManagers started here are stopped, and the job cancelled, even
when the scenario fails; the stack's own TaskManager is never touched.
"""

from __future__ import annotations

import re
import urllib.error
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from parity import jobctl
from parity.config import KafkaConfig
from stack import flink
from stack.config import StackConfig
from tests.chaos.test_continuity import START, _events, _send
from tests.chaos.test_process_kills import (
    _assert_archived_once,
    _checkpoints,
    _job,
    _offline_completeness,
    _records,
    _rest,
    _restarts,
)
from tests.chaos.test_redis_outage import _completeness
from tests.integration import reference
from tests.integration.conftest import Isolated, wait_for
from tests.integration.test_pipeline import _check_stores

pytestmark = pytest.mark.integration

PARALLELISM = 4
# Modest: the machine has two cores and also runs Kafka, the registry and the stack's TaskManager.
EXTRA_TASKMANAGER_MEMORY = "1536m"


class _Cluster:
    """TaskManagers added to the stack's cluster and jobs submitted to it, by this test only."""

    def __init__(self) -> None:
        self.cfg = StackConfig()
        self.taskmanagers: list[int] = []
        self.jobs: list[str] = []

    def add_taskmanager(self) -> int:
        pid = flink.start_taskmanager(self.cfg, process_size=EXTRA_TASKMANAGER_MEMORY)
        self.taskmanagers.append(pid)
        return pid

    def free_slots(self) -> int:
        return int(str(flink.overview(self.cfg)["slots-available"]))

    def running_on(self, job_id: str) -> set[str]:
        """Ids of the TaskManagers that run some subtask of the job."""
        found: set[str] = set()
        for vertex in _job(self.cfg, job_id)["vertices"]:
            info = _rest(self.cfg, f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            found |= {tm["taskmanager-id"] for tm in info["taskmanagers"] if tm["status"] == "RUNNING"}
        return found

    def all_running(self, job_id: str) -> bool:
        job = _job(self.cfg, job_id)
        tasks = job["status-counts"]
        return job["state"] == "RUNNING" and tasks.get("RUNNING", 0) == sum(tasks.values())

    def close(self) -> None:
        """Cancel the jobs, then stop the TaskManagers (a TaskManager stopped first would restart them)."""
        while self.jobs:
            jobctl.flink_cli(["cancel", self.jobs.pop()])
        while self.taskmanagers:
            flink.stop_taskmanager(self.cfg, self.taskmanagers.pop())


@pytest.fixture
def cluster() -> Iterator[_Cluster]:
    added = _Cluster()
    try:
        yield added
    finally:
        added.close()


def _create_topic(name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def _submit(iso: Isolated, capfd: pytest.CaptureFixture[str]) -> str:
    assert (
        jobctl.submit("user_stats", parallelism=PARALLELISM, topic=iso.topic, group_id=f"it-{iso.suffix}")
        == 0
    )
    submitted = re.search(r"JobID ([0-9a-f]{32})", capfd.readouterr().out)
    assert submitted, "flink run printed no job id"
    return submitted.group(1)


def _restarts_or_zero(cfg: StackConfig, job_id: str) -> int:
    try:
        return _restarts(cfg, job_id)
    except (OSError, urllib.error.URLError, ValueError):
        return 0


def test_a_lost_taskmanager_is_replaced_and_the_job_resumes_at_full_parallelism(
    isolated, cluster, monkeypatch, capfd
):
    for key, value in isolated.env().items():
        monkeypatch.setenv(key, value)
    cfg = cluster.cfg
    _create_topic(isolated.topic, PARALLELISM)
    events = _events(29, START, 30, 4000)
    half = len(events) // 2
    _send(events[:half], isolated.topic)

    # Slots other jobs on the shared cluster hold are not ours: add TaskManagers until four are free.
    cluster.add_taskmanager()
    while cluster.free_slots() < PARALLELISM:
        cluster.add_taskmanager()
    job_id = _submit(isolated, capfd)
    cluster.jobs.append(job_id)

    wait_for(lambda: cluster.all_running(job_id), timeout=180, what="every subtask of the job to run")
    wait_for(lambda: _completeness(isolated), timeout=180, what="the job's first tiles in Redis")
    wait_for(lambda: _checkpoints(cfg, job_id) > 0, timeout=120, what="a completed checkpoint")
    used = cluster.running_on(job_id)
    victims = [pid for pid in cluster.taskmanagers if flink.taskmanager_id(pid) in used]
    assert victims, f"no added TaskManager runs a subtask; the job runs on {sorted(used)}"
    victim = victims[0]
    victim_id = flink.taskmanager_id(victim)

    flink.kill_taskmanager(cfg, victim)
    cluster.add_taskmanager()  # the replacement: two slots are left, the job needs four
    _send(events[half:], isolated.topic)
    closers = isolated.close_tiles(max(e["event_time"] for e in events))

    wait_for(lambda: _restarts_or_zero(cfg, job_id) >= 1, timeout=120, what="the job's restart")
    wait_for(lambda: cluster.all_running(job_id), timeout=180, what="the job to run again at parallelism 4")
    assert victim_id not in cluster.running_on(job_id)
    # The closing events move the watermark past the end of the events' last tile.
    target = max(reference.ms(e["event_time"]) for e in events) // reference.HOUR_MS * reference.HOUR_MS
    target += reference.HOUR_MS
    for store, completeness in (("Redis", _completeness), ("Iceberg", _offline_completeness)):
        wait_for(
            lambda completeness=completeness: (completeness(isolated) or 0) >= target,
            timeout=240,
            what=f"{store}'s completeness to reach the end of the last tile",
        )
    assert _job(cfg, job_id)["state"] == "RUNNING"
    assert _restarts(cfg, job_id) >= 1

    capfd.readouterr()
    cluster.close()
    # Every tile of the events is closed: each store holds all of them, as the reference has them.
    _check_stores(isolated, events, closers)
    _assert_archived_once(isolated, _records(isolated.topic))
