"""Compiles a feature view into the Flink SQL of its tile pipeline.

The streaming job and the replay job call the same ``compile_view``. Only the
source binding (the DDL of the table named ``source_table``) and the runtime
mode differ, so the tile query text is identical in both modes.

This module builds text only; it imports no PyFlink, so the compiled SQL can
be inspected and snapshot-tested anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from features.definition import AggKind, Aggregation, FeatureView
from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
from parity.errors import ConfigError, DefinitionError
from parity.kafka_security import flink_properties
from schemas import avro


def quote(name: str) -> str:
    """A Flink SQL identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A Flink SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def interval(size: timedelta) -> str:
    """``INTERVAL '7' DAY(1)`` style literal in the coarsest exact unit."""
    seconds = int(size.total_seconds())
    for unit, length in (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60), ("SECOND", 1)):
        if seconds % length == 0:
            count = seconds // length
            # The leading field's precision must hold the digits (SQL defaults to 2).
            return f"INTERVAL '{count}' {unit}({max(2, len(str(count)))})"
    raise DefinitionError(f"duration {size} is not whole seconds")


def _aggregate_sql(agg: Aggregation) -> str:
    where = f" FILTER (WHERE {agg.where})" if agg.where else ""
    if agg.kind is AggKind.COUNT:
        return f"COUNT(*){where}"
    assert agg.column is not None  # checked by Aggregation
    column = f"CAST({quote(agg.column)} AS DOUBLE)"
    if agg.kind is AggKind.SUM:
        # A tile with no matching event sums to 0, never NULL, so tiles merge by plain addition.
        return f"COALESCE(SUM({column}){where}, CAST(0 AS DOUBLE))"
    return f"{agg.kind.name}({column}){where}"


def tile_column_types(view: FeatureView) -> list[tuple[str, str]]:
    """Columns of a tile row, after the entity key and the tile bounds."""
    columns = [("events", "BIGINT NOT NULL")]
    for agg in view.aggregations:
        if agg.kind is AggKind.COUNT:
            columns.append((agg.name, "BIGINT NOT NULL"))
        elif agg.kind is AggKind.SUM:
            columns.append((agg.name, "DOUBLE NOT NULL"))
        else:
            columns.append((agg.name, "DOUBLE"))
    return columns


@dataclass(frozen=True)
class CompiledPipeline:
    """The SQL of one view's tile pipeline, independent of where events come from.

    Attributes:
        source_table: the table the tile query reads; each mode binds it.
        tile_query: one row per (entity, tile) with the partial aggregates;
            ``tile_time`` is the row time, so tiles can be windowed again.
        progress_query: one row per closed tile period over ``tiles_view``;
            its newest ``tile_end`` is the view's completeness watermark.
        late_condition: true for a source row whose tile has already closed
            (the tile's end is at or behind the current watermark), so the
            streaming aggregation drops it. Such rows are counted, and kept
            in the raw archive for replay.
        live_query: the open tiles' running totals, an updating aggregate keyed
            by (entity, tile_start_ms), with each tile's newest event time. It
            reads only rows that are not late, so a row behind the watermark
            never starts a tile's total again from zero; its state lives for
            ``live_state_ttl`` after a tile's last row. Streaming only.

            Unless compiled with ``live_backlog``, it also skips a backlog: rows
            whose tile started more than ``live_state_ttl`` before the wall
            clock. The state's TTL runs on the wall clock, so catching up days
            of events would otherwise keep a total for every (entity, tile) read
            in the last TTL, hundreds of millions of them for a large backlog,
            each of a tile the watermark closes moments later. Such rows reach
            Redis as closed tiles only; a stream read as it happens loses
            nothing, as its open tiles are younger than that.
    """

    view: FeatureView
    source_table: str
    tiles_view: str
    tile_query: str
    progress_query: str
    late_condition: str
    live_query: str = ""
    live_state_ttl: timedelta = timedelta(0)

    def statements(self) -> list[str]:
        """The view definitions to run after the source table exists."""
        return [
            f"CREATE TEMPORARY VIEW {quote(self.tiles_view)} AS\n{self.tile_query}",
        ]


