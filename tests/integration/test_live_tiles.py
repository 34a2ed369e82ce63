"""Fresh to the second: reads at now take the live head tile, and equal the reference at that instant.

Events are produced with event times up to a second before the job reads
them, across the current and earlier hours. Once the job has read the topic to
its end, an online read at now covers ``[floor(t) - W, t)`` for each window W:
the closed tiles plus the head, the events of the open hour up to the read.
An independent reference counts the same span from the raw events, and
offline point-in-time reads at the same t (closed tiles, then the raw archive)
serve the same values and statuses.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features.user_stats import view as user_stats
from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from producer.produce import produce_events
from serving.assembly import from_ms, to_ms
from serving.offline import get_historical_features, load_tiles
from serving.online import OnlineStore
from serving.skew import check_skew
from sinks.redis import connect
from sinks.redis_layout import late_events_key
from tests.chaos.test_continuity import _check_stores, _closed, _online
from tests.integration import reference

pytestmark = pytest.mark.integration

USERS = [f"live-{i:02d}" for i in range(30)]
FEATURES = [f"user_stats:{name}" for name in user_stats.feature_names]


def _events(now: datetime, seed: int, count: int, span: timedelta) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        # Up to a second before `now`, most in the last hours, some a few days back.
        back = span * rng.random() ** 2 + timedelta(seconds=1)
        kind = rng.choice(["impression", "impression", "impression", "click"])
        events.append(
            {
                "event_id": f"live-{seed}-{i}",
                "user_id": rng.choice(USERS),
                "ad_id": "ad-1",
                "event_type": kind,
                "event_time": now - back,
                "campaign_id": "c",
                "country": "DE",
                "cost": 0.1,
                "device": rng.choice(["mobile", "desktop"]),
            }
        )
    return sorted(events, key=lambda e: e["event_time"])


def _send(events: list[dict], topic: str) -> None:
    summary = produce_events(events, topic, KafkaConfig(), RegistryConfig())
    assert (summary.sent, summary.failed) == (len(events), 0)


def _check_at_now(store: OnlineStore, events: list[dict], iceberg: IcebergConfig) -> int:
    """Online values at now against the reference over [floor(t) - W, t), and offline at t; returns t (ms)."""
    got = store.get_online_features(FEATURES, [{"user_id": u} for u in USERS])
    t_ms = to_ms(got[0][FEATURES[0]].window_end)
    expected = reference.Windows(events)
    floor = t_ms - t_ms % reference.HOUR_MS
    for user, values in zip(USERS, got, strict=True):
        want = expected.expected(user, floor, head_until_ms=t_ms)
        for ref, value in values.items():
            name = ref.split(":", 1)[1]
            assert to_ms(value.window_end) == t_ms, "a read at now covers the window up to now"
            if want[name] is None:
                continue  # no event of that window: the default, as at tile boundaries
            assert value.value == pytest.approx(want[name], abs=1e-12), (user, name, t_ms)
    _check_offline_equals_online(iceberg, got, t_ms)
    return t_ms


def _check_offline_equals_online(iceberg: IcebergConfig, online: list[dict], t_ms: int) -> None:
    """Offline point-in-time values at t: the same value and status as the online read at t."""
    when = pa.array([t_ms] * len(USERS), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    frame = pa.table({"user_id": USERS, "event_timestamp": when})
    offline = get_historical_features(frame, FEATURES, cfg=iceberg).table
    assert offline.column("user_stats:window_end").to_pylist() == when.to_pylist()
    for row, (user, values) in enumerate(zip(USERS, online, strict=True)):
        for ref, value in values.items():
            got = (offline.column(ref)[row].as_py(), offline.column(f"{ref}:status")[row].as_py())
            assert got == (value.value, value.status.value), (user, ref, t_ms)


def test_reads_at_now_include_the_head_and_equal_the_reference_restarts_keep_it(isolated):
    isolated.live_backlog = False  # the default: these events are recent, none is a backlog
    now = datetime.now(UTC)
    first = _events(now, seed=1, count=3000, span=timedelta(hours=30))
    # The newest event of each user's head is what it is about: one second old for some.
    _send(first, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)

    store = OnlineStore(isolated.redis)
    try:
        t_ms = _check_at_now(store, first, isolated.iceberg)
        _check_cli_offline(isolated, first, t_ms)
        # parity skew --at now: every sampled user equal at the read's instant, heads included.
        report = check_skew(
            user_stats, store, load_tiles(isolated.iceberg, user_stats), sample=100, at_now=True
        )
        assert (report.sampled, report.equal, report.largest) == (len(USERS), len(USERS), {}), report.line()
        assert report.as_of > now
        # At a tile boundary the head is empty: the read is tile-aligned, as before.
        boundary = datetime.fromtimestamp((to_ms(now) - to_ms(now) % reference.HOUR_MS) / 1000, tz=UTC)
        aligned = store.get_online_features(FEATURES, [{"user_id": u} for u in USERS], as_of=boundary)
        expected = reference.Windows(first)
        for user, values in zip(USERS, aligned, strict=True):
            want = expected.expected(user, to_ms(boundary))
            for ref, value in values.items():
                assert value.window_end == boundary
                name = ref.split(":", 1)[1]
                if want[name] is not None:
                    assert value.value == pytest.approx(want[name], abs=1e-12), (user, name)
        _check_offline_equals_online(isolated.iceberg, aligned, to_ms(boundary))
        head = (store.head_watermarks() or {}).get("user_stats")
        assert head == max(to_ms(e["event_time"]) for e in first), "the head watermark is the newest event"
        heads_before = {u: _head_events(store, u, now) for u in USERS}
    finally:
        store.close()

    # A restart from the savepoint, a late event for a closed hour, and new events now.
    later = datetime.now(UTC)
    late = dict(first[0], event_id="live-late", user_id=USERS[0], event_time=later - timedelta(hours=20))
    second = _events(later, seed=2, count=300, span=timedelta(minutes=2))
    _send([late, *second], isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)

    store = OnlineStore(isolated.redis)
    client = connect(isolated.redis)
    try:
        # The late event changed no tile (it is counted, and replay corrects the offline side).
        _check_at_now(store, first + second, isolated.iceberg)
        assert int(client.get(late_events_key(isolated.redis.key_prefix, user_stats)) or 0) >= 1
        for user in USERS:
            assert _head_events(store, user, now) >= heads_before[user], f"{user}'s head went backwards"
    finally:
        client.close()
        store.close()
    # Both stores against the reference, the late event left out: Iceberg and Redis hold the
    # closed tiles, and each live tile in Redis equals the reference of its open period.
    _check_stores(isolated, first + second)


def _check_cli_offline(isolated, events: list[dict], t_ms: int) -> None:
    """`parity features --offline --as-of t` serves the reference of [floor(t) - W, t)."""
    users = USERS[:3]
    command = [sys.executable, "-m", "parity", "features", *FEATURES, "--offline"]
    command += ["--as-of", from_ms(t_ms).isoformat(), *(f"--entity=user_id={u}" for u in users)]
    done = subprocess.run(
        command, env={**os.environ, **isolated.env()}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    expected = reference.Windows(events)
    for user, row in zip(users, json.loads(done.stdout), strict=True):
        want = expected.expected(user, t_ms - t_ms % reference.HOUR_MS, head_until_ms=t_ms)
        for ref, got in row["features"].items():
            assert got["window_end"] == from_ms(t_ms).isoformat()
            name = ref.split(":", 1)[1]
            if want[name] is not None:
                assert got["value"] == pytest.approx(want[name], abs=1e-12), (user, name)


def _head_events(store: OnlineStore, user: str, now: datetime) -> int:
    """Events in the user's tile of the hour holding ``now``, as Redis has it (0 without one)."""
    start = to_ms(now) - to_ms(now) % reference.HOUR_MS
    return next((t.events for t in store.tiles(user_stats, user) if t.start_ms == start), 0)


def test_a_backlog_reaches_redis_as_closed_tiles_only(isolated):
    """Events from days ago keep no live totals (the default); their tiles are written closed.

    The last hours of the backlog are still open by the watermark, so with live totals
    for a backlog (as the other tests run) Redis would hold their live tiles.
    """
    isolated.live_backlog = False
    start = datetime.now(UTC) - timedelta(days=3)
    events = _events(start + timedelta(hours=10), seed=5, count=600, span=timedelta(hours=10))
    _send(events, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=300)

    completeness = _check_stores(isolated, events, live_kept=False)
    truth = reference.tiles(events)
    open_by_watermark = {k for k in truth if k not in _closed(truth, completeness)}
    assert open_by_watermark, "the backlog's newest hours are still open by the watermark"
    held, _ = _online(isolated, sorted({u for u, _ in truth}))
    live = {k for k in held if k not in _closed(held, completeness)}
    assert live == set(), f"live tiles written for a backlog: {sorted(live)[:3]}"
