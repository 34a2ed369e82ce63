from dataclasses import replace
from fnmatch import fnmatchcase

from redis.crc import key_slot

from sinks import redis_layout as keys
from sinks.base import TileRow
from sinks.redis_layout import completeness_key, decode_tile, encode_tile, entity_key
from tests.unit.views import user_stats

VIEW_KEYS = (
    keys.completeness_key,
    keys.due_key,
    keys.late_events_key,
    keys.late_counted_key,
    keys.epoch_key,
    keys.head_key,
)


def test_tile_round_trips_through_its_redis_encoding():
    row = TileRow("u1", 1_767_225_600_000, 1_767_229_200_000, events=7, values=(5, 2))
    field, value = encode_tile(row)
    assert (field, value) == ("1767225600", "7|5|2")
    assert decode_tile(user_stats, field.encode(), value.encode()) == (1_767_225_600_000, 7, (5, 2))


def test_keys_separate_entities_from_view_metadata():
    assert entity_key("parity", user_stats, "completeness") == "parity:{user_stats:v1}:e:completeness"
    assert completeness_key("parity", user_stats) == "parity:{user_stats:v1}:completeness"


def test_every_key_of_a_view_hashes_to_one_cluster_slot_and_matches_its_pattern():
    names = [f("parity", user_stats) for f in VIEW_KEYS]
    names += [keys.entity_key("parity", user_stats, e) for e in ("u1", "u2", "{odd}")]
    names += [keys.window_key("parity", user_stats, e) for e in ("u1", "u2", "{odd}")]
    assert {key_slot(n.encode()) for n in names} == {key_slot(b"user_stats:v1")}
    pattern = keys.view_pattern("parity", user_stats)
    assert all(fnmatchcase(n, pattern) for n in names)
    other = replace(user_stats, version=2)
    assert not fnmatchcase(keys.entity_key("parity", other, "u1"), pattern)
    assert not fnmatchcase(keys.entity_key("other", user_stats, "u1"), pattern)
