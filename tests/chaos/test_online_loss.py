"""The online store lost mid-stream: reads say ``error`` until ``parity repair-online``, never an undercount.

The loss is the view's keys deleted with SCAN + UNLINK under the test's own
prefix: to the view, the same as a FLUSHALL, without wiping the keys of other
tests that share the Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity import jobctl
from serving.assembly import Status, from_ms
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from serving.progress import OfflineProgress
from sinks import iceberg
from sinks.repair import _offline_completeness
from tests.chaos.test_continuity import START, _check_stores, _events, _send, _then
from tests.integration import reference
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

FEATURES = [f"user_stats:{f}" for f in user_stats.feature_names]


def _expected_completeness(events: list[dict]) -> int:
    """The completeness an unbounded run reaches: every tile ended by the watermark is closed."""
    lateness = int(user_stats.source.max_out_of_orderness.total_seconds() * 1000)
    watermark = max(reference.ms(e["event_time"]) for e in events) - lateness
    return watermark - watermark % reference.HOUR_MS


def _caught_up(iso, store: OnlineStore, events: list[dict]) -> bool:
    want = _expected_completeness(events)
    online = store.completeness(user_stats)
    offline = _offline_completeness(iceberg.open_catalog(iso.iceberg), iso.iceberg, user_stats)
    return online == want and offline == want


def _lose(iso) -> int:
    cfg = iso.redis
    client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db)
    try:
        keys = list(client.scan_iter(match=f"{cfg.key_prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)
        return len(keys)
    finally:
        client.close()


def _statuses(store: OnlineStore, users: list[str], as_of_ms: int) -> set[Status]:
    rows = store.get_online_features(FEATURES, [{"user_id": u} for u in users], as_of=from_ms(as_of_ms))
    return {value.status for row in rows for value in row.values()}


def _repair(iso, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "parity", "repair-online", "user_stats", *flags],
        cwd=jobctl.PROJECT_ROOT,
        env=os.environ | iso.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_redis_lost_mid_stream_reads_error_until_repaired(isolated):
    first = _events(11, START, 30, 3000)
    _send(first, isolated.topic)
    isolated.start_job("user_stats", bounded=False)
    metrics = ServingMetrics(CollectorRegistry())
    store = OnlineStore(isolated.redis, {"user_stats": user_stats}, metrics=metrics)
    try:
        wait_for(lambda: _caught_up(isolated, store, first), timeout=300, what="the first events' tiles")
        users = sorted({e["user_id"] for e in first})
        at = _expected_completeness(first)
        assert Status.PRESENT in _statuses(store, users, at)

        assert _lose(isolated) > len(users)
        # Before the job writes again: this reader saw the epoch, so its absence is a loss.
        assert _statuses(store, users, at) == {Status.ERROR}
        # A reader started after the loss never saw the epoch: Iceberg's progress tells it.
        started_after = OnlineStore(
            isolated.redis, {"user_stats": user_stats}, offline=OfflineProgress(isolated.iceberg)
        )
        try:
            assert _statuses(started_after, users, at) == {Status.ERROR}
        finally:
            started_after.close()

        second = _then(first, 12, 6, 800)
        _send(second, isolated.topic)
        wait_for(lambda: _caught_up(isolated, store, first + second), timeout=180, what="the second events")
        # The job wrote again after the loss and marked it: a reader started since says error too.
        later = _expected_completeness(first + second)
        assert _statuses(store, users, later) == {Status.ERROR}
        fresh = OnlineStore(isolated.redis, {"user_stats": user_stats})
        try:
            assert _statuses(fresh, users, later) == {Status.ERROR}
        finally:
            fresh.close()
        lost = metrics.registry.get_sample_value(
            "feature_fetch_errors_total", {"source": "redis", "reason": "store_lost"}
        )
        assert lost and lost >= 2

        assert "would rebuild" in _repair(isolated, "--dry-run")
        assert _statuses(store, users, at) == {Status.ERROR}, "a dry run writes nothing"
        out = _repair(isolated)
        assert "rebuilt the online store" in out, out
        assert "entities" in out and "completeness" in out
        # Repair rebuilds closed tiles; an open tile is back once the job writes it again.
        _check_stores(isolated, first + second, live_kept=False)
        _repair(isolated)  # safe to re-run
        _check_stores(isolated, first + second, live_kept=False)
    finally:
        store.close()


def test_a_job_started_on_a_lost_redis_rebuilds_it_first(isolated):
    first = _events(13, START, 30, 2000)
    _send(first, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)
    users = sorted({e["user_id"] for e in first})
    assert _lose(isolated) > len(users)

    second = _then(first, 14, 6, 800)
    _send(second, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)
    log = isolated.log.read_text()
    assert "user_stats_v2 was lost (epoch absent): rebuilding it from Iceberg" in log, isolated.log_tail()
    # Repaired before the job started, which then continued from the first run's savepoint.
    rebuilt = log.index("user_stats_v2: rebuilt the online store from Iceberg")
    assert rebuilt < log.index("resuming user_stats_v2")

    at = _check_stores(isolated, first + second)
    store = OnlineStore(isolated.redis, {"user_stats": user_stats})
    try:
        statuses = _statuses(store, users, at)
    finally:
        store.close()
    assert Status.PRESENT in statuses and Status.ERROR not in statuses, statuses
