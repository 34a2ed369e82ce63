"""The job's source when bad input must never stop it: decode in the JVM, dead-letter the rest.

Flink's ``avro-confluent`` format fails the whole job on one undecodable
record. This binding reads the topic with the ``parity-avro`` format instead
(``jobs/jvm``, a jar in PyFlink's ``lib/``), which never throws: each Kafka
record becomes one row of the *raw* table, either decoded (every reader
field set, ``dlq_reason`` NULL) or rejected (fields NULL, ``dlq_reason`` and
the original bytes set). Then, in SQL:

1. the view named ``pipeline.source_table`` selects the good rows, with the
   columns of ``jobs.compiler.kafka_source_ddl`` and the same watermark, so the
   tile query reads it unchanged;
2. one INSERT writes the bad rows to the dead-letter topic as JSON:
   ``{"reason", "detail", "source_topic", "partition", "offset", "kafka_timestamp",
   "schema_id", "feature_view", "value_base64"}`` (at-least-once, flushed on checkpoints).

Reasons (also the ``reason`` label of the ``parity_decode.dead_letters`` counter,
next to ``parity_decode.decoded``): ``empty_value``, ``wrong_magic_byte``,
``truncated``, ``unknown_schema_id``, ``registry_unavailable``,
``incompatible_writer_schema``, ``not_avro``, ``missing_entity_key``,
``event_time_in_future``, ``event_time_before_1970``, ``record_too_large`` and
``length_out_of_bounds`` (hostile sizes, refused before anything is allocated;
see ``BoundedDecoder`` in jobs/jvm).

Registry trouble: writer schemas are cached by id for the life of the task
manager, so ids seen before keep decoding while the registry is down. A new id
then becomes a dead letter with reason ``registry_unavailable`` after at most
one short request (2 s timeout); for the next 5 s no request is made at all.
Replaying the dead letters once the registry is back recovers them.

Run the decoder alone (inspection, tests, benchmarks):

    python -m jobs.decode --view user_stats --topic ad-events --bounded --sink kafka:decoded
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from features.definition import FeatureView
from jobs.compiler import CompiledPipeline, interval, kafka_source_ddl, literal, quote, scan_options
from parity.config import KafkaConfig, RegistryConfig
from parity.kafka_security import flink_properties
from schemas import avro

if TYPE_CHECKING:
    from pyflink.table import TableEnvironment

log = logging.getLogger("parity.decode")

FORMAT = "parity-avro"
# Columns the format fills for a rejected record (see jobs/jvm RowBuilder).
DEAD_LETTER_COLUMNS = (
    ("dlq_reason", "STRING"),
    ("dlq_detail", "STRING"),
    ("dlq_schema_id", "INT"),
    ("dlq_value", "BYTES"),
)
REASONS = (
    "empty_value",
    "wrong_magic_byte",
    "truncated",
    "unknown_schema_id",
    "registry_unavailable",
    "incompatible_writer_schema",
    "not_avro",
    "missing_entity_key",
    "event_time_in_future",
    "event_time_before_1970",
    "record_too_large",
    "length_out_of_bounds",
)
DEFAULT_MAX_FUTURE = timedelta(days=1)
DEFAULT_REGISTRY_TIMEOUT = timedelta(seconds=2)


@dataclass(frozen=True)
class DecodedSource:
    """The SQL that binds a pipeline's source through the dead-letter decoder.

    Attributes:
        statements: DDL and views to run, in order, before the tile pipeline's own
            statements; afterwards ``pipeline.source_table`` exists.
        inserts: INSERTs to add to the job's statement set (the dead-letter route).
        raw_table: the Kafka table holding good and bad rows.
        dead_letter_table: the sink table of the dead-letter topic.
    """

    statements: tuple[str, ...]
    inserts: tuple[str, ...]
    raw_table: str
    dead_letter_table: str


def _millis(size: timedelta) -> str:
    return f"{int(size.total_seconds() * 1000)} ms"


def decoded_source_statements(
    pipeline: CompiledPipeline,
    kafka: KafkaConfig,
    registry: RegistryConfig,
    *,
    group_id: str,
    bounded: bool,
    dead_letter_topic: str,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
    registry_timeout: timedelta = DEFAULT_REGISTRY_TIMEOUT,
    start_timestamp_ms: int | None = None,
    good_table: str | None = None,
    start_offsets: dict[int, int] | None = None,
) -> DecodedSource:
    """Bind ``pipeline.source_table`` to the view's topic through the ``parity-avro`` format.

    Args:
        pipeline: the compiled view; its source table becomes a view of the good rows.
        kafka: brokers of the source and the dead-letter topic.
        registry: where writer schemas are fetched by id.
        group_id: Kafka consumer group of the source.
        bounded: stop at the topic's current end offsets.
        dead_letter_topic: where rejected records go, as JSON envelopes.
        max_future: an event time later than the wall clock plus this is rejected.
        registry_timeout: connect and response timeout of one registry request.
        start_timestamp_ms: start at the first record with a timestamp at or after it,
            instead of the group's committed offsets (as in ``kafka_source_ddl``).
        good_table: name the view of good rows this instead of ``pipeline.source_table``
            (the streaming job puts its closed-boundary filter in between).
        start_offsets: start at these offsets (partition -> next offset) instead.
    """
    view = pipeline.view
    schema = avro.latest(view.source.schema)
    fields = avro.flink_columns(schema)
    raw = f"{pipeline.source_table}_raw"
    dead = f"{view.qualified_name}_dead_letters"
    event_time = quote(view.source.event_time_field)
    # Decoded fields are NULL on rejected rows, so every column is nullable here.
    columns = [f"  {quote(name)} {sql_type.removesuffix(' NOT NULL')}" for name, sql_type in fields]
    columns += [f"  {quote(name)} {sql_type}" for name, sql_type in DEAD_LETTER_COLUMNS]
    columns += [
        "  `kafka_topic` STRING METADATA FROM 'topic' VIRTUAL",
        "  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL",
        "  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL",
        "  `kafka_timestamp` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL",
        # Rejected rows have a NULL event time and never move the watermark.
        f"  WATERMARK FOR {event_time} AS {event_time} - {interval(view.source.max_out_of_orderness)}",
    ]
    options = {
        "connector": "kafka",
        "topic": view.source.topic,
        **flink_properties(kafka),
        "properties.group.id": group_id,
        "format": FORMAT,
        f"{FORMAT}.url": registry.url,
        f"{FORMAT}.schema": schema.text,
        f"{FORMAT}.key-field": view.entity.join_key,
        f"{FORMAT}.event-time-field": view.source.event_time_field,
        f"{FORMAT}.max-future": _millis(max_future),
        f"{FORMAT}.registry-timeout": _millis(registry_timeout),
        **registry_access_options(registry),
    }
    options |= scan_options(
        bounded=bounded, start_timestamp_ms=start_timestamp_ms, start_offsets=start_offsets
    )
    body = ",\n".join(columns)
    raw_ddl = f"CREATE TEMPORARY TABLE {quote(raw)} (\n{body}\n) WITH (\n{_with(options)}\n)"
    selected = ", ".join(quote(name) for name, _ in fields)
    good_view = (
        f"CREATE TEMPORARY VIEW {quote(good_table or pipeline.source_table)} AS\n"
        f"SELECT {selected}, `kafka_partition`, `kafka_offset`\n"
        f"FROM {quote(raw)}\nWHERE `dlq_reason` IS NULL"
    )
    dead_ddl = (
        f"CREATE TEMPORARY TABLE {quote(dead)} (\n"
        "  `reason` STRING,\n  `detail` STRING,\n  `source_topic` STRING,\n  `partition` INT,\n"
        "  `offset` BIGINT,\n  `kafka_timestamp` TIMESTAMP_LTZ(3),\n  `schema_id` INT,\n"
        "  `feature_view` STRING,\n  `value_base64` BYTES\n"
        ") WITH (\n"
        + _with(
            {
                "connector": "kafka",
                "topic": dead_letter_topic,
                **flink_properties(kafka),
                "format": "json",
                "json.timestamp-format.standard": "ISO-8601",
                "sink.delivery-guarantee": "at-least-once",
            }
        )
        + "\n)"
    )
    insert = (
        f"INSERT INTO {quote(dead)}\n"
        "SELECT `dlq_reason`, `dlq_detail`, `kafka_topic`, `kafka_partition`, `kafka_offset`,"
        f" `kafka_timestamp`, `dlq_schema_id`, {literal(view.qualified_name)}, `dlq_value`\n"
        f"FROM {quote(raw)}\nWHERE `dlq_reason` IS NOT NULL"
    )
    return DecodedSource((raw_ddl, good_view, dead_ddl), (insert,), raw, dead)


def registry_access_options(registry: RegistryConfig) -> dict[str, str]:
    """The decoder's login and TLS options for a secured registry (none for a plain one).

    The login travels in the table's options, as Flink's own avro-confluent format takes it:
    Flink prints the values of 'basic-auth' keys as ``******`` where it logs options, and
    parity never logs its DDL. Files are made absolute: the task managers read them.
    """
    options: dict[str, str] = {}
    if registry.basic_auth_user_info is not None:
        options[f"{FORMAT}.basic-auth.user-info"] = registry.basic_auth_user_info.get_secret_value()
    files = {
        "ssl.ca-file": registry.ca_file,
        "ssl.cert-file": registry.cert_file,
        "ssl.key-file": registry.key_file,
    }
    for key, path in files.items():
        if path is not None:
            options[f"{FORMAT}.{key}"] = str(path.resolve())
    return options


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())


def _sink_ddl(name: str, view: FeatureView, sink: str, kafka: KafkaConfig) -> str:
    fields = avro.flink_columns(avro.latest(view.source.schema))
    body = ",\n".join(
        [f"  {quote(n)} {t.removesuffix(' NOT NULL')}" for n, t in fields]
        + ["  `kafka_partition` INT", "  `kafka_offset` BIGINT"]
    )
    if sink == "blackhole":
        options = {"connector": "blackhole"}
    else:
        options = {
            "connector": "kafka",
            "topic": sink.removeprefix("kafka:"),
            **flink_properties(kafka),
            "format": "json",
            "json.timestamp-format.standard": "ISO-8601",
        }
    return f"CREATE TEMPORARY TABLE {quote(name)} (\n{body}\n) WITH (\n{_with(options)}\n)"


def run(args: argparse.Namespace) -> int:
    """Decode one topic into a sink (and the dead-letter topic); wait for the end when bounded."""
    from features.registry import get_view
    from jobs.compiler import compile_view
    from jobs.stream import table_environment
    from parity.config import FlinkJobConfig

    view = get_view(args.view)
    view = replace(view, source=replace(view.source, topic=args.topic, subject=f"{args.topic}-value"))
    flink = FlinkJobConfig()
    if args.parallelism:
        flink = flink.model_copy(update={"parallelism": args.parallelism})
    env: TableEnvironment = table_environment(view, flink, streaming=True)
    pipeline = compile_view(view)
    kafka, registry = KafkaConfig(), RegistryConfig()
    statements = env.create_statement_set()
    if args.format == FORMAT:
        source = decoded_source_statements(
            pipeline,
            kafka,
            registry,
            group_id=args.group_id,
            bounded=args.bounded,
            dead_letter_topic=args.dead_letter_topic or kafka.dead_letter_topic,
            max_future=timedelta(seconds=args.max_future_s),
        )
        for statement in source.statements:
            env.execute_sql(statement)
        for insert in source.inserts:
            statements.add_insert_sql(insert)
    else:
        env.execute_sql(
            kafka_source_ddl(pipeline, kafka, registry, group_id=args.group_id, bounded=args.bounded)
        )
    sink = f"{view.qualified_name}_decoded"
    env.execute_sql(_sink_ddl(sink, view, args.sink, kafka))
    fields = ", ".join(quote(n) for n, _ in avro.flink_columns(avro.latest(view.source.schema)))
    copy = f"INSERT INTO {quote(sink)}\nSELECT {fields}, `kafka_partition`, `kafka_offset`\n"
    statements.add_insert_sql(copy + f"FROM {quote(pipeline.source_table)}")
    if args.explain:
        print(statements.explain(), flush=True)
        return 0
    result = statements.execute()
    client = result.get_job_client()
    job_id = client.get_job_id() if client is not None else "?"
    print(f"job {job_id} running: decoding {args.topic} with {args.format}", flush=True)
    result.wait()
    runtime_ms = client.get_job_execution_result().result().get_net_runtime() if client is not None else -1
    print(f"job {job_id} finished: net runtime {runtime_ms} ms", flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.decode",
        description="Decode a topic as a view's source does, into a sink, dead-lettering bad records.",
    )
    p.add_argument("--view", required=True, help="feature view whose source binding to use")
    p.add_argument("--topic", required=True, help="topic to read")
    p.add_argument("--group-id", required=True, help="Kafka consumer group")
    p.add_argument("--bounded", action="store_true", help="stop at the topic's current end offsets")
    p.add_argument(
        "--format",
        choices=(FORMAT, "avro-confluent"),
        default=FORMAT,
        help="parity-avro (dead-letters bad records) or Flink's avro-confluent (fails on them)",
    )
    p.add_argument("--dead-letter-topic", help="default PARITY_KAFKA_DEAD_LETTER_TOPIC")
    p.add_argument("--sink", default="blackhole", help="blackhole, or kafka:<topic> for JSON rows")
    p.add_argument("--max-future-s", type=float, default=DEFAULT_MAX_FUTURE.total_seconds())
    p.add_argument("--parallelism", type=int, help="override PARITY_FLINK_PARALLELISM")
    p.add_argument("--explain", action="store_true", help="print the plan and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
