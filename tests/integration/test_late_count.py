"""The late-event total against a real Redis: each late row counted once."""

from __future__ import annotations

import pytest
import redis

from sinks.redis import RedisTileSink
from sinks.redis_layout import late_counted_key, late_events_key
from tests.unit.views import user_stats

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(isolated):
    s = RedisTileSink(user_stats, isolated.redis)
    s.open()
    yield s
    s.close()


def test_a_repeated_batch_adds_nothing(sink):
    rows = [(0, 10), (0, 11), (1, 4)]
    assert sink.count_late(rows) == 3
    assert sink.count_late(rows) == 3  # a retry after Redis had applied the first call


def test_rows_read_again_after_a_restore_count_only_past_the_mark(sink):
    assert sink.count_late([(0, 10), (0, 20), (1, 5)]) == 3
    # Restored from a checkpoint before offset 10 of partition 0: 10 and 20 come again.
    assert sink.count_late([(0, 10), (0, 20), (0, 21), (1, 6)]) == 5


def test_partitions_keep_their_own_marks(isolated, sink):
    assert sink.count_late([(1, 100)]) == 1
    assert sink.count_late([(0, 3), (2, 0)]) == 3
    cfg = isolated.redis
    client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db)
    try:
        marks = client.hgetall(late_counted_key(cfg.key_prefix, user_stats))
        total = client.get(late_events_key(cfg.key_prefix, user_stats))
    finally:
        client.close()
    assert marks == {b"0": b"3", b"1": b"100", b"2": b"0"}
    assert total == b"3"


def test_large_offsets_are_stored_exactly(isolated, sink):
    big = 2**52 + 1
    assert sink.count_late([(0, big)]) == 1
    assert sink.count_late([(0, big)]) == 1
    assert sink.count_late([(0, big + 1)]) == 2
    cfg = isolated.redis
    client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db)
    try:
        assert client.hget(late_counted_key(cfg.key_prefix, user_stats), "0") == str(big + 1).encode()
    finally:
        client.close()


def test_no_rows_read_the_total(sink):
    assert sink.count_late([]) == 0
    sink.count_late([(0, 1)])
    assert sink.count_late([]) == 1
