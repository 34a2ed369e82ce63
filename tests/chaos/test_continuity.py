"""One logical run per view version, through what operators do: rerun, stop, kill, lose state.

Each scenario breaks something real, then holds both stores to the independent
reference over the produced events: Iceberg's tiles (exactly one row per
entity and tile), Redis' tiles, and the values served online at the
completeness watermark. Only closed tiles are compared: no stop closes a tile
whose period the watermark has not passed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from serving.assembly import from_ms
from serving.online import OnlineStore
from sinks import iceberg
from tests.integration import reference
from tests.integration.conftest import assert_served_as_reference, kill, wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 2, 1, tzinfo=UTC)
LATENESS_MS = int(user_stats.source.max_out_of_orderness.total_seconds() * 1000)


def _events(seed: int, start: datetime, hours: int, count: int) -> list[dict]:
    cfg = GeneratorConfig(users=40, events=count, start=start, span=timedelta(hours=hours), seed=seed)
    return generate(cfg)


def _send(events: list[dict], topic: str) -> None:
    summary = produce_events(events, topic, KafkaConfig(), RegistryConfig())
    assert (summary.sent, summary.failed) == (len(events), 0)


def _offline_rows(iso) -> dict[tuple[str, int], tuple]:
    """Iceberg's tiles; fails on a second row for any (entity, tile_start)."""
    catalog = iceberg.open_catalog(iso.iceberg)
    table = catalog.load_table(f"{iso.iceberg.namespace}.{iceberg.tiles_table(user_stats)}").scan().to_arrow()
    starts = pc.cast(pc.cast(table["tile_start"], pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
    aggs = [table[a.name].to_pylist() for a in user_stats.aggregations]
    rows: dict[tuple[str, int], tuple] = {}
    for i, user in enumerate(table[user_stats.entity.join_key].to_pylist()):
        key = (user, starts[i])
        assert key not in rows, f"two offline rows for {key}"
        rows[key] = (table["events"][i].as_py(), *(col[i] for col in aggs))
    return rows


def _online(iso, users) -> tuple[dict[tuple[str, int], tuple], int | None]:
    store = OnlineStore(iso.redis)
    try:
        held = {
            (user, tile.start_ms): (tile.events, *tile.values)
            for user in users
            for tile in store.tiles(user_stats, user)
        }
        return held, store.completeness(user_stats)
    finally:
        store.close()


def _closed(tiles: dict, completeness: int) -> dict:
    return {k: v for k, v in tiles.items() if k[1] + reference.HOUR_MS <= completeness}


def _check_stores(iso, events: list[dict], *, live_kept: bool = True) -> int:
    """Both stores equal the reference of ``events`` up to the completeness watermark; returns it.

    Redis also holds the open tiles, written live: with ``live_kept`` (the job kept
    its state throughout) each equals the reference of its period; otherwise (state
    or Redis lost and rebuilt) each counts no more than the reference.
    """
    truth = reference.tiles(events)
    users = sorted({u for u, _ in truth})
    online, completeness = _online(iso, users)
    assert completeness is not None, "no completeness watermark in Redis"
    newest = max(reference.ms(e["event_time"]) for e in events)
    # Closed: every tile whose end the watermark (newest event time - lateness) has reached.
    assert completeness <= newest - LATENESS_MS + 1 < completeness + 2 * reference.HOUR_MS
    expected = _closed(truth, completeness)
    offline = _offline_rows(iso)
    assert offline == expected, _difference("Iceberg", offline, expected)
    closed_online = _closed(online, completeness)
    assert closed_online == expected, _difference("Redis", closed_online, expected)
    live = {k: v for k, v in online.items() if k not in closed_online}
    live_truth = {k: v for k, v in truth.items() if k not in expected}
    if live_kept:
        assert live == live_truth, _difference("Redis' live tiles", live, live_truth)
    else:
        over = {k: (v, live_truth.get(k)) for k, v in live.items() if v[0] > live_truth.get(k, (0,))[0]}
        assert not over, f"live tiles counting more than the reference: {list(over.items())[:3]}"

    windows = reference.Windows(events)
    store = OnlineStore(iso.redis)
    try:
        refs = [f"user_stats:{f}" for f in user_stats.feature_names]
        served = store.get_online_features(refs, [{"user_id": u} for u in users], as_of=from_ms(completeness))
    finally:
        store.close()
    assert_served_as_reference(windows, users, served, completeness)
    return completeness


def _difference(store: str, got: dict, want: dict) -> str:
    missing = sorted(want.keys() - got.keys())[:3]
    extra = sorted(got.keys() - want.keys())[:3]
    wrong = [(k, got[k], want[k]) for k in sorted(want.keys() & got.keys()) if got[k] != want[k]][:3]
    return f"{store} differs from the reference: missing {missing}, unexpected {extra}, wrong {wrong}"


def _raw_positions(iso) -> list[tuple[int, int]]:
    catalog = iceberg.open_catalog(iso.iceberg)
    table = catalog.load_table(f"{iso.iceberg.namespace}.{iceberg.raw_table(user_stats)}")
    rows = table.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    return list(zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True))


def _then(events: list[dict], seed: int, hours: int, count: int) -> list[dict]:
    """Later events that start in the hour the earlier ones left open."""
    newest = max(e["event_time"] for e in events)
    open_hour = newest.replace(minute=0, second=0, microsecond=0)
    later = _events(seed, open_hour, hours, count)
    return [e for e in later if e["event_time"] >= open_hour]


def test_two_bounded_runs_continue_the_open_hour(isolated):
    first = _events(1, START, 30, 3000)
    _send(first, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)
    closed_first = _check_stores(isolated, first)
    log = isolated.log.read_text()
    assert "stopped with savepoint" in log, "a bounded run ends with a savepoint"

    second = _then(first, 2, 6, 800)
    assert any(e["event_time"].timestamp() * 1000 < closed_first + reference.HOUR_MS for e in second)
    _send(second, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)
    assert "resuming user_stats_v2 from" in isolated.log.read_text()
    closed_second = _check_stores(isolated, first + second)
    assert closed_second > closed_first
    _assert_archived_once(isolated, len(first) + len(second))


def test_a_drained_job_stops_with_a_savepoint_and_the_next_run_resumes_it(isolated):
    first = _events(7, START, 30, 3000)
    half = len(first) // 2
    _send(first[:half], isolated.topic)
    job = isolated.start_job("user_stats", bounded=False, drain=True)
    wait_for(lambda: _any_checkpoint(isolated), timeout=300, what="a completed checkpoint")
    wait_for(lambda: _offline_rows(isolated), timeout=120, what="tiles committed to Iceberg")
    # Events still arriving when the operator stops the job: the drain reads to the end
    # offsets taken at the signal, then saves; the open hour travels in the savepoint.
    _send(first[half:], isolated.topic)
    job.send_signal(signal.SIGTERM)
    isolated.wait(job, timeout=300)
    log = isolated.log.read_text()
    assert "stopped with savepoint" in log, isolated.log_tail()
    closed_first = _check_stores(isolated, first)

    second = _then(first, 8, 6, 800)
    assert any(e["event_time"].timestamp() * 1000 < closed_first + reference.HOUR_MS for e in second)
    _send(second, isolated.topic)
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)
    assert "resuming user_stats_v2 from" in isolated.log.read_text()
    assert _check_stores(isolated, first + second) > closed_first
    _assert_archived_once(isolated, len(first) + len(second))


