"""parity reset against real Kafka, Redis and Iceberg: all of a view version's state, listed first.

The state is made by hand, without running Flink: tables through the sink's
own ensure_tables, a consumer group by committing an offset, checkpoint and
savepoint folders as Flink lays them out. Another version of the same view
has state too, which a reset must leave alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from parity import cli
from parity.config import FlinkJobConfig, KafkaConfig
from parity.reset import ViewReset, reset_view
from sinks import iceberg
from sinks.redis import connect
from sinks.redis_layout import entity_key, view_pattern
from tests.unit.views import user_stats

from .conftest import wait_for

pytestmark = pytest.mark.integration

JOB_ID = "8f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f"
SAVEPOINT = "savepoint-8f1c2d-0a1b2c3d4e5f"


@pytest.fixture
def view(isolated):
    # A name of its own: the consumer group parity-<view>_v<version> is global in Kafka.
    source = replace(user_stats.source, topic=isolated.topic)
    return replace(user_stats, name=f"reset_{isolated.suffix}", version=3, source=source)


@pytest.fixture
def stored(isolated, view):
    """Every kind of state for the view, and state of its version 4 that must survive."""
    other = replace(view, version=4)
    client = connect(isolated.redis)
    for version in (view, other):
        client.hset(entity_key(isolated.redis.key_prefix, version, "u1"), "1767225600", "1|1|0")

    iceberg.ensure_tables(isolated.iceberg, view)
    iceberg.ensure_tables(isolated.iceberg, other)
    catalog = iceberg.open_catalog(isolated.iceberg)
    namespace = isolated.iceberg.namespace
    raw = catalog.load_table(f"{namespace}.{iceberg.raw_table(view)}")
    event = {
        "event_id": "e1",
        "user_id": "u1",
        "ad_id": "a1",
        "event_type": "click",
        "event_time": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "campaign_id": "c1",
        "country": "DE",
        "cost": 0.5,
        "kafka_partition": 0,
        "kafka_offset": 0,
    }
    raw.append(pa.Table.from_pylist([event], schema=raw.schema().as_arrow()))
    # What a replay killed before its cleanup leaves behind (names as replay.backfill makes them).
    for suffix, schema in (("tiles", iceberg.tiles_schema(view)), ("progress", iceberg.progress_schema())):
        catalog.create_table(f"{namespace}.{view.qualified_name}_replay_0a1b2c3d_{suffix}", schema=schema)

    kafka = KafkaConfig()
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(isolated.topic, 1, 1)]).values():
        future.result()
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"parity-{view.qualified_name}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(offsets=[TopicPartition(isolated.topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()

    state_dir = isolated.checkpoints / view.qualified_name
    for folder in (state_dir / JOB_ID / "chk-1", state_dir / "savepoints" / SAVEPOINT):
        folder.mkdir(parents=True)
        (folder / "_metadata").write_bytes(b"\0")
    (isolated.checkpoints / other.qualified_name / JOB_ID / "chk-7").mkdir(parents=True)

    yield other
    client.close()
    for version in (view, other):
        _reset(isolated, version, topic=version is view)


def _reset(isolated, view, *, topic=True, **kwargs):
    return reset_view(
        view,
        topic=topic,
        redis_cfg=isolated.redis,
        iceberg_cfg=isolated.iceberg,
        flink=FlinkJobConfig(checkpoint_dir=isolated.checkpoints),
        **kwargs,
    )


def _groups() -> set[str]:
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    return {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}


def _topics() -> set[str]:
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    return set(admin.list_topics(timeout=10).topics)


def test_dry_run_lists_everything_and_removes_nothing(isolated, view, stored):
    state = _reset(isolated, view, dry_run=True)

    namespace = isolated.iceberg.namespace
    assert state.redis_keys == 1
    assert state.tables == [
        f"{namespace}.{view.qualified_name}_tiles",
        f"{namespace}.{view.qualified_name}_progress",
    ]
    assert state.raw_table == f"{namespace}.{view.qualified_name}_raw"
    assert state.staging_tables == [
        f"{namespace}.{view.qualified_name}_replay_0a1b2c3d_progress",
        f"{namespace}.{view.qualified_name}_replay_0a1b2c3d_tiles",
    ]
    assert state.consumer_group == f"parity-{view.qualified_name}"
    assert state.checkpoint_dir == isolated.checkpoints / view.qualified_name
    assert state.checkpoints == [f"{JOB_ID}/chk-1"]
    assert state.savepoints == [f"savepoints/{SAVEPOINT}"]
    assert (state.topic, state.topic_readers) == (isolated.topic, [])
    listed = "\n".join(state.lines())
    items = [*state.tables, state.raw_table, *state.staging_tables, state.consumer_group]
    for item in (*items, *state.checkpoints, *state.savepoints, state.topic):
        assert item in listed
    assert f"Redis: 1 key matching {view_pattern(isolated.redis.key_prefix, view)}" in listed

    assert _reset(isolated, view, dry_run=True) == state
    assert state.consumer_group in _groups()
    assert isolated.topic in _topics()
    assert (isolated.checkpoints / view.qualified_name / "savepoints" / SAVEPOINT).is_dir()


def test_reset_removes_all_of_it_and_only_it(isolated, view, stored):
    other = stored
    _reset(isolated, view)

    assert (
        ViewReset(
            view,
            redis_cfg=isolated.redis,
            iceberg_cfg=isolated.iceberg,
            flink=FlinkJobConfig(checkpoint_dir=isolated.checkpoints),
        )
        .find()
        .empty
    )
    client = connect(isolated.redis)
    try:
        assert client.keys(f"{isolated.redis.key_prefix}:*") == [
            entity_key(isolated.redis.key_prefix, other, "u1").encode()
        ]
    finally:
        client.close()
    catalog = iceberg.open_catalog(isolated.iceberg)
    assert sorted(name for _, name in catalog.list_tables(isolated.iceberg.namespace)) == [
        f"{other.qualified_name}_progress",
        f"{other.qualified_name}_raw",
        f"{other.qualified_name}_tiles",
    ]
    assert f"parity-{view.qualified_name}" not in _groups()
    assert [p.name for p in isolated.checkpoints.iterdir()] == [other.qualified_name]
    wait_for(lambda: isolated.topic not in _topics(), 30, "the topic's deletion")


def test_cli_lists_everything_before_it_asks(isolated, view, stored, monkeypatch, capsys):
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("features.registry.get_view", lambda name: view)
    printed_before_question = []

    def answer(question):
        printed_before_question.append(capsys.readouterr().out)
        return "n"

    monkeypatch.setattr("builtins.input", answer)

    assert cli.main(["reset", "--view", view.name]) == 1

    [listing] = printed_before_question
    assert f"{view.qualified_name}_raw" in listing
    assert f"parity-{view.qualified_name}" in listing
    assert SAVEPOINT in listing
    assert "Kafka topic" not in listing  # without --topic
    assert "nothing removed" in capsys.readouterr().out
    assert f"parity-{view.qualified_name}" in _groups()