def compile_view(view: FeatureView, *, live_backlog: bool = False) -> CompiledPipeline:
    """Compile a view's tile aggregation. The same text serves streaming and replay.

    ``live_backlog`` keeps live totals for tiles of any age (see ``live_query``).

    Raises:
        DefinitionError: an aggregation names a field the source schema lacks.
    """
    schema = avro.latest(view.source.schema)
    fields = avro.field_names(schema)
    key = view.entity.join_key
    for name in [key, view.source.event_time_field] + [a.column for a in view.aggregations if a.column]:
        if name not in fields:
            raise DefinitionError(
                f"view {view.name!r} uses field {name!r}, which schemas/{schema.name}/v{schema.version}.avsc "
                f"does not have; fields: {sorted(fields)}."
            )
    source_table = f"{view.qualified_name}_events"
    tiles_view = f"{view.qualified_name}_tiles"
    aggregates = ",\n".join(
        ["  COUNT(*) AS events"] + [f"  {_aggregate_sql(a)} AS {quote(a.name)}" for a in view.aggregations]
    )
    tile_query = (
        "SELECT\n"
        f"  {quote(key)},\n"
        "  CAST(window_start AS TIMESTAMP_LTZ(3)) AS tile_start,\n"
        "  CAST(window_end AS TIMESTAMP_LTZ(3)) AS tile_end,\n"
        "  window_time AS tile_time,\n"
        # Epoch milliseconds for the Python sink; tiles are whole minutes, so minute arithmetic is exact.
        "  CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 60000"
        " AS tile_start_ms,\n"
        f"{aggregates}\n"
        f"FROM TABLE(TUMBLE(TABLE {quote(source_table)}, "
        f"DESCRIPTOR({quote(view.source.event_time_field)}), {interval(view.tile)}))\n"
        f"WHERE {quote(key)} IS NOT NULL AND CHAR_LENGTH({quote(key)}) > 0\n"
        f"GROUP BY {quote(key)}, window_start, window_end, window_time"
    )
    progress_query = (
        "SELECT\n"
        "  CAST(window_start AS TIMESTAMP_LTZ(3)) AS tile_start,\n"
        "  CAST(window_end AS TIMESTAMP_LTZ(3)) AS tile_end,\n"
        "  CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', window_end) AS BIGINT) * 60000"
        " AS tile_end_ms,\n"
        "  COUNT(*) AS entities,\n"
        "  SUM(events) AS events\n"
        f"FROM TABLE(TUMBLE(TABLE {quote(tiles_view)}, DESCRIPTOR(tile_time), {interval(view.tile)}))\n"
        "GROUP BY window_start, window_end"
    )
    event_time = quote(view.source.event_time_field)
    tile_minutes = view.tile_ms // 60_000
    # Minute arithmetic is exact (tiles are whole minutes) and stays within INT for centuries.
    tile_end = (
        f"TIMESTAMPADD(MINUTE, TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', {event_time}) "
        f"/ {tile_minutes} * {tile_minutes} + {tile_minutes}, TIMESTAMP '1970-01-01 00:00:00')"
    )
    late_condition = f"{tile_end} <= CURRENT_WATERMARK({event_time})"
    # A tile's state outlives its period plus the allowed lateness, after which the window
    # closes it and its rows are late; one more tile of margin.
    ttl = 2 * view.tile + view.source.max_out_of_orderness
    tile_start = (
        f"CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', {event_time}) / {tile_minutes} "
        f"* {tile_minutes} AS BIGINT) * 60000"
    )
    hint = f"/*+ STATE_TTL('live_rows' = '{int(ttl.total_seconds())} s') */"
    # UNIX_TIMESTAMP() is the wall clock, read again for every row.
    horizon = f"(UNIX_TIMESTAMP() - {int(ttl.total_seconds())}) * 1000"
    backlog = "" if live_backlog else f"    AND {tile_start} >= {horizon}\n"
    # Only quoted identifiers and numbers are interpolated, as in the tile query.
    live_query = (
        "SELECT "  # noqa: S608
        f"{hint}\n"
        f"  {quote(key)},\n"
        "  tile_start_ms,\n"
        f"{aggregates},\n"
        f"  MAX({event_time}) AS newest_event_time\n"
        f"FROM (\n  SELECT *, {tile_start} AS tile_start_ms\n  FROM {quote(source_table)}\n"
        f"  WHERE {quote(key)} IS NOT NULL AND CHAR_LENGTH({quote(key)}) > 0\n"
        # Before the first watermark CURRENT_WATERMARK is NULL and no row is late.
        f"    AND NOT COALESCE({late_condition}, FALSE)\n" + backlog + ") AS live_rows\n"
        f"GROUP BY {quote(key)}, tile_start_ms"
    )
    return CompiledPipeline(
        view, source_table, tiles_view, tile_query, progress_query, late_condition, live_query, ttl
    )


