"""The dead-letter source binding (jobs.decode) exposes the same source columns as kafka_source_ddl."""

from __future__ import annotations

import re

from jobs.compiler import compile_view, kafka_source_ddl
from jobs.decode import REASONS, decoded_source_statements
from parity.config import KafkaConfig, RegistryConfig
from tests.unit.views import user_stats


def _columns(ddl: str) -> list[str]:
    return re.findall(r"^  `(\w+)` ", ddl, flags=re.MULTILINE)


def _bind(**kwargs):
    pipeline = compile_view(user_stats)
    source = decoded_source_statements(
        pipeline, KafkaConfig(), RegistryConfig(), group_id="g", dead_letter_topic="dlq", **kwargs
    )
    return pipeline, source


def test_good_rows_view_has_the_source_tables_columns_and_watermark():
    pipeline, source = _bind(bounded=True)
    raw_ddl, good_view, dead_ddl = source.statements
    plain = kafka_source_ddl(pipeline, KafkaConfig(), RegistryConfig(), group_id="g", bounded=True)
    selected = re.search(r"SELECT (.*)\n", good_view).group(1)
    assert [c.strip("`") for c in selected.split(", ")] == _columns(plain)
    assert good_view.startswith(f"CREATE TEMPORARY VIEW `{pipeline.source_table}` AS")
    assert "WHERE `dlq_reason` IS NULL" in good_view
    watermark = "WATERMARK FOR `event_time` AS `event_time` - INTERVAL '5' MINUTE(2)"
    assert watermark in raw_ddl and watermark in plain
    assert "`event_time` TIMESTAMP(3),\n" in raw_ddl  # NULL on rejected rows
    for option in (
        "'format' = 'parity-avro'",
        "'parity-avro.key-field' = 'user_id'",
        "'parity-avro.event-time-field' = 'event_time'",
        "'scan.bounded.mode' = 'latest-offset'",
    ):
        assert option in raw_ddl
    assert "'topic' = 'dlq'" in dead_ddl and "'format' = 'json'" in dead_ddl


def test_dead_letters_insert_carries_reason_position_and_bytes():
    _, source = _bind(bounded=False)
    (insert,) = source.inserts
    assert insert.startswith("INSERT INTO `user_stats_v1_dead_letters`")
    for column in ("`dlq_reason`", "`kafka_topic`", "`kafka_partition`", "`kafka_offset`", "`dlq_value`"):
        assert column in insert
    assert "WHERE `dlq_reason` IS NOT NULL" in insert
    assert "scan.bounded.mode" not in source.statements[0]
    assert len(set(REASONS)) == 12


def test_start_timestamp_replaces_group_offsets():
    _, source = _bind(bounded=True, start_timestamp_ms=1_700_000_000_000)
    assert "'scan.startup.timestamp-millis' = '1700000000000'" in source.statements[0]
    assert "group-offsets" not in source.statements[0]
