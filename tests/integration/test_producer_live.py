"""The producer against the real broker and registry."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient

from parity.cli import main
from parity.config import KafkaConfig

pytestmark = pytest.mark.integration


def _line(i: int, **override) -> str:
    event = {
        "event_id": f"e{i}",
        "user_id": "u1",
        "ad_id": "a1",
        "event_type": "impression",
        "event_time": "2026-01-01T00:00:00Z",
        "campaign_id": "c1",
        "country": "FR",
        "cost": 0.1,
    }
    return json.dumps(event | override)


def _messages(topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    if topic not in topics:
        return 0
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": KafkaConfig().bootstrap_servers, "group.id": f"{topic}-check"})
    try:
        total = 0
        for partition in topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_one_invalid_line_names_line_and_field_and_sends_nothing(isolated, tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    lines = [_line(i) for i in range(5)]
    lines[3] = _line(3, event_type="clik")
    path.write_text("\n".join(lines) + "\n")

    code = main(["produce", "--topic", isolated.topic, "--file", str(path)])

    assert code == 1
    err = capsys.readouterr().err
    assert "line 4" in err and "'event_type'" in err and "clik" in err
    assert _messages(isolated.topic) == 0


def test_a_valid_file_is_sent_whole(isolated, tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_line(i) for i in range(5)) + "\n")
    assert main(["produce", "--topic", isolated.topic, "--file", str(path)]) == 0
    assert "sent 5, failed 0" in capsys.readouterr().out
    assert _messages(isolated.topic) == 5
