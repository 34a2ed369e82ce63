"""The late-event total in Redis stays exact when the job is killed after counting and restored.

A job killed after it counted late rows, but before a checkpoint covered
them, is restored from the checkpoint before them and reads them again. The
scenario makes that window certain rather than lucky: the run that counts the
late rows takes no checkpoint at all, so the restart resumes from the
savepoint taken before they were sent.
"""

from __future__ import annotations

import re

import pytest
import redis

from features.user_stats import view as user_stats
from parity import jobctl
from sinks.redis_layout import late_events_key
from tests.chaos.test_continuity import START, _assert_archived_once, _events, _send
from tests.integration.conftest import kill, wait_for

pytestmark = pytest.mark.integration


def _late_total(iso) -> int:
    cfg = iso.redis
    client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db)
    try:
        raw = client.get(late_events_key(cfg.key_prefix, user_stats))
    finally:
        client.close()
    return int(raw) if raw is not None else 0


def _start_without_checkpoints(iso):
    """An unbounded run that takes no checkpoint within the test (as start_job otherwise)."""
    cmd = jobctl.stream_command("user_stats", group_id=f"it-{iso.suffix}-user_stats", topic=iso.topic)
    proc = jobctl.start_local(cmd, iso.log, env=iso.env() | {"PARITY_FLINK_CHECKPOINT_INTERVAL_S": "600"})
    iso.jobs.append(proc)
    return proc


def test_late_rows_read_again_after_a_kill_are_counted_once(isolated):
    on_time = _events(31, START, 30, 1500)
    _send(on_time, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)
    assert _late_total(isolated) == 0
    before_late = re.search(r"stopped with savepoint file:(\S+);", isolated.log.read_text())
    assert before_late, isolated.log_tail()

    # Every tile of these closed in the first run, so every one of them is late.
    late = _events(32, START, 20, 120)
    job = _start_without_checkpoints(isolated)
    _send(late, isolated.topic)
    wait_for(lambda: _late_total(isolated) >= len(late), timeout=180, what="the late rows counted")
    kill(job)
    assert not list(isolated.checkpoints.glob("*/*/chk-*/_metadata")), "the counting run took a checkpoint"

    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)
    # Both later runs resumed from the savepoint taken before the late rows were sent,
    # so the last one read them again; only it archived them (the killed run committed nothing).
    assert isolated.log.read_text().count(f"resuming user_stats_v2 from {before_late.group(1)}") == 2
    _assert_archived_once(isolated, len(on_time) + len(late))
    assert _late_total(isolated) == len(late)
