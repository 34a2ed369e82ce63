"""A stack process SIGKILLed under a running pipeline: the Kafka broker, a Flink TaskManager.

Both are shared by every test running against the stack, so each scenario
brings its process back before it ends, failed or not, and keeps the outage
short. Afterwards Kafka holds each produced event once, the raw archive each
(partition, offset) once, and both stores equal the reference over the events
in Kafka.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import fastavro
import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.config import ProducerConfig
from producer.produce import produce_events, resolve_schema
from sinks import iceberg
from stack import flink, kafka, process, registry
from stack.config import StackConfig
from tests.chaos.test_continuity import (
    LATENESS_MS,
    START,
    _check_stores,
    _events,
    _raw_positions,
    _send,
)
from tests.chaos.test_redis_outage import _completeness, _job_id
from tests.integration import reference
from tests.integration.conftest import Isolated, wait_for

pytestmark = pytest.mark.integration

# How long the broker stays dead: well inside the producer's 30 s delivery timeout.
BROKER_OUTAGE_S = 4


class _BrokerOutage:
    """SIGKILLs the broker once, from the producer's progress callback; a thread restarts it.

    ``restore`` waits for the restart (or runs it, when the kill never
    happened or the restart failed) and for the broker and the registry,
    whose schemas live in Kafka, to answer again.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cfg = StackConfig()
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self.restart_output = ""
        self._restarter: threading.Thread | None = None

    def kill(self, produced: int, total: int) -> None:
        if self.killed_at is not None:
            return
        pid = process.read_pid(kafka.paths(self.cfg)["pid"], kafka.MARKER)
        assert pid is not None, "no running broker in the stack's pid file"
        os.kill(pid, signal.SIGKILL)
        self.killed_at = time.monotonic()
        self._restarter = threading.Thread(target=self._restart_later, daemon=True)
        self._restarter.start()

    def _restart_later(self) -> None:
        time.sleep(self.seconds)
        self._restart()

    def _restart(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "stack", "up", "--only", "kafka"],
            cwd=jobctl.PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.restart_output += done.stdout + done.stderr
        if kafka.is_up(self.cfg):
            self.back_at = time.monotonic()

    def restore(self) -> None:
        if self._restarter is not None:
            self._restarter.join(timeout=200)
        if not kafka.is_up(self.cfg):
            self._restart()
        assert kafka.is_up(self.cfg), f"the broker did not come back:\n{self.restart_output}"
        wait_for(lambda: registry.is_up(self.cfg), timeout=60, what="the schema registry to answer")


def _register_probe(topic: str) -> int:
    """Registers the schema under a new subject: a registry write goes through its Kafka journal."""
    response = httpx.post(
        f"{RegistryConfig().url}/subjects/{topic}-probe-{uuid.uuid4().hex[:6]}-value/versions",
        json={"schema": resolve_schema().text},
        timeout=30,
    )
    response.raise_for_status()
    return int(response.json()["id"])


