"""The synthetic event generator: determinism, bounds and bounded disorder."""

from datetime import datetime, timedelta, timezone

import pytest

from parity.errors import InputError
from producer.generate import VIEW_MAX_OUT_OF_ORDERNESS, GeneratorConfig, generate
from producer.records import check_record
from schemas.avro import latest

CFG = GeneratorConfig(users=50, events=5000, seed=11, span=timedelta(days=3))


@pytest.fixture(scope="module")
def events():
    return generate(CFG)


def test_same_seed_same_events(events):
    assert generate(CFG) == events


def test_other_seed_other_events(events):
    assert generate(GeneratorConfig(users=50, events=5000, seed=12, span=timedelta(days=3))) != events


def test_counts_users_and_span(events):
    assert len(events) == CFG.events
    assert {e["user_id"] for e in events} == {f"user-{i:02d}" for i in range(CFG.users)}
    for e in events:
        assert e["event_time"].tzinfo is not None and e["event_time"].utcoffset() == timedelta(0)
        assert CFG.start <= e["event_time"] < CFG.start + CFG.span


def test_event_ids_unique(events):
    assert len({e["event_id"] for e in events}) == len(events)


def test_events_are_valid_avro(events):
    schema = latest("ad_event")
    for e in events[:500]:
        assert check_record(e, schema) == e


def test_users_have_uneven_activity(events):
    per_user: dict[str, int] = {}
    for e in events:
        per_user[e["user_id"]] = per_user.get(e["user_id"], 0) + 1
    assert max(per_user.values()) > 10 * min(per_user.values())


def test_clicks_share_and_cost(events):
    clicks = [e for e in events if e["event_type"] == "click"]
    impressions = [e for e in events if e["event_type"] == "impression"]
    assert 0.07 < len(clicks) / len(events) < 0.13
    assert all(e["cost"] >= 0 for e in events)
    assert min(c["cost"] for c in clicks) > max(i["cost"] for i in impressions)


def _lateness(events):
    """How far each event is behind the newest event produced before it."""
    newest = None
    behind = []
    for e in events:
        t = e["event_time"]
        behind.append(max(newest - t, timedelta(0)) if newest else timedelta(0))
        newest = max(newest, t) if newest else t
    return behind


def test_disorder_share_and_bound():
    cfg = GeneratorConfig(users=100, events=20_000, seed=3, out_of_order_share=0.1)
    behind = _lateness(generate(cfg))
    late = [b for b in behind if b > timedelta(0)]
    # A late event that no newer event overtakes stays in order, so the share is a ceiling.
    assert 0.05 < len(late) / len(behind) <= 0.1
    assert max(late) <= cfg.max_disorder < VIEW_MAX_OUT_OF_ORDERNESS


def test_no_disorder_when_share_is_zero():
    behind = _lateness(generate(GeneratorConfig(events=3000, out_of_order_share=0.0)))
    assert all(b == timedelta(0) for b in behind)


def test_fewer_events_than_users():
    assert len({e["user_id"] for e in generate(GeneratorConfig(users=200, events=10))}) == 10


def test_zero_events():
    assert generate(GeneratorConfig(events=0)) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"users": 0}, "users must be at least 1"),
        ({"events": -1}, "events must be 0 or more"),
        ({"start": datetime(2026, 1, 1)}, "timezone-aware UTC"),
        ({"start": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))}, "timezone-aware UTC"),
        ({"span": timedelta(0)}, "span"),
        ({"out_of_order_share": 1.5}, "out_of_order_share must be between 0 and 1"),
        ({"click_share": -0.1}, "click_share"),
        ({"max_disorder": timedelta(minutes=5)}, "max_out_of_orderness"),
        ({"countries": ()}, "countries"),
    ],
)
def test_invalid_config(changes, message):
    with pytest.raises(InputError, match=message):
        GeneratorConfig(**changes)
