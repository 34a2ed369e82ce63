"""`parity shadow` against the real Redis: a candidate version beside the live one, found by its module.

Tiles are written the way the job writes them (RedisTileSink), for the live
version and for each candidate under its own version's keys, without Flink.
The candidates are real modules (``user_stats_v<N>.py``) in a folder added to
the ``features`` package, as a file in features/ would be.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis

import features
from features.definition import FeatureView
from features.registry import get_candidate, load_views
from features.user_stats import view as user_stats
from parity import cli
from parity.config import RedisConfig
from serving.assembly import to_ms
from sinks.base import TileRow
from sinks.redis import RedisTileSink

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 7
TRACE_ID = re.compile(r"user_id=(\S+) .* trace_id=([0-9a-f]{32})$")

# v3 serves 0.5, not 0, as the click rate of a user without impressions: one feature, some users.
CHANGED = """\
from dataclasses import replace
from features.definition import Ratio
from features.user_stats import view as live
view = replace(
    live,
    version=3,
    derived=(
        Ratio("click_rate_7d", numerator="clicks_7d", denominator="impressions_7d", on_zero=0.5),
        *live.derived[1:],
    ),
)
"""
SAME = """\
from dataclasses import replace
from features.user_stats import view as live
view = replace(live, version=4)
"""


@pytest.fixture
def candidates(isolated, tmp_path, monkeypatch):
    """Candidate modules v3 and v4 of user_stats, and this test's Redis prefix for the command."""
    folder = tmp_path / "candidates"
    folder.mkdir()
    (folder / "user_stats_v3.py").write_text(CHANGED, encoding="utf-8")
    (folder / "user_stats_v4.py").write_text(SAME, encoding="utf-8")
    monkeypatch.setattr(features, "__path__", [*features.__path__, str(folder)])
    monkeypatch.setenv("PARITY_REDIS_KEY_PREFIX", isolated.redis.key_prefix)
    yield isolated.redis
    for name in ("features.user_stats_v3", "features.user_stats_v4"):
        sys.modules.pop(name, None)
    client = redis.Redis(host=isolated.redis.host, port=isolated.redis.port, db=isolated.redis.db)
    try:
        keys = list(client.scan_iter(match=f"{isolated.redis.key_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def rows() -> tuple[list[TileRow], set[str]]:
    """Users u00..u19 with impressions in every tile; z0..z4 with clicks and never an impression."""
    out = []
    for u in range(20):
        for hour in range(u, DAYS * 24, 13):
            start = to_ms(T0) + hour * HOUR
            out.append(TileRow(f"u{u:02d}", start, start + HOUR, 5, (1 + u % 4, u % 3, u % 2)))
    for z in range(5):
        start = to_ms(T0) + (100 + z) * HOUR
        out.append(TileRow(f"z{z}", start, start + HOUR, 2, (0, 2, 1)))
    return out, {f"z{z}" for z in range(5)}


def write(view: FeatureView, cfg: RedisConfig, tiles: list[TileRow]) -> None:
    watermark = to_ms(T0 + timedelta(days=DAYS))
    sink = RedisTileSink(view, cfg, clock=lambda: watermark)
    sink.open()
    try:
        sink.write(tiles)
        sink.advance_completeness(watermark)
    finally:
        sink.close()


def test_candidates_sit_beside_the_live_view(candidates):
    assert load_views()["user_stats"] is user_stats
    assert get_candidate("user_stats", 3).version == 3


def test_exactly_the_changed_feature_of_the_affected_users_diverges(candidates, capsys, caplog):
    tiles, affected = rows()
    for view in (user_stats, get_candidate("user_stats", 3)):
        write(view, candidates, tiles)
    with caplog.at_level(logging.WARNING, logger="serving.shadow"):
        code = cli.main(["shadow", "user_stats", "--candidate", "3", "--sample", "100", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["entities"] == 25
    assert report["as_of"] == (T0 + timedelta(days=DAYS)).isoformat()
    divergent = {name: f["divergent"] for name, f in report["features"].items() if f["divergent"]}
    assert divergent == {"click_rate_7d": len(affected)}
    rate = report["features"]["click_rate_7d"]
    assert (rate["value_differs"], rate["status_differs"], rate["compared"]) == (5, 0, 25)
    assert {e["entity"] for e in rate["examples"]} == affected
    assert all(e["live"] == [0.0, "present"] and e["candidate"] == [0.5, "present"] for e in rate["examples"])
    logged = dict(TRACE_ID.search(r.getMessage()).groups() for r in caplog.records)
    assert set(logged) == affected
    assert len(set(logged.values())) == len(affected)
    assert {e["entity"]: e["trace_id"] for e in rate["examples"]} == logged


def test_identical_versions_exit_0(candidates, capsys, caplog, tmp_path):
    tiles, _ = rows()
    for view in (user_stats, get_candidate("user_stats", 4)):
        write(view, candidates, tiles)
    ids = tmp_path / "ids.txt"
    ids.write_text("u00\nu07\nz1\nnever-seen\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="serving.shadow"):
        assert cli.main(["shadow", "user_stats", "--candidate", "4"]) == 0
        out = capsys.readouterr().out
        assert cli.main(["shadow", "user_stats", "--candidate", "4", "--entities", str(ids)]) == 0
    assert "25 entities, 8 features compared" in out
    assert out.rstrip().endswith("none above the threshold 0.00%")
    assert "4 entities" in capsys.readouterr().out
    assert not caplog.records
