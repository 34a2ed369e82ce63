"""Reading JSON-lines events: every line checked, errors name the file, line and field."""

import json
from datetime import datetime, timezone

import pytest

from parity.errors import InputError
from producer.generate import GeneratorConfig, generate
from producer.records import parse_timestamp, read_jsonl, write_jsonl
from schemas.avro import latest

SCHEMA = latest("ad_event")
GOOD = {
    "event_id": "e-1",
    "user_id": "user-1",
    "ad_id": "ad-1",
    "event_type": "click",
    "event_time": "2026-01-01T00:00:00.250Z",
    "campaign_id": "campaign-1",
    "country": "DE",
    "cost": 1.5,
}


def _file(tmp_path, lines):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_reads_good_lines(tmp_path):
    events = read_jsonl(
        _file(tmp_path, [GOOD, "", {**GOOD, "event_id": "e-2", "event_time": 1767225600250}]), SCHEMA
    )
    assert [e["event_id"] for e in events] == ["e-1", "e-2"]
    expected = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)
    assert [e["event_time"] for e in events] == [expected, expected]


def test_integer_cost_becomes_float(tmp_path):
    [event] = read_jsonl(_file(tmp_path, [{**GOOD, "cost": 2}]), SCHEMA)
    assert event["cost"] == 2.0 and isinstance(event["cost"], float)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({**GOOD, "event_type": "clik"}, "field 'event_type': 'clik' is not one of ['impression', 'click']"),
        ({k: v for k, v in GOOD.items() if k != "ad_id"}, "field 'ad_id': missing"),
        ({**GOOD, "cost": "1.5"}, "field 'cost': '1.5' is a string, expected a number"),
        ({**GOOD, "cost": True}, "field 'cost': True is a boolean, expected a number"),
        ({**GOOD, "user_id": 7}, "field 'user_id': 7 is an integer, expected a string"),
        (
            {**GOOD, "event_time": "2026-01-01T00:00:00"},
            "field 'event_time': '2026-01-01T00:00:00' has no timezone",
        ),
        ({**GOOD, "event_time": "yesterday"}, "field 'event_time': 'yesterday' is not an ISO-8601"),
        ({**GOOD, "event_time": 1.5}, "field 'event_time': 1.5 is a number"),
        ({**GOOD, "evnet_type": "click"}, "unknown field 'evnet_type'"),
        ([1, 2], "expected a JSON object, got an array"),
        ('{"event_id": "e-3",', "not valid JSON"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, bad, message):
    path = _file(tmp_path, [GOOD, {**GOOD, "event_id": "e-2"}, bad, GOOD])
    with pytest.raises(InputError) as caught:
        read_jsonl(path, SCHEMA)
    text = str(caught.value)
    assert text.startswith("events.jsonl line 3: ")
    assert message in text


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl", SCHEMA)


def test_write_then_read_round_trips(tmp_path):
    events = generate(GeneratorConfig(users=5, events=200, seed=4))
    path = tmp_path / "gen.jsonl"
    assert write_jsonl(events, path) == 200
    assert read_jsonl(path, SCHEMA) == events
    assert json.loads(path.read_text().splitlines()[0])["event_time"].endswith("Z")


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01T01:00:00+01:00",
        "2026-01-01T00:00:00Z",
        1767225600000,
        datetime(2026, 1, 1, tzinfo=timezone.utc),
    ],
)
def test_timestamps_in_every_accepted_form(value):
    assert parse_timestamp(value) == datetime(2026, 1, 1, tzinfo=timezone.utc)
