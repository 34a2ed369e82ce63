"""Reading JSON-lines events: every line checked, errors name the file, line and field."""

import json
from datetime import datetime, timezone

import pytest

from parity.errors import InputError
from producer.generate import GeneratorConfig, generate
from producer.records import parse_timestamp, read_jsonl, write_jsonl
from schemas.avro import SchemaVersion, latest

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


def _schema(tmp_path, fields):
    text = json.dumps({"type": "record", "name": "Probe", "namespace": "test", "fields": fields})
    return SchemaVersion("probe", 1, tmp_path / "v1.avsc", text)


def test_lone_surrogate_is_refused_with_its_field(tmp_path):
    # JSON's \ud800 escape decodes to a str that UTF-8 cannot encode.
    path = _file(tmp_path, [GOOD, json.dumps(GOOD).replace('"user-1"', '"u\\ud800"')])
    with pytest.raises(InputError) as caught:
        read_jsonl(path, SCHEMA)
    assert str(caught.value) == (
        "events.jsonl line 2: field 'user_id': 'u\\ud800' cannot be encoded as UTF-8: "
        "a lone surrogate at position 1"
    )


def test_encoding_failures_name_their_field(tmp_path):
    # A wider union is left to fastavro, whose validation accepts any str there.
    schema = _schema(
        tmp_path,
        [{"name": "id", "type": "string"}, {"name": "tag", "type": ["null", "long", "string"]}],
    )
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "a", "tag": 3}\n{"id": "b", "tag": "t\\udfff"}\n')
    with pytest.raises(InputError) as caught:
        read_jsonl(path, schema)
    text = str(caught.value)
    assert text.startswith("events.jsonl line 2: field 'tag': cannot be encoded with probe v1: ")
    assert "surrogates not allowed" in text


def test_float_out_of_32_bit_range_is_refused(tmp_path):
    schema = _schema(tmp_path, [{"name": "ratio", "type": "float"}])
    path = _file(tmp_path, [{"ratio": 0.5}, {"ratio": 1e39}])
    with pytest.raises(InputError, match=r"line 2: field 'ratio': 1e\+39 is out of range for a 32-bit float"):
        read_jsonl(path, schema)


@pytest.mark.parametrize(("avro_type", "value"), [("int", 2**31), ("int", -(2**31) - 1), ("long", 2**63)])
def test_integer_out_of_range_is_refused(tmp_path, avro_type, value):
    schema = _schema(tmp_path, [{"name": "n", "type": avro_type}])
    with pytest.raises(
        InputError, match=rf"line 1: field 'n': {value} is out of range for an Avro {avro_type}"
    ):
        read_jsonl(_file(tmp_path, [{"n": value}]), schema)


def test_fastavro_validation_errors_stay_on_one_line(tmp_path):
    schema = _schema(tmp_path, [{"name": "tag", "type": ["null", "long", "boolean"]}])
    with pytest.raises(InputError) as caught:
        read_jsonl(_file(tmp_path, [{"tag": "x"}]), schema)
    assert str(caught.value).startswith("events.jsonl line 1: not valid for probe v1: [ ")
    assert "\n" not in str(caught.value)


def test_first_bad_lines_are_all_named_on_one_line(tmp_path):
    lines = [GOOD] + [{**GOOD, "cost": "x"}] * 7 + ["{", GOOD]
    with pytest.raises(InputError) as caught:
        read_jsonl(_file(tmp_path, lines), SCHEMA)
    text = str(caught.value)
    assert text.startswith("events.jsonl line 2: field 'cost': 'x' is a string")
    assert [f"line {n}:" in text for n in range(2, 10)] == [True] * 5 + [False] * 3
    assert text.endswith("; and 3 more bad lines")
    assert "\n" not in text
