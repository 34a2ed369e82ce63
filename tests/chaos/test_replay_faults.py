"""Replay under faults: killed mid-run, asked for an open range, racing the streaming job.

A replay changes the offline table in one commit or not at all; whatever
happens to it, the tables end equal to the reference over the produced events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from pyiceberg.exceptions import NoSuchTableError

from features.user_stats import view as user_stats
from parity import jobctl
from parity.errors import InputError
from replay.backfill import replay
from serving.assembly import from_ms
from sinks import iceberg
from tests.chaos.test_continuity import _check_stores, _events, _offline_rows, _send
from tests.integration import reference
from tests.integration.conftest import kill, wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 4, 6, tzinfo=UTC)


@pytest.fixture
def env(isolated, monkeypatch):
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    return isolated


def _staging(iso) -> list[str]:
    cfg = iso.iceberg
    names = [identifier[-1] for identifier in iceberg.open_catalog(cfg).list_tables(cfg.namespace)]
    return [name for name in names if iceberg.is_staging_table(user_stats, name)]


def _closed_until(iso) -> datetime:
    """The offline completeness watermark (the epoch while nothing is closed)."""
    cfg = iso.iceberg
    identifier = f"{cfg.namespace}.{iceberg.progress_table(user_stats)}"
    try:
        progress = iceberg.open_catalog(cfg).load_table(identifier)
    except NoSuchTableError:  # the job has not made its tables yet
        return from_ms(0)
    return from_ms(iceberg.completeness_ms(progress) or 0)


def test_a_killed_replay_changes_nothing_and_the_next_run_sweeps_after_it(env):
    events = _events(7, START, 24, 2000)
    _send(events, env.topic)
    env.wait(env.start_job("user_stats", bounded=True), timeout=420)
    before = _offline_rows(env)
    end = _closed_until(env)

    argv = ["replay", "user_stats", "--start", START.isoformat(), "--end", end.isoformat(), "--yes"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parity", *argv],
        cwd=jobctl.PROJECT_ROOT,
        env=os.environ | env.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    staged = wait_for(lambda: _staging(env), timeout=120, what="the replay's staging tables")
    kill(proc)
    # Its batch job runs in a session of its own; end it too, as a crash of the machine would.
    subprocess.run(["pkill", "-9", "-f", staged[0].rsplit("_", 1)[0]], check=False)
    assert _offline_rows(env) == before, "a killed replay changed the offline table"
    assert _staging(env), "the killed replay's staging tables should still be there"

    said: list[str] = []
    replay(user_stats, START, end, say=said.append)
    assert any(line.startswith("dropped ") for line in said), said
    assert _staging(env) == []
    _check_stores(env, events)


def test_a_range_past_the_completeness_watermark_is_refused_with_the_last_replayable_end(env):
    events = _events(8, START, 12, 800)
    _send(events, env.topic)
    env.wait(env.start_job("user_stats", bounded=True), timeout=420)
    before = _offline_rows(env)
    closed = _closed_until(env)
    open_end = closed + timedelta(hours=2)
    with pytest.raises(InputError, match=re.escape(f"last replayable end is {closed.isoformat()}")):
        replay(user_stats, START, open_end, say=lambda _: None)
    assert _offline_rows(env) == before
    assert _staging(env) == []


def test_a_replay_racing_the_stream_commits_on_top_of_its_commits(env):
    first = _events(9, START, 20, 1500)
    _send(first, env.topic)
    job = env.start_job("user_stats", bounded=False, drain=True)
    newest = max(reference.ms(e["event_time"]) for e in first)
    wait_for(
        lambda: _closed_until(env) >= START + timedelta(hours=12),
        timeout=300,
        what="the stream to close the first hours",
    )

    # Keep the stream committing: every second, events of the next hour.
    later: list[dict] = []
    stop = threading.Event()

    def stream_on() -> None:
        hour = from_ms(newest - newest % reference.HOUR_MS)
        while not stop.is_set():
            batch = [e for e in _events(len(later), hour, 1, 60) if e["event_time"] >= hour]
            _send(batch, env.topic)
            later.extend(batch)
            hour += timedelta(hours=1)
            stop.wait(1.0)

    producer = threading.Thread(target=stream_on, daemon=True)
    producer.start()
    try:
        tiles = iceberg.open_catalog(env.iceberg).load_table(
            f"{env.iceberg.namespace}.{iceberg.tiles_table(user_stats)}"
        )
        commits_before = len(tiles.snapshots())
        summary = replay(user_stats, START, START + timedelta(hours=12), say=lambda _: None)
        tiles.refresh()
        assert summary.snapshot_id is not None
        ours = tiles.snapshot_by_id(summary.snapshot_id)
        assert ours is not None
        # The stream committed while the replay ran: the race was real.
        assert len(tiles.snapshots()) > commits_before + 1
    finally:
        stop.set()
        producer.join(timeout=30)
    job.send_signal(signal.SIGTERM)  # reads to the topic's end, then stops with a savepoint
    env.wait(job, timeout=300)
    _check_stores(env, first + later)
