"""The online store on a real 3-master Redis Cluster: chosen by configuration alone.

The module starts the optional `redis-cluster` service when it is not up (and
stops it if it started it). With PARITY_REDIS_MODE=cluster and the seed nodes
in the environment, the same streaming job (its JVM sink), online reads,
`parity skew`, and `replay --to-online` (whose window refresh runs the
refresh script) run as on one Redis, with the same assertions against the
independent reference. Nothing of the test's lands in the single Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from producer.generate import GeneratorConfig, generate
from replay.backfill import replay
from serving import cli
from serving.assembly import from_ms
from serving.online import OnlineStore
from sinks.redis import connect
from sinks.redis_layout import entity_key, view_pattern, window_key
from stack import redis_cluster
from stack.config import StackConfig
from tests.integration import reference
from tests.integration.conftest import assert_served_as_reference
from tests.integration.test_pipeline import _check_stores, _send

pytestmark = [
    pytest.mark.integration,
    # The service started here is detached by design (its own session, as `stack up`
    # leaves it): its Popen handles are dropped while it runs, and say so.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]

START = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """The 3-master cluster, up; the client settings that reach it."""
    cfg = StackConfig()
    started = not redis_cluster.is_up(cfg)
    if started:
        redis_cluster.start(cfg)
    try:
        yield {"PARITY_REDIS_MODE": "cluster", "PARITY_REDIS_CLUSTER_NODES": redis_cluster.seeds(cfg)}
    finally:
        if started:
            redis_cluster.stop(cfg)


def _view_keys(cfg: RedisConfig) -> list[bytes]:
    client = connect(cfg)
    try:
        return list(client.scan_iter(match=view_pattern(cfg.key_prefix, user_stats), count=1000))
    finally:
        client.close()


def test_job_reads_skew_and_replay_to_online_on_a_redis_cluster(cluster, isolated, monkeypatch, capsys):
    for name, value in {**cluster, **isolated.env()}.items():
        monkeypatch.setenv(name, value)
    cfg = RedisConfig()
    assert cfg.mode == "cluster" and cfg.key_prefix == isolated.redis.key_prefix

    events = generate(GeneratorConfig(users=60, events=4000, start=START, span=timedelta(days=3), seed=31))
    _send(events, isolated.topic)
    closers = isolated.close_tiles(max(e["event_time"] for e in events))
    isolated.wait(isolated.start_job("user_stats", bounded=True), timeout=420)

    # Iceberg's and the cluster's tiles equal the reference; completeness is the newest tile end.
    _, completeness = _check_stores(isolated, events, closers)

    # The view's keys are on the cluster, all in one slot, hence on one master; none of them
    # reached the single Redis.
    keys = _view_keys(cfg)
    tag = f"{user_stats.name}:v{user_stats.version}".encode()
    assert keys and {key_slot(k) for k in keys} == {key_slot(tag)}
    single = redis.Redis(host=cfg.host, port=cfg.port)
    try:
        assert not list(single.scan_iter(match=f"{cfg.key_prefix}:*", count=1000))
    finally:
        single.close()

    # Online reads at the completeness watermark equal the reference.
    windows = reference.Windows(events)
    users = sorted({e["user_id"] for e in events})
    refs = [f"user_stats:{f}" for f in user_stats.feature_names]
    rows = [{"user_id": u} for u in users]

    def served() -> list[dict]:
        store = OnlineStore(RedisConfig())
        try:
            return store.get_online_features(refs, rows, as_of=from_ms(completeness))
        finally:
            store.close()

    assert assert_served_as_reference(windows, users, served(), completeness) > 0

    # The cluster (written by the job) and Iceberg serve the same values.
    code = cli.main(["skew", "user_stats", "--sample", "1000", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["differing"] == 0 and report["sampled"] >= len(users), report

    # Lose a third of the users' tiles and window values; replay --to-online brings them back,
    # and its window refresh (the refresh script, on the view's node) makes reads whole again.
    client = connect(cfg)
    assert isinstance(client, RedisCluster)
    try:
        lost = users[::3]
        for user in lost:
            client.delete(entity_key(cfg.key_prefix, user_stats, user))
            client.delete(window_key(cfg.key_prefix, user_stats, user))
    finally:
        client.close()
    with pytest.raises(AssertionError):
        _check_stores(isolated, events, closers)
    summary = replay(user_stats, START, from_ms(completeness), to_online=True, say=lambda _: None)
    assert summary.online_written > 0
    _check_stores(isolated, events, closers)
    assert assert_served_as_reference(windows, users, served(), completeness) > 0
