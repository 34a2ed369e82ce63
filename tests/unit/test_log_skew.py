"""The log skew check on in-memory records: keys map back to ids, values and statuses compare."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pydantic import SecretStr

from features.definition import Entity, FeatureView
from parity.errors import ConfigError
from serving import cli
from serving.assembly import Tile, from_ms, to_ms
from serving.feature_log import REDACTED, key_writer
from serving.log_skew import LoggedFeature, LoggedRecord, LogSkewReport, compare, id_resolver, same_value
from serving.offline import OfflineTiles
from tests.unit.views import user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = SecretStr("unit-hmac-key-0123456789")
IDS = ["alice", "bob", "carol"]


def logged_as(mode: str) -> FeatureView:
    return replace(user_stats, entity=Entity(name="user", join_key="user_id", log_key=mode))  # type: ignore[arg-type]


def offline() -> OfflineTiles:
    needed = ["user_id", "event_time", "event_type"]
    by_entity = {
        entity: [Tile(to_ms(T0) + h * HOUR, 2 + n, (1 + n, n)) for h in range(n, 48, 3)]
        for n, entity in enumerate(IDS)
    }
    loaded = OfflineTiles(user_stats, 7, by_entity, [to_ms(T0) + (h + 1) * HOUR for h in range(48)])
    # An archive with no events past the closed tiles: the head and the open periods are empty.
    loaded.archive = lambda low, high, pin: (pa.table({c: pa.array([], pa.string()) for c in needed}), None)
    return loaded


def served(tiles: OfflineTiles, entity: str, window_end: datetime, trace: str) -> LoggedRecord:
    """The record a read consistent with Iceberg logs, its key hashed."""
    values = tiles.features(entity, window_end)
    return LoggedRecord(
        trace,
        key_writer(user_stats.entity, KEY)(entity),
        window_end + timedelta(minutes=5),
        window_end,
        tuple(LoggedFeature(name, float(v.value), v.status.value) for name, v in values.items()),
    )


def run(records: list[LoggedRecord], tiles: OfflineTiles) -> LogSkewReport:
    report = LogSkewReport("user_stats", "log", tiles.snapshot_id, read=len(records))
    return compare(user_stats, records, tiles, id_resolver(user_stats, tiles.by_entity, KEY), report)


def test_keys_map_back_as_the_entity_declares():
    hashed = id_resolver(user_stats, IDS, KEY)
    assert hashed(key_writer(user_stats.entity, KEY)("bob")) == "bob"
    assert hashed(key_writer(user_stats.entity, SecretStr("another-key-0123456789"))("bob")) is None
    assert hashed("bob") is None  # a raw id is not a hash of itself
    assert id_resolver(logged_as("plain"), [], None)("dave") == "dave"
    assert id_resolver(logged_as("redact"), IDS, None)(REDACTED) is None


def test_a_hashed_view_needs_the_key():
    with pytest.raises(ConfigError, match="PARITY_SERVING_LOG_HASH_KEY"):
        id_resolver(user_stats, IDS, None)


def test_records_consistent_with_iceberg_are_equal_at_every_window_end():
    tiles = offline()
    records = [
        served(tiles, entity, from_ms(to_ms(T0) + h * HOUR), f"t{h}{entity}")
        for entity in IDS
        for h in (0, 5, 24, 48, 60)  # before any tile, inside, at the last period end, stale
    ]
    report = run(records, tiles)
    assert (report.read, report.compared, report.equal, report.differing, report.unmatched) == (
        15,
        15,
        15,
        0,
        0,
    )
    assert report.ratio == 0.0


def test_a_differing_value_or_status_is_reported_with_its_trace_id():
    tiles = offline()
    end = from_ms(to_ms(T0) + 30 * HOUR)
    good = [served(tiles, entity, end, f"good-{entity}") for entity in IDS]
    bob = served(tiles, "bob", end, "wrong-value")
    wrong_value = replace(
        bob, features=(replace(bob.features[0], value=bob.features[0].value + 1), *bob.features[1:])
    )
    carol = served(tiles, "carol", end, "served-error")
    error = replace(carol, features=tuple(replace(f, status="error") for f in carol.features))
    rounding = replace(
        bob,
        trace_id="rounding",
        features=(replace(bob.features[2], value=bob.features[2].value * (1 + 1e-12)),),
    )
    report = run([*good, wrong_value, error, rounding], tiles)
    assert (report.compared, report.equal, report.differing) == (6, 4, 2)
    assert [e["trace_id"] for e in report.examples] == ["wrong-value", "served-error"]
    (name,) = report.examples[0]["features"]
    assert name == bob.features[0].name
    assert report.examples[0]["features"][name]["served"] == [bob.features[0].value + 1, "present"]
    assert report.ratio == pytest.approx(2 / 6)


def test_keys_that_do_not_map_and_unknown_features_are_unmatched():
    tiles = offline()
    end = from_ms(to_ms(T0) + 30 * HOUR)
    record = served(tiles, "alice", end, "t")
    unknown_id = replace(record, entity_key=key_writer(user_stats.entity, KEY)("not-offline"))
    redacted = replace(record, entity_key=REDACTED)
    renamed = replace(record, features=(LoggedFeature("gone_7d", 1.0, "present"),))
    report = run([record, unknown_id, redacted, renamed], tiles)
    assert (report.read, report.compared, report.equal, report.unmatched) == (4, 1, 1, 3)
    assert report.ratio == 0.0


def test_same_value():
    assert same_value(3.0, 3)
    assert same_value(0.1 + 0.2, 0.3)
    assert not same_value(1.0, 1.0001)
    assert same_value(None, None) and not same_value(None, 0.0)
    assert same_value(float("nan"), float("nan")) and not same_value(float("nan"), 1.0)


def test_from_log_refuses_the_periodic_and_gauge_flags(capsys):
    assert cli.main(["skew", "user_stats", "--from-log", "--every", "60s"]) == 1
    assert "--from-log runs once" in capsys.readouterr().err


def test_since_needs_a_utc_offset(capsys):
    with pytest.raises(SystemExit):
        cli.main(["skew", "user_stats", "--from-log", "--since", "2026-01-01T00:00"])
    assert "no UTC offset" in capsys.readouterr().err