def kafka_source_ddl(
    pipeline: CompiledPipeline,
    kafka: KafkaConfig,
    registry: RegistryConfig,
    *,
    group_id: str,
    bounded: bool,
    table: str | None = None,
    start_timestamp_ms: int | None = None,
) -> str:
    """Bind a table (the pipeline's source table by default) to the view's Kafka topic.

    Streaming reads on from the group's committed offsets (the start of the
    topic for a new group); ``bounded`` stops at the current end offsets;
    ``start_timestamp_ms`` starts at the first record with a timestamp at or
    after it instead. The reader schema is the newest committed version; Flink
    resolves each record's writer schema, fetched by id from the registry, to it.

    Raises:
        ConfigError: the registry is reached over TLS or with a login. This
            binding is Flink's own avro-confluent format, kept for diagnostics
            (``python -m jobs.decode --format avro-confluent``); the job's
            format, parity-avro (``jobs.decode``), takes those settings.
    """
    if registry.uses_tls or registry.basic_auth_user_info is not None:
        raise ConfigError(
            "Flink's avro-confluent format is not given the registry's TLS files or login here; "
            "read a secured registry with the parity-avro format (the default of jobs.decode)"
        )
    view = pipeline.view
    schema = avro.latest(view.source.schema)
    columns = [f"  {quote(name)} {sql_type}" for name, sql_type in avro.flink_columns(schema)]
    columns.append("  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL")
    columns.append("  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL")
    event_time = quote(view.source.event_time_field)
    lag = interval(view.source.max_out_of_orderness)
    columns.append(f"  WATERMARK FOR {event_time} AS {event_time} - {lag}")
    options = {
        "connector": "kafka",
        "topic": view.source.topic,
        **flink_properties(kafka),
        "properties.group.id": group_id,
        "format": "avro-confluent",
        "avro-confluent.url": registry.url,
        "avro-confluent.schema": schema.text,
    }
    options |= scan_options(bounded=bounded, start_timestamp_ms=start_timestamp_ms)
    body = ",\n".join(columns)
    with_clause = ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())
    name = quote(table or pipeline.source_table)
    return f"CREATE TEMPORARY TABLE {name} (\n{body}\n) WITH (\n{with_clause}\n)"


def scan_options(
    *, bounded: bool, start_timestamp_ms: int | None, start_offsets: dict[int, int] | None = None
) -> dict[str, str]:
    """Where a Kafka source starts and stops (see ``kafka_source_ddl``).

    ``start_offsets`` (partition -> next offset to read, every partition named)
    overrides both the group's offsets and ``start_timestamp_ms``.
    """
    if start_offsets is not None:
        listed = ";".join(f"partition:{p},offset:{o}" for p, o in sorted(start_offsets.items()))
        options = {"scan.startup.mode": "specific-offsets", "scan.startup.specific-offsets": listed}
    elif start_timestamp_ms is None:
        options = {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
    else:
        options = {"scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": str(start_timestamp_ms)}
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options


def iceberg_catalog_ddl(cfg: IcebergConfig) -> str:
    """Register the shared Iceberg catalog (JDBC or REST) under the same name pyiceberg uses."""
    options = _rest_catalog_options(cfg) if cfg.catalog_type == "rest" else _jdbc_catalog_options(cfg)
    with_clause = ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())
    return f"CREATE CATALOG {quote(cfg.catalog_name)} WITH (\n{with_clause}\n)"


def _jdbc_catalog_options(cfg: IcebergConfig) -> dict[str, str]:
    options = {
        "type": "iceberg",
        "catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        "uri": cfg.jdbc_uri(),
        "warehouse": cfg.warehouse,
        # V1 adds the iceberg_type column; pyiceberg reads and writes the same tables.
        "jdbc.schema-version": "V1",
    }
    if cfg.catalog_user:
        options["jdbc.user"] = cfg.catalog_user
    if cfg.catalog_password:
        options["jdbc.password"] = cfg.catalog_password.get_secret_value()
    return options


def _rest_catalog_options(cfg: IcebergConfig) -> dict[str, str]:
    options = {
        "type": "iceberg",
        "catalog-type": "rest",
        "uri": cfg.rest_uri,
        "warehouse": cfg.warehouse,
        # Files go straight to object storage (S3FileIO: iceberg-aws-bundle in Flink's lib).
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "client.region": cfg.s3_region,
        "s3.path-style-access": str(cfg.s3_path_style_access).lower(),
    }
    if cfg.s3_endpoint:
        options["s3.endpoint"] = cfg.s3_endpoint
    if cfg.s3_access_key_id and cfg.s3_secret_access_key:
        options["s3.access-key-id"] = cfg.s3_access_key_id
        options["s3.secret-access-key"] = cfg.s3_secret_access_key.get_secret_value()
    return options
