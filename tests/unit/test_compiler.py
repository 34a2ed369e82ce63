from dataclasses import replace
from pathlib import Path

import pytest

from features.definition import AggKind, Aggregation
from features.registry import load_views
from features.user_stats import view as user_stats
from jobs.compiler import compile_view, interval, kafka_source_ddl
from parity.config import KafkaConfig, RegistryConfig
from parity.errors import DefinitionError

EXPECTED = Path(__file__).parent / "expected"


def rendered(view):
    pipeline = compile_view(view)
    return f"{pipeline.tile_query};\n\n{pipeline.progress_query};\n"


@pytest.mark.parametrize("name", sorted(load_views()))
def test_compiled_sql_matches_the_committed_snapshot(name):
    # A change here changes what every deployed job computes: update the file on purpose.
    view = load_views()[name]
    expected = (EXPECTED / f"{view.qualified_name}.sql").read_text()
    assert rendered(view) == expected


def test_live_totals_skip_a_backlog_unless_asked():
    # Tiles older than the live state's TTL (2 hours + 5 minutes) by the wall clock.
    horizon = "* 60000 >= (UNIX_TIMESTAMP() - 7500) * 1000"
    assert compile_view(user_stats).live_state_ttl.total_seconds() == 7500
    assert horizon in compile_view(user_stats).live_query
    # Kept, the query is the same but for that one condition.
    lines = compile_view(user_stats).live_query.splitlines(keepends=True)
    assert (
        "".join(line for line in lines if "UNIX_TIMESTAMP" not in line)
        == compile_view(user_stats, live_backlog=True).live_query
    )


def test_tile_query_is_a_tumble_of_the_tile_size():
    sql = compile_view(user_stats).tile_query
    assert "TUMBLE(TABLE `user_stats_v2_events`, DESCRIPTOR(`event_time`), INTERVAL '1' HOUR(2))" in sql
    assert "COUNT(*) FILTER (WHERE event_type = 'click') AS `clicks`" in sql
    assert "GROUP BY `user_id`, window_start, window_end, window_time" in sql


def test_interval_literals_fit_their_precision():
    from datetime import timedelta

    assert interval(timedelta(days=30)) == "INTERVAL '30' DAY(2)"
    assert interval(timedelta(hours=168)) == "INTERVAL '7' DAY(2)"
    assert interval(timedelta(minutes=150)) == "INTERVAL '150' MINUTE(3)"
    assert interval(timedelta(0)) == "INTERVAL '0' DAY(2)"


def test_unknown_field_names_the_schema_file():
    bad = replace(
        user_stats,
        aggregations=(Aggregation("spend", AggKind.SUM, column="price"),),
        derived=(),
        defaults={"spend_1d": 0.0, "spend_7d": 0.0},
    )
    with pytest.raises(DefinitionError, match=r"field 'price'.*schemas/ad_event/v[0-9]+.avsc"):
        compile_view(bad)


def test_source_binding_carries_reader_schema_and_watermark():
    ddl = kafka_source_ddl(
        compile_view(user_stats), KafkaConfig(), RegistryConfig(), group_id="g", bounded=True
    )
    assert "`event_time` TIMESTAMP(3) NOT NULL" in ddl
    assert "WATERMARK FOR `event_time` AS `event_time` - INTERVAL '5' MINUTE(2)" in ddl
    assert "'scan.bounded.mode' = 'latest-offset'" in ddl
    assert "'avro-confluent.schema'" in ddl
    streaming = kafka_source_ddl(
        compile_view(user_stats), KafkaConfig(), RegistryConfig(), group_id="g", bounded=False
    )
    assert "scan.bounded.mode" not in streaming
