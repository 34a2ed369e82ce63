"""The limit for the feature job: Flink reading and decoding the same topic into a blackhole.

Runs in the job runtime: ``.venv-job/bin/python bench/decode_only.py --view user_stats --topic T``.
It binds the source exactly as the feature job does (jobs.decode, the parity-avro
format with its dead-letter route) and stops at the topic's current end.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from features.registry import get_view
from jobs.compiler import compile_view, quote
from jobs.decode import decoded_source_statements
from jobs.stream import table_environment
from parity.config import FlinkJobConfig, KafkaConfig, RegistryConfig
from schemas import avro


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--view", default="user_stats")
    p.add_argument("--topic", required=True)
    p.add_argument("--group-id", required=True)
    args = p.parse_args()
    view = get_view(args.view)
    view = replace(view, source=replace(view.source, topic=args.topic))
    env = table_environment(view, FlinkJobConfig(), streaming=True)
    pipeline = compile_view(view)
    kafka = KafkaConfig()
    source = decoded_source_statements(
        pipeline,
        kafka,
        RegistryConfig(),
        group_id=args.group_id,
        bounded=True,
        dead_letter_topic=kafka.dead_letter_topic,
    )
    for statement in source.statements:
        env.execute_sql(statement)
    columns = avro.flink_columns(avro.latest(view.source.schema))
    body = ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns)
    env.execute_sql(f"CREATE TEMPORARY TABLE sink_blackhole ({body}) WITH ('connector' = 'blackhole')")
    names = ", ".join(quote(name) for name, _ in columns)
    statements = env.create_statement_set()
    statements.add_insert_sql(
        f"INSERT INTO sink_blackhole SELECT {names} FROM {quote(pipeline.source_table)}"
    )
    for insert in source.inserts:
        statements.add_insert_sql(insert)
    statements.execute().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
