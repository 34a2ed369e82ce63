"""A rebuild of the online store from Iceberg keeps the horizon honest.

``repair_online`` copies back only the tiles inside the online horizon. A read
whose window reaches older tiles, which stay only in Iceberg, must say
``beyond_horizon``, exactly as after pruning, and never serve a short value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features.user_stats import view as user_stats
from serving.assembly import Status, Tile, assemble, from_ms, to_ms
from serving.online import OnlineStore
from sinks import iceberg
from sinks.repair import repair_online

pytestmark = pytest.mark.integration

HOUR = 3_600_000
END = datetime(2026, 5, 20, tzinfo=UTC)
DAYS = 12


def _offline(iso) -> list[Tile]:
    """One tile an hour for twelve days, written to Iceberg with its progress rows."""
    tiles_table, progress_table = iceberg.ensure_tables(iso.iceberg, user_stats)
    first = to_ms(END) - DAYS * 24 * HOUR
    starts = list(range(first, to_ms(END), HOUR))
    tiles = [Tile(start, 3, (2, 1, 0)) for start in starts]
    when = [from_ms(s) for s in starts]
    after = [from_ms(s + HOUR) for s in starts]
    rows = {
        "user_id": ["u1"] * len(starts),
        "tile_start": when,
        "tile_end": after,
        "events": [t.events for t in tiles],
        **{a.name: [t.values[i] for t in tiles] for i, a in enumerate(user_stats.aggregations)},
    }
    tiles_table.append(pa.table(rows).cast(tiles_table.schema().as_arrow()))
    progress = {
        "tile_start": when,
        "tile_end": after,
        "entities": [1] * len(starts),
        "events": [3] * len(starts),
    }
    progress_table.append(pa.table(progress).cast(progress_table.schema().as_arrow()))
    return tiles


def test_reads_before_the_rebuilt_horizon_say_beyond_horizon(isolated):
    tiles = _offline(isolated)
    summary = repair_online(user_stats, isolated.iceberg, isolated.redis, say=lambda _: None)
    assert summary.completeness_ms == to_ms(END)
    refs = [f"user_stats:{f}" for f in user_stats.feature_names]
    store = OnlineStore(isolated.redis)
    try:
        # Inside the horizon: the rebuilt values equal assemble over every offline tile.
        recent = END - timedelta(days=1)
        got = store.get_online_features(refs, [{"user_id": "u1"}], as_of=recent)[0]
        want = assemble(user_stats, tiles, recent, to_ms(END))
        for name, value in want.items():
            assert (got[f"user_stats:{name}"].value, got[f"user_stats:{name}"].status) == (
                value.value,
                value.status,
            ), name
        # Reaching tiles only Iceberg holds: said, not served short.
        old = END - timedelta(days=10)
        got = store.get_online_features(refs, [{"user_id": "u1"}], as_of=old)[0]
        assert {v.status for v in got.values()} == {Status.BEYOND_HORIZON}
    finally:
        store.close()
