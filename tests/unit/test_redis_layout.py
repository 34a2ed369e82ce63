from sinks.base import TileRow
from sinks.redis_layout import completeness_key, decode_tile, encode_tile, entity_key
from tests.unit.views import user_stats


def test_tile_round_trips_through_its_redis_encoding():
    row = TileRow("u1", 1_767_225_600_000, 1_767_229_200_000, events=7, values=(5, 2))
    field, value = encode_tile(row)
    assert (field, value) == ("1767225600", "7|5|2")
    assert decode_tile(user_stats, field.encode(), value.encode()) == (1_767_225_600_000, 7, (5, 2))


def test_keys_separate_entities_from_view_metadata():
    assert entity_key("parity", user_stats, "completeness") == "parity:user_stats:v1:e:completeness"
    assert completeness_key("parity", user_stats) == "parity:user_stats:v1:completeness"
