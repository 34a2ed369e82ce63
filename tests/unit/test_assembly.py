import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from features.definition import AggKind, Aggregation, OnStale
from serving.assembly import Status, Tile, assemble, to_ms
from tests.unit.views import user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def brute_force(tiles, end_ms, window_ms, index):
    # The contract's condition, row by row: start >= end - W and start + tile <= end.
    picked = [
        t.values[index] for t in tiles if t.start_ms >= end_ms - window_ms and t.start_ms + HOUR <= end_ms
    ]
    return sum(picked) if picked else None


def random_tiles(rng):
    starts = sorted(rng.sample(range(0, 24 * 12), 60))
    return [
        Tile(to_ms(T0) + s * HOUR, events=(i := rng.randint(1, 9)) + (c := rng.randint(0, 3)), values=(i, c))
        for s in starts
    ]


@pytest.mark.parametrize("seed", range(5))
def test_windows_equal_the_contract_definition(seed):
    rng = random.Random(seed)
    tiles = random_tiles(rng)
    for _ in range(200):
        as_of = T0 + timedelta(minutes=rng.randint(0, 13 * 24 * 60))
        end = to_ms(as_of) - to_ms(as_of) % HOUR
        values = assemble(user_stats, tiles, as_of, completeness_ms=end)
        for index, name in enumerate(("impressions", "clicks")):
            for label, window in (("1d", 24 * HOUR), ("7d", 7 * 24 * HOUR)):
                expected = brute_force(tiles, end, window, index)
                got = values[f"{name}_{label}"]
                if expected is None:
                    assert (got.value, got.status) == (0, Status.MISSING)
                else:
                    assert (got.value, got.status) == (expected, Status.PRESENT)
        imps, clicks = values["impressions_7d"], values["clicks_7d"]
        rate = values["click_rate_7d"]
        if imps.status is Status.MISSING:
            assert (rate.value, rate.status) == (0.02, Status.MISSING)
        elif imps.value == 0:
            assert rate.value == 0.0
        else:
            assert rate.value == clicks.value / imps.value


def test_no_tile_after_as_of_is_used():
    tiles = [Tile(to_ms(T0), 1, (1, 0)), Tile(to_ms(T0) + HOUR, 5, (5, 5))]
    # At 01:59 the second tile has not ended: only the first counts.
    values = assemble(user_stats, tiles, T0 + timedelta(minutes=119), completeness_ms=to_ms(T0) + HOUR)
    assert values["impressions_1d"].value == 1
    assert values["clicks_1d"].value == 0
    assert values["impressions_1d"].window_end == T0 + timedelta(hours=1)


def test_stale_view_serves_value_or_default_by_policy():
    tiles = [Tile(to_ms(T0), 4, (3, 1))]
    late = T0 + timedelta(hours=5)  # completeness 01:00 is older than 05:00 - 2h
    served = assemble(user_stats, tiles, late, completeness_ms=to_ms(T0) + HOUR)
    assert (served["clicks_1d"].value, served["clicks_1d"].status) == (1, Status.STALE)
    strict = replace(user_stats, on_stale=OnStale.DEFAULT)
    defaulted = assemble(strict, tiles, late, completeness_ms=to_ms(T0) + HOUR)
    assert (defaulted["clicks_1d"].value, defaulted["clicks_1d"].status) == (0, Status.STALE)
    assert defaulted["click_rate_7d"].value == 0.02


def test_cold_entity_gets_defaults_marked_missing():
    values = assemble(user_stats, [], T0 + timedelta(days=3), completeness_ms=to_ms(T0 + timedelta(days=3)))
    assert {v.status for v in values.values()} == {Status.MISSING}
    assert values["click_rate_7d"].value == 0.02


def test_zero_denominator_uses_the_stated_rule():
    tiles = [Tile(to_ms(T0), 2, (0, 2))]
    values = assemble(user_stats, tiles, T0 + timedelta(hours=1), completeness_ms=to_ms(T0) + HOUR)
    assert (values["click_rate_7d"].value, values["click_rate_7d"].status) == (0.0, Status.PRESENT)


def test_min_and_max_ignore_tiles_without_matching_events():
    view = replace(
        user_stats,
        aggregations=(
            Aggregation("low", AggKind.MIN, column="cost"),
            Aggregation("high", AggKind.MAX, column="cost"),
        ),
        derived=(),
        defaults={"low_1d": -1.0, "low_7d": -1.0, "high_1d": -1.0, "high_7d": -1.0},
    )
    tiles = [
        Tile(to_ms(T0), 1, (None, None)),
        Tile(to_ms(T0) + HOUR, 2, (0.5, 2.5)),
        Tile(to_ms(T0) + 2 * HOUR, 1, (1.5, 1.5)),
    ]
    values = assemble(view, tiles, T0 + timedelta(hours=3), completeness_ms=to_ms(T0) + 3 * HOUR)
    assert values["low_1d"].value == 0.5
    assert values["high_1d"].value == 2.5
    only_empty = assemble(view, tiles[:1], T0 + timedelta(hours=1), completeness_ms=to_ms(T0) + HOUR)
    assert (only_empty["low_1d"].value, only_empty["low_1d"].status) == (-1.0, Status.MISSING)


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        assemble(user_stats, [], datetime(2026, 1, 1), completeness_ms=None)


def test_add_head_merges_the_open_tile_last_as_merge_does():
    from serving.assembly import add_head, head_slots, merge
    from tests.unit.views import spend

    rng = random.Random(5)
    slots = head_slots(spend)
    for _ in range(200):
        raw = {name: rng.choice([None, rng.uniform(-5, 5), rng.randint(0, 9)]) for name, _, _ in slots}
        head = [rng.choice([None, rng.uniform(-5, 5), rng.randint(0, 9)]) for _ in spend.aggregations]
        expected = {name: merge(kind, [raw[name], head[index]]) for name, index, kind in slots}
        assert add_head(dict(raw), head, slots) == expected