def test_a_killed_job_restarted_without_flags_resumes_from_its_checkpoint(isolated):
    first = _events(3, START, 30, 3000)
    _kill_mid_stream(isolated, first)

    second = _then(first, 4, 6, 800)
    _send(second, isolated.topic)
    users = sorted({e["user_id"] for e in first + second})
    before, _ = _online(isolated, users)
    job = isolated.start_job("user_stats", bounded=True)
    # The checkpoint's state is older than what the killed job wrote live: while the job
    # catches up from it, no tile Redis holds, the open hour's included, may count less.
    samples, raised = _watch_tiles_never_go_back(isolated, users, before, job)
    isolated.wait(job, timeout=420)
    assert samples >= 3 and raised > 0, f"the watch saw too little of the restart ({samples}, {raised})"
    assert "resuming user_stats_v2 from" in isolated.log.read_text()
    _check_stores(isolated, first + second)
    _assert_archived_once(isolated, len(first) + len(second))


def _watch_tiles_never_go_back(iso, users, start: dict, job, timeout: float = 420) -> tuple[int, int]:
    """Poll Redis' tiles until ``job`` exits; fail on any tile counting fewer events than before.

    Returns how many times it looked, and how many tile updates it saw.
    """
    highest = {key: value[0] for key, value in start.items()}
    samples = raised = 0
    deadline = time.monotonic() + timeout
    while job.poll() is None and time.monotonic() < deadline:
        held, _ = _online(iso, users)
        for key, value in held.items():
            assert value[0] >= highest.get(key, 0), f"{key} went from {highest[key]} to {value[0]} events"
            raised += value[0] > highest.get(key, 0)
            highest[key] = value[0]
        gone = [key for key in highest if key not in held]
        assert not gone, f"tiles vanished from Redis during the restart: {gone[:3]}"
        samples += 1
        time.sleep(0.2)
    return samples, raised


