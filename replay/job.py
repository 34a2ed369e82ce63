"""The replay job: the view's compiled tile pipeline in Flink batch mode over [start, end).

Run by ``parity replay`` in the job runtime; it writes the tiles and progress
rows of the range into two staging tables, which the CLI then swaps into the
view's tables in one Iceberg commit. Only the source binding and the runtime
mode differ from the streaming job: the tile query is the same text.

Sources:
- ``iceberg``: the raw archive the streaming job keeps (late events included);
- ``kafka``: the topic, from the first record whose timestamp is at or after
  ``start - max_future`` to the current end. Record timestamps are produce times
  (see ``producer.produce``): an event is produced after it happens, or at most
  the decoder's ``max_future`` before, so no event of the range is earlier in
  the topic; the event-time filter drops the extra records read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from features.registry import get_view
from jobs.compiler import CompiledPipeline, compile_view, iceberg_catalog_ddl, quote
from jobs.decode import DEFAULT_MAX_FUTURE, decoded_source_statements
from jobs.stream import table_environment
from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RegistryConfig
from schemas import avro
from sinks import iceberg

log = logging.getLogger("parity.replay")


def _ts(ms: int) -> str:
    return f"TO_TIMESTAMP_LTZ({ms}, 3)"


def bind_source(
    pipeline: CompiledPipeline,
    source: str,
    start_ms: int,
    end_ms: int,
    iceberg_cfg: IcebergConfig,
    run_id: str,
) -> list[str]:
    """Statements that make ``pipeline.source_table`` the events of [start, end) from the chosen source."""
    view = pipeline.view
    event_time = quote(view.source.event_time_field)
    fields = [name for name, _ in avro.flink_columns(avro.latest(view.source.schema))]
    if source == "iceberg":
        upstream = iceberg.sql_table(iceberg_cfg, iceberg.raw_table(view))
        statements = []
    else:
        # The streaming job's decoder: records it cannot use are skipped here (the streaming
        # job has already dead-lettered them), never a reason to fail the replay.
        kafka_pipeline = replace(pipeline, source_table=f"{pipeline.source_table}_kafka")
        upstream = quote(kafka_pipeline.source_table)
        kafka = KafkaConfig()
        decoded = decoded_source_statements(
            kafka_pipeline,
            kafka,
            RegistryConfig(),
            group_id=f"parity-replay-{run_id}",
            bounded=True,
            dead_letter_topic=kafka.dead_letter_topic,
            start_timestamp_ms=start_ms - int(DEFAULT_MAX_FUTURE.total_seconds() * 1000),
        )
        statements = list(decoded.statements)
    columns = ", ".join(
        f"CAST({quote(f)} AS TIMESTAMP(3)) AS {quote(f)}" if quote(f) == event_time else quote(f)
        for f in fields
    )
    # The archive stores event time as timestamptz; the compiled query reads the source's TIMESTAMP(3).
    window = f"CAST({event_time} AS TIMESTAMP_LTZ(3))" if source == "kafka" else event_time
    statements.append(
        f"CREATE TEMPORARY VIEW {quote(pipeline.source_table)} AS\n"
        f"SELECT {columns} FROM {upstream}\n"
        f"WHERE {window} >= {_ts(start_ms)} AND {window} < {_ts(end_ms)}"
    )
    return statements


def run(args: argparse.Namespace) -> int:
    view = get_view(args.view)
    if args.topic:
        view = replace(view, source=replace(view.source, topic=args.topic, subject=f"{args.topic}-value"))
    iceberg_cfg = IcebergConfig()
    env = table_environment(view, FlinkJobConfig(), streaming=False)
    env.execute_sql(iceberg_catalog_ddl(iceberg_cfg))
    pipeline = compile_view(view)
    for statement in bind_source(pipeline, args.source, args.start, args.end, iceberg_cfg, args.run_id):
        env.execute_sql(statement)
    for statement in pipeline.statements():
        env.execute_sql(statement)
    progress_view = f"{view.qualified_name}_progress"
    env.execute_sql(f"CREATE TEMPORARY VIEW {quote(progress_view)} AS\n{pipeline.progress_query}")

    key = quote(view.entity.join_key)
    aggs = ", ".join(quote(a.name) for a in view.aggregations)
    # Batch mode closes every window at the end of input; keep whole tiles of the range only.
    in_range = f"tile_start >= {_ts(args.start)} AND tile_end <= {_ts(args.end)}"
    statements = env.create_statement_set()
    statements.add_insert_sql(
        f"INSERT INTO {iceberg.sql_table(iceberg_cfg, args.staging_tiles)}\n"
        f"SELECT {key}, tile_start, tile_end, events, {aggs} FROM {quote(pipeline.tiles_view)}\n"
        f"WHERE {in_range}"
    )
    statements.add_insert_sql(
        f"INSERT INTO {iceberg.sql_table(iceberg_cfg, args.staging_progress)}\n"
        f"SELECT tile_start, tile_end, entities, events FROM {quote(progress_view)} WHERE {in_range}"
    )
    statements.execute().wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m replay.job", description=__doc__)
    p.add_argument("--view", required=True)
    p.add_argument("--source", choices=("iceberg", "kafka"), required=True)
    p.add_argument("--start", type=int, required=True, help="epoch ms, tile-aligned")
    p.add_argument("--end", type=int, required=True, help="epoch ms, tile-aligned")
    p.add_argument("--staging-tiles", required=True)
    p.add_argument("--staging-progress", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--topic")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
