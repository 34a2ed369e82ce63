"""The OpenLineage runs of parity's commands, described from a view (``parity.lineage``).

Here, not beside the transport, because a run's facets need the compiled
pipeline (``jobs.compiler``), the view's tables (``sinks.iceberg``) and its
reader schema (``schemas``). Each run is described only when lineage is on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from features.definition import FeatureView
from jobs.compiler import compile_view
from parity.config import IcebergConfig, KafkaConfig, RedisConfig
from parity.lineage import (
    Column,
    Dataset,
    LineageConfig,
    LineageRun,
    RunSpec,
    iceberg_dataset,
    iso_time,
    kafka_dataset,
    off,
    redis_dataset,
)
from schemas import avro
from sinks import iceberg


def stream_run(
    view: FeatureView,
    kafka: KafkaConfig,
    iceberg_cfg: IcebergConfig,
    redis_cfg: RedisConfig,
    cfg: LineageConfig | None = None,
) -> LineageRun:
    """The streaming job: topic → tiles, progress and raw archive in Iceberg, and Redis."""

    def describe() -> RunSpec:
        tables = _view_tables(iceberg_cfg, view)
        return _spec(
            view,
            "stream",
            "STREAMING",
            sql=compiled_sql(view),
            inputs=(kafka_dataset(kafka, view.source.topic, source_columns(view)),),
            outputs=(
                tables["tiles"],
                tables["progress"],
                tables["raw"],
                redis_dataset(redis_cfg, view.qualified_name),
            ),
        )

    return LineageRun(describe, cfg)


def replay_run(
    view: FeatureView,
    start: datetime,
    end: datetime,
    *,
    source: str,
    to_online: bool,
    topic: str | None = None,
    dry_run: bool = False,
    cfg: LineageConfig | None = None,
) -> LineageRun:
    """A replay of [start, end): the raw archive (or the topic) → the tiles table (and Redis).

    The progress table is not an output: a replay leaves it as the stream wrote it.
    A dry run changes no dataset: it emits nothing.
    """

    def describe() -> RunSpec:
        tables = _view_tables(IcebergConfig(), view)
        if source == "kafka":
            upstream = kafka_dataset(KafkaConfig(), topic or view.source.topic, source_columns(view))
        else:
            upstream = tables["raw"]
        outputs = [tables["tiles"]]
        if to_online:
            outputs.append(redis_dataset(RedisConfig(), view.qualified_name))
        fields = {
            "rangeStart": iso_time(start),
            "rangeEnd": iso_time(end),
            "source": source,
            "toOnline": to_online,
        }
        return _spec(
            view,
            "replay",
            "BATCH",
            sql=compiled_sql(view),
            inputs=(upstream,),
            outputs=tuple(outputs),
            nominal=(start, end),
            run_fields=fields,
        )

    return LineageRun(describe, off() if dry_run else cfg)


def repair_run(
    view: FeatureView,
    iceberg_cfg: IcebergConfig,
    redis_cfg: RedisConfig,
    *,
    dry_run: bool = False,
    cfg: LineageConfig | None = None,
) -> LineageRun:
    """A rebuild of the online store: the Iceberg tiles → Redis. A dry run emits nothing."""

    def describe() -> RunSpec:
        tiles = _view_tables(iceberg_cfg, view)["tiles"]
        return _spec(
            view,
            "repair-online",
            "BATCH",
            inputs=(tiles,),
            outputs=(redis_dataset(redis_cfg, view.qualified_name),),
        )

    return LineageRun(describe, off() if dry_run else cfg)


def _spec(
    view: FeatureView, command: str, processing: Literal["STREAMING", "BATCH"], **details: Any
) -> RunSpec:
    name = view.qualified_name
    return RunSpec(f"{name}.{command}", processing, name, view.version, **details)


def _view_tables(cfg: IcebergConfig, view: FeatureView) -> dict[str, Dataset]:
    """The view's Iceberg tables, by kind, with the columns of their schemas."""
    kinds = {
        "tiles": (iceberg.tiles_table(view), iceberg.tiles_schema(view)),
        "progress": (iceberg.progress_table(view), iceberg.progress_schema()),
        "raw": (iceberg.raw_table(view), iceberg.raw_schema(view)),
    }
    return {
        kind: iceberg_dataset(
            cfg, table, tuple(Column(f.name, str(f.field_type), f.doc) for f in schema.fields)
        )
        for kind, (table, schema) in kinds.items()
    }


def compiled_sql(view: FeatureView) -> str:
    """The view's pipeline SQL exactly as ``parity views <view> --sql`` prints it, final newline included,
    so that ``parity views <view> --sql | sha256sum`` gives the ``parity_view`` facet's hash."""
    pipeline = compile_view(view)
    return f"-- {pipeline.tiles_view}\n{pipeline.tile_query};\n\n-- progress\n{pipeline.progress_query};\n"


def source_columns(view: FeatureView) -> tuple[Column, ...]:
    """The fields of the view's reader schema: the newest version committed, which the registry holds."""
    fields = avro.latest(view.source.schema).parsed["fields"]
    return tuple(Column(f["name"], avro_type(f["type"]), f.get("doc")) for f in fields)


def avro_type(schema: Any) -> str:
    """A short name of an Avro type: ``string``, ``timestamp-millis``, ``enum``, ``union[null, enum]``."""
    if isinstance(schema, list):
        return f"union[{', '.join(avro_type(branch) for branch in schema)}]"
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or avro_type(schema["type"]))
    return str(schema)