def test_lost_state_is_refused_then_healed_by_the_named_replay(isolated):
    first = _events(5, START, 30, 3000)
    _kill_mid_stream(isolated, first)
    shutil.rmtree(isolated.checkpoints)  # the state is gone
    before = _offline_rows(isolated)

    second = _then(first, 6, 6, 800)
    _send(second, isolated.topic)
    refused = isolated.start_job("user_stats", bounded=True)
    assert refused.wait(timeout=300) != 0
    assert "--without-state" in isolated.log_tail()

    isolated.wait(isolated.start_job("user_stats", bounded=True, without_state=True), timeout=420)
    log = isolated.log.read_text()
    heal = re.search(r"^parity: +(parity replay .+)$", log, re.MULTILINE)
    assert heal, f"no replay named in the job's output:\n{isolated.log_tail()}"

    # Closed tiles stay exactly as they were, and no key has two rows.
    after = _offline_rows(isolated)
    assert {k: after.get(k) for k in before} == before

    argv = shlex.split(heal.group(1))
    assert argv[:2] == ["parity", "replay"]
    done = subprocess.run(
        [sys.executable, "-m", "parity", *argv[1:]],
        cwd=jobctl.PROJECT_ROOT,
        env=os.environ | isolated.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The open hour's state was lost with the checkpoints: its live tile is not whole.
    _check_stores(isolated, first + second, live_kept=False)
    # The restart read on right after the archive: nothing was archived, or replayed, twice.
    _assert_archived_once(isolated, len(first) + len(second))


def _kill_mid_stream(iso, events: list[dict]) -> None:
    """Stream the events, and SIGKILL the job once some tiles are committed."""
    _send(events, iso.topic)
    job = iso.start_job("user_stats", bounded=False)
    wait_for(lambda: _any_checkpoint(iso), timeout=300, what="a completed checkpoint")
    wait_for(lambda: _offline_rows(iso), timeout=120, what="tiles committed to Iceberg")
    kill(job)


def _assert_archived_once(iso, sent: int) -> None:
    raw = _raw_positions(iso)
    assert len(raw) == len(set(raw)) == sent, f"the archive holds {len(raw)} rows for {sent} events"


def _any_checkpoint(iso) -> bool:
    return any(iso.checkpoints.glob("*/*/chk-*/_metadata"))