def _records(topic: str) -> list[tuple[int, int, str]]:
    """(partition, offset, event_id) of every record in the topic."""
    schema = fastavro.parse_schema(json.loads(resolve_schema().text))
    consumer = Consumer(
        {
            "bootstrap.servers": KafkaConfig().bootstrap_servers,
            "group.id": f"{topic}-read-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        total = sum(high - low for low, high in ends.values())
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + 60
        while len(found) < total and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            event = fastavro.schemaless_reader(io.BytesIO(msg.value()[5:]), schema)
            found.append((msg.partition(), msg.offset(), event["event_id"]))
        assert len(found) == total, f"read {len(found)} of the topic's {total} records"
        return found
    finally:
        consumer.close()


def _final_completeness(events: list[dict], records: list[tuple[int, int, str]]) -> int:
    """The completeness the job reaches over these records: the least partition's watermark, floored."""
    times = {e["event_id"]: reference.ms(e["event_time"]) for e in events}
    newest: dict[int, int] = {}
    for partition, _, event_id in records:
        newest[partition] = max(newest.get(partition, 0), times[event_id])
    watermark = min(newest.values()) - LATENESS_MS - 1
    return watermark - watermark % reference.HOUR_MS


def _offline_completeness(iso: Isolated) -> int | None:
    catalog = iceberg.open_catalog(iso.iceberg)
    identifier = f"{iso.iceberg.namespace}.{iceberg.progress_table(user_stats)}"
    if not catalog.table_exists(identifier):
        return None
    return iceberg.completeness_ms(catalog.load_table(identifier))


def _assert_archived_once(iso: Isolated, records: list[tuple[int, int, str]]) -> None:
    raw = _raw_positions(iso)
    assert len(raw) == len(set(raw)), "a (partition, offset) is archived twice"
    assert set(raw) == {(p, o) for p, o, _ in records}, f"the archive holds {len(raw)} of {len(records)}"


def test_a_broker_killed_mid_produce_loses_and_duplicates_nothing(isolated):
    events = _events(21, START, 30, 6000)
    first, rest = events[:2000], events[2000:]
    _send(first, isolated.topic)
    cmd = jobctl.stream_command(
        "user_stats",
        bounded=False,
        drain=True,
        group_id=f"it-{isolated.suffix}-user_stats",
        topic=isolated.topic,
    )
    job = jobctl.start_local(cmd, isolated.log, env=isolated.env())
    isolated.jobs.append(job)
    wait_for(lambda: _job_id(isolated), timeout=300, what="the job to start")
    wait_for(lambda: _completeness(isolated), timeout=300, what="the first completeness in Redis")

    # The broker dies after the producer queued its first thousand events and comes back
    # BROKER_OUTAGE_S later, while the producer waits for its delivery reports.
    outage = _BrokerOutage(BROKER_OUTAGE_S)
    tuning = ProducerConfig(progress_interval_s=0.001)
    try:
        summary = produce_events(
            rest, isolated.topic, KafkaConfig(), RegistryConfig(), tuning=tuning, on_progress=outage.kill
        )
    finally:
        outage.restore()
    assert outage.killed_at is not None, "the producer finished before the broker was killed"
    assert outage.back_at is not None and outage.back_at - outage.killed_at < 20 + BROKER_OUTAGE_S
    # The producer's idempotent retries outlast the outage: every event acknowledged, none failed.
    assert (summary.sent, summary.failed) == (len(rest), 0), summary.errors
    # The registry's journal is in Kafka: it still takes a new schema after the restart.
    assert _register_probe(isolated.topic) > 0

    # Kafka holds every event exactly once: no retry was written twice.
    records = _records(isolated.topic)
    ids = [event_id for _, _, event_id in records]
    assert len(ids) == len(set(ids)), "an event is in Kafka twice"
    assert set(ids) == {e["event_id"] for e in events}

    assert job.poll() is None, f"the job exited during the outage:\n{isolated.log_tail()}"
    target = _final_completeness(events, records)
    wait_for(lambda: (_completeness(isolated) or 0) >= target, timeout=180, what="the job to catch up")
    job.send_signal(signal.SIGTERM)  # reads to the topic's end, then stops with a savepoint
    isolated.wait(job, timeout=180)
    _check_stores(isolated, events)
    _assert_archived_once(isolated, records)


def test_a_killed_taskmanager_is_replaced_and_the_submitted_job_recovers(isolated, monkeypatch, capfd):
    for key, value in isolated.env().items():
        monkeypatch.setenv(key, value)
    cfg = StackConfig()
    events = _events(23, START, 30, 3000)
    half = len(events) // 2
    _send(events[:half], isolated.topic)

    assert jobctl.submit("user_stats", topic=isolated.topic, group_id=f"it-{isolated.suffix}") == 0
    submitted = re.search(r"JobID ([0-9a-f]{32})", capfd.readouterr().out)
    assert submitted, "flink run printed no job id"
    job_id = submitted.group(1)
    orphans: list[int] = []
    try:
        wait_for(lambda: _completeness(isolated), timeout=180, what="the submitted job's first tiles")
        wait_for(lambda: _checkpoints(cfg, job_id) > 0, timeout=120, what="a completed checkpoint")

        taskmanager = flink.pids(cfg)["taskexecutor"]
        orphans = process.descendants(taskmanager)  # its Python workers
        os.kill(taskmanager, signal.SIGKILL)
        _send(events[half:], isolated.topic)  # they arrive while no TaskManager runs

        wait_for(
            lambda: not flink.is_up(cfg), timeout=120, what="the JobManager to notice the lost TaskManager"
        )
        done = subprocess.run(
            [sys.executable, "-m", "stack", "up", "--only", "flink"],
            cwd=jobctl.PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert flink.pids(cfg).get("standalonesession") is not None, "the JobManager was restarted"

        records = _records(isolated.topic)
        target = _final_completeness(events, records)
        wait_for(lambda: (_completeness(isolated) or 0) >= target, timeout=240, what="the job to catch up")
        wait_for(
            lambda: (_offline_completeness(isolated) or 0) >= target,
            timeout=120,
            what="Iceberg to commit the last closed tiles",
        )
        assert _job(cfg, job_id)["state"] == "RUNNING"
        # The REST API serves job metrics from a cache refreshed every 10 s.
        wait_for(lambda: _restarts(cfg, job_id) >= 1, timeout=60, what="the job's restart in numRestarts")
    finally:
        capfd.readouterr()
        assert jobctl.flink_cli(["cancel", job_id]) == 0
        if "taskexecutor" not in flink.pids(cfg):
            flink.start_taskmanager(cfg)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                if process.alive(pid):
                    os.kill(pid, signal.SIGKILL)
    # Neither store advanced past the completeness watermark both hold: the comparison is exact.
    _check_stores(isolated, events)
    _assert_archived_once(isolated, records)


def _rest(cfg: StackConfig, path: str) -> dict:
    with urllib.request.urlopen(f"http://{cfg.host}:{cfg.flink_rest_port}{path}", timeout=10) as response:
        return json.load(response)


def _job(cfg: StackConfig, job_id: str) -> dict:
    return _rest(cfg, f"/jobs/{job_id}")


def _checkpoints(cfg: StackConfig, job_id: str) -> int:
    return int(_rest(cfg, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])


def _restarts(cfg: StackConfig, job_id: str) -> int:
    metrics = _rest(cfg, f"/jobs/{job_id}/metrics?get=numRestarts")
    return int(float(metrics[0]["value"])) if metrics else 0
