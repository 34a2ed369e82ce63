"""parity produce: dry runs, file checks before sending, JSON output and exit codes."""

import json

import pytest

from producer import cli
from producer.produce import ProduceSummary
from producer.records import read_jsonl
from schemas.avro import latest


@pytest.fixture
def sends(monkeypatch):
    """Replaces the network side; records what would have been produced."""
    calls = []

    def fake_produce(events, topic, kafka, registry, schema_version=None, **kwargs):
        calls.append((list(events), topic, schema_version))
        failed = 1 if topic == "failing" else 0
        return ProduceSummary(len(events) - failed, failed, 0.5, ["boom"] if failed else [])

    monkeypatch.setattr(cli, "produce_events", fake_produce)
    return calls


def test_dry_run_json_connects_to_nothing(sends, capsys):
    assert cli.main(["--generate", "--events", "300", "--users", "7", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    assert (report["events"], report["users"], report["subject"]) == (300, 7, "ad-events-value")
    assert sends == []


def test_generate_sends_and_prints_summary(sends, capsys):
    assert cli.main(["--generate", "--events", "100", "--topic", "t1", "--seed", "2"]) == 0
    [(events, topic, version)] = sends
    assert (len(events), topic, version) == (100, "t1", latest("ad_event").version)
    assert capsys.readouterr().out.strip() == "sent 100, failed 0, 200 events/s"


def test_failures_exit_1_with_reasons(sends, capsys):
    assert cli.main(["--generate", "--events", "10", "--topic", "failing", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failed"] == 1
    assert "1 of 10 events failed: boom" in captured.err


def test_write_jsonl_then_file_round_trip(sends, tmp_path, capsys):
    path = tmp_path / "gen.jsonl"
    assert (
        cli.main(
            [
                "--generate",
                "--events",
                "50",
                "--start",
                "2026-03-01T00:00Z",
                "--write-jsonl",
                str(path),
                "--dry-run",
            ]
        )
        == 0
    )
    assert sends == []
    assert len(read_jsonl(path, latest("ad_event"))) == 50
    assert cli.main(["--file", str(path), "--topic", "t2"]) == 0
    assert [e["event_id"] for e in sends[0][0]] == [
        json.loads(line)["event_id"] for line in path.read_text().splitlines()
    ]


def test_bad_file_exits_1_and_sends_nothing(sends, tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "e-1", "user_id": "u", "ad_id": "a", "event_type": "clik"}\n')
    assert cli.main(["--file", str(path)]) == 1
    err = capsys.readouterr().err
    cause = "events.jsonl line 1: field 'event_type': 'clik' is not one of"
    assert err.startswith(f"parity produce: error: {cause}")
    assert len(err.strip().splitlines()) == 1
    assert sends == []


def test_unencodable_line_near_the_end_sends_nothing(sends, tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    assert cli.main(["--generate", "--events", "20", "--write-jsonl", str(path), "--dry-run", "--json"]) == 0
    lines = path.read_text().splitlines()
    # JSON allows a lone surrogate in a string; UTF-8, and so Avro, cannot encode it.
    lines[-1] = lines[-1].replace('"user_id":"', '"user_id":"\\udc80', 1)
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli.main(["--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("parity produce: error: events.jsonl line 20: field 'user_id': ")
    assert "lone surrogate" in err
    assert sends == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--file", "x.jsonl", "--seed", "0"], "--seed: generator options, used only with --generate"),
        (["--generate", "--out-of-order", "2"], "out_of_order_share must be between 0 and 1"),
        (["--generate", "--start", "2026-01-01"], "--start: '2026-01-01' has no timezone"),
        (["--generate", "--days", "0"], "--days must be positive"),
        (["--generate", "--schema-version", "99"], "v99.avsc does not exist"),
    ],
)
def test_bad_arguments_exit_1_with_one_line(sends, capsys, argv, message):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sends == []


def test_source_is_required(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--topic", "x"])
    assert exited.value.code == 2
