"""The column-wise tile diff of a replay against a row-by-row reference."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from replay.diff import TileDiff, diff_tiles

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("ad_id", pa.string()),
        ("tile_start", pa.timestamp("us", tz="UTC")),
        ("events", pa.int64()),
        ("cost", pa.float64()),
        ("cheapest", pa.float64()),
    ]
)


def reference(before: list[dict], after: list[dict]) -> TileDiff:
    def key(row):
        return row["ad_id"], row["tile_start"]

    old = {key(r): r for r in before}
    new = {key(r): r for r in after}

    def same(a, b):
        for name, value in a.items():
            other = b[name]
            if isinstance(value, float) and isinstance(other, float):
                if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif value != other:
                return False
        return True

    return TileDiff(
        added=len(new.keys() - old.keys()),
        removed=len(old.keys() - new.keys()),
        changed=sum(1 for k in new.keys() & old.keys() if not same(new[k], old[k])),
    )


def test_added_removed_and_changed_tiles_match_a_row_by_row_comparison():
    rng = random.Random(3)
    before = []
    for ad in range(40):
        for hour in rng.sample(range(48), 10):
            cost = rng.uniform(0, 100)
            before.append(
                {
                    "ad_id": f"a{ad}",
                    "tile_start": T0 + timedelta(hours=hour),
                    "events": rng.randint(1, 9),
                    "cost": cost,
                    "cheapest": rng.choice([None, cost / 2]),
                }
            )
    after = []
    for row in before:
        roll = rng.random()
        if roll < 0.1:
            continue  # removed
        row = dict(row)
        if roll < 0.2:
            row["events"] += 1
        elif roll < 0.3:
            row["cost"] = row["cost"] * (1 + 1e-12)  # rounding only: the same tile
        elif roll < 0.4:
            row["cost"] += 0.01
        elif roll < 0.5:
            row["cheapest"] = None if row["cheapest"] is not None else 1.0
        after.append(row)
    after += [{**before[0], "tile_start": T0 + timedelta(days=9)}, {**before[1], "ad_id": "new"}]
    rng.shuffle(after)

    got = diff_tiles(
        pa.Table.from_pylist(before, SCHEMA), pa.Table.from_pylist(after, SCHEMA), ("ad_id", "tile_start")
    )
    expected = reference(before, after)
    assert got == expected
    assert expected.added == 2 and expected.removed > 0 and expected.changed > 0


def test_identical_tables_differ_nowhere_and_empty_ones_work():
    rows = [{"ad_id": "a", "tile_start": T0, "events": 1, "cost": 0.5, "cheapest": None}]
    table = pa.Table.from_pylist(rows, SCHEMA)
    assert diff_tiles(table, table, ("ad_id", "tile_start")) == TileDiff(0, 0, 0)
    empty = SCHEMA.empty_table()
    assert diff_tiles(empty, table, ("ad_id", "tile_start")) == TileDiff(1, 0, 0)
    assert diff_tiles(table, empty, ("ad_id", "tile_start")) == TileDiff(0, 1, 0)
