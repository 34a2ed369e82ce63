"""The online sink's guarantees against a real Redis."""

from __future__ import annotations

import pytest

from sinks.base import TileRow
from sinks.redis import RedisTileSink
from sinks.redis_layout import entity_key
from tests.unit.views import user_stats

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T = 1_767_225_600_000


@pytest.fixture
def sink(isolated):
    s = RedisTileSink(user_stats, isolated.redis)
    s.open()
    yield s
    s.close()


def stored(isolated, entity):
    import redis

    cfg = isolated.redis
    client = redis.Redis(host=cfg.host, port=cfg.port)
    try:
        return client.hgetall(entity_key(cfg.key_prefix, user_stats, entity))
    finally:
        client.close()


def test_older_version_of_a_tile_never_replaces_a_newer_one(isolated, sink):
    newer = TileRow("u1", T, T + HOUR, events=5, values=(4, 1))
    older = TileRow("u1", T, T + HOUR, events=3, values=(3, 0))
    assert sink.write([newer]).applied == 1
    before = stored(isolated, "u1")
    result = sink.write([older])
    assert (result.applied, result.refused_stale) == (0, 1)
    assert stored(isolated, "u1") == before == {b"1767225600": b"5|4|1"}


def test_rewriting_the_same_tile_is_harmless(isolated, sink):
    row = TileRow("u2", T, T + HOUR, events=2, values=(2, 0))
    for _ in range(3):
        sink.write([row])
    assert stored(isolated, "u2") == {b"1767225600": b"2|2|0"}


def test_tiles_past_the_longest_window_plus_margin_are_pruned(isolated, sink):
    old = TileRow("u3", T, T + HOUR, events=1, values=(1, 0))
    sink.write([old])
    eight_days_later = T + 8 * 24 * HOUR
    recent = TileRow("u3", eight_days_later, eight_days_later + HOUR, events=1, values=(0, 1))
    sink.write([recent])
    # What remains: the recent tile, and the mark of the newest tile pruned (not a tile).
    assert stored(isolated, "u3") == {
        str(eight_days_later // 1000).encode(): b"1|0|1",
        b"pruned": str(T // 1000).encode(),
    }


def test_completeness_only_moves_forward(isolated, sink):
    from serving.online import OnlineStore

    sink.advance_completeness(T + 2 * HOUR)
    sink.advance_completeness(T + HOUR)
    store = OnlineStore(isolated.redis)
    try:
        assert store.completeness(user_stats) == T + 2 * HOUR
    finally:
        store.close()
