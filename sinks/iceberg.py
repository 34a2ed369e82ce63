"""The offline store: Iceberg tables of tiles and of tile-period progress.

Flink's own Iceberg sink writes these tables from the job and commits when a
checkpoint completes, so the offline side is exactly-once. This module owns
their names and schemas and creates them through pyiceberg, on the same JDBC
catalog (same catalog name) that the Flink job uses.

Tables, in the configured namespace:
- ``<view>_v<version>_tiles``: one row per (entity, tile_start), partitioned
  by day(tile_start). Columns: the join key, tile_start, tile_end (timestamptz,
  UTC), events, then one column per aggregation.
- ``<view>_v<version>_progress``: one row per closed tile period (tile_start,
  tile_end, entities, events). Its newest tile_end is the view's completeness
  watermark on the offline side.
- ``<view>_v<version>_raw``: every decoded source event, late ones included,
  with its Kafka partition and offset, partitioned by day(event_time). History
  beyond Kafka's retention, and the default source of replay.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from features.definition import AggKind, FeatureView
from parity.config import IcebergConfig
from parity.errors import ConfigError
from schemas import avro

log = logging.getLogger(__name__)


def tiles_table(view: FeatureView) -> str:
    return f"{view.qualified_name}_tiles"


def progress_table(view: FeatureView) -> str:
    return f"{view.qualified_name}_progress"


def raw_table(view: FeatureView) -> str:
    return f"{view.qualified_name}_raw"


def staging_table(view: FeatureView, run_id: str, kind: str) -> str:
    """A replay run's staging table (``kind`` is tiles or progress), in the view's namespace."""
    return f"{view.qualified_name}_replay_{run_id}_{kind}"


def is_staging_table(view: FeatureView, name: str) -> bool:
    """Whether a table name is a staging table of some replay run of the view."""
    pattern = rf"{re.escape(view.qualified_name)}_replay_[0-9a-f]+_(tiles|progress)"
    return re.fullmatch(pattern, name) is not None


def completeness_ms(progress: Table) -> int | None:
    """The offline completeness watermark: the newest closed period's end in the progress table."""
    # Imported here: readers that only need the table names and the catalog
    # (serving.progress) must not need pyarrow.
    import pyarrow as pa
    import pyarrow.compute as pc

    ends = progress.scan(selected_fields=("tile_end",)).to_arrow().column(0)
    newest = pc.max(ends.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())).as_py() if len(ends) else None
    return int(newest) if newest is not None else None


def open_catalog(cfg: IcebergConfig) -> Catalog:
    """The shared catalog: the JDBC one (created on first use, its folder and tables) or the REST one.

    Raises:
        ConfigError: the catalog cannot be opened (bad URI, driver or unreachable server).
    """
    if cfg.catalog_type == "rest":
        return _open_rest_catalog(cfg)
    if cfg.catalog_uri.startswith("sqlite:///"):
        Path(cfg.catalog_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if cfg.warehouse.startswith("file://"):
        Path(cfg.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    props = {"uri": cfg.catalog_uri, "warehouse": cfg.warehouse}
    try:
        return SqlCatalog(cfg.catalog_name, **props)
    except Exception as exc:  # pyiceberg raises driver-specific errors here
        raise ConfigError(f"cannot open the Iceberg catalog at {cfg.catalog_uri}: {exc}") from exc


def s3_properties(cfg: IcebergConfig) -> dict[str, str]:
    """pyiceberg's FileIO properties for the object storage (its names, not Java's)."""
    props = {"s3.region": cfg.s3_region}
    if cfg.s3_endpoint:
        props["s3.endpoint"] = cfg.s3_endpoint
    if cfg.s3_access_key_id and cfg.s3_secret_access_key:
        props["s3.access-key-id"] = cfg.s3_access_key_id
        props["s3.secret-access-key"] = cfg.s3_secret_access_key.get_secret_value()
    # pyiceberg has no path-style switch: path style is virtual addressing turned off.
    props["s3.force-virtual-addressing"] = str(not cfg.s3_path_style_access).lower()
    return props


def _open_rest_catalog(cfg: IcebergConfig) -> Catalog:
    # Imported here: the JDBC catalog's users need no HTTP client.
    from pyiceberg.catalog.rest import RestCatalog

    try:
        # The server answers /v1/config at once, so an unreachable one fails here.
        return RestCatalog(cfg.catalog_name, uri=cfg.rest_uri, warehouse=cfg.warehouse, **s3_properties(cfg))
    except Exception as exc:  # pyiceberg raises requests' and its own errors here
        raise ConfigError(f"cannot open the Iceberg REST catalog at {cfg.rest_uri}: {exc}") from exc


def tiles_schema(view: FeatureView) -> Schema:
    fields = [
        NestedField(1, view.entity.join_key, StringType(), required=True),
        NestedField(2, "tile_start", TimestamptzType(), required=True),
        NestedField(3, "tile_end", TimestamptzType(), required=True),
        NestedField(4, "events", LongType(), required=True),
    ]
    for offset, agg in enumerate(view.aggregations):
        if agg.kind is AggKind.COUNT:
            fields.append(NestedField(5 + offset, agg.name, LongType(), required=True))
        else:
            fields.append(NestedField(5 + offset, agg.name, DoubleType(), required=agg.kind is AggKind.SUM))
    return Schema(*fields, identifier_field_ids=[1, 2])


def progress_schema() -> Schema:
    return Schema(
        NestedField(1, "tile_start", TimestamptzType(), required=True),
        NestedField(2, "tile_end", TimestamptzType(), required=True),
        NestedField(3, "entities", LongType(), required=True),
        NestedField(4, "events", LongType(), required=True),
    )


def raw_schema(view: FeatureView) -> Schema:
    """The reader schema's fields (timestamp-millis as timestamptz), then Kafka partition and offset."""
    fields = []
    for index, (name, sql_type) in enumerate(avro.flink_columns(avro.latest(view.source.schema)), start=1):
        base = sql_type.removesuffix(" NOT NULL")
        if base not in _ICEBERG_TYPES:
            raise ConfigError(
                f"{view.name}: source field {name!r} ({base}) has no Iceberg type for the archive"
            )
        fields.append(NestedField(index, name, _ICEBERG_TYPES[base], required=sql_type.endswith("NOT NULL")))
    fields.append(NestedField(len(fields) + 1, "kafka_partition", IntegerType(), required=False))
    fields.append(NestedField(len(fields) + 1, "kafka_offset", LongType(), required=False))
    return Schema(*fields)


def raw_columns(view: FeatureView) -> list[str]:
    return [f.name for f in raw_schema(view).fields]


_ICEBERG_TYPES: dict[str, IcebergType] = {
    "STRING": StringType(),
    "BOOLEAN": BooleanType(),
    "INT": IntegerType(),
    "BIGINT": LongType(),
    "FLOAT": FloatType(),
    "DOUBLE": DoubleType(),
    "BYTES": BinaryType(),
    "TIMESTAMP(3)": TimestamptzType(),
}


def ensure_tables(cfg: IcebergConfig, view: FeatureView) -> tuple[Table, Table]:
    """Create the view's tables when missing; return (tiles, progress). Safe to call again."""
    catalog = open_catalog(cfg)
    _ensure_namespace(catalog, cfg.namespace)
    tiles = _ensure(
        catalog,
        f"{cfg.namespace}.{tiles_table(view)}",
        tiles_schema(view),
        PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="tile_day")),
    )
    progress = _ensure(catalog, f"{cfg.namespace}.{progress_table(view)}", progress_schema(), PartitionSpec())
    raw = raw_schema(view)
    event_time = raw.find_field(view.source.event_time_field).field_id
    _ensure(
        catalog,
        f"{cfg.namespace}.{raw_table(view)}",
        raw,
        PartitionSpec(
            PartitionField(source_id=event_time, field_id=1000, transform=DayTransform(), name="event_day")
        ),
        ARCHIVE_PROPERTIES,
    )
    return tiles, progress


def _ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create the namespace unless it exists; two jobs starting at once may both try."""
    if catalog.namespace_exists(namespace):
        return
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception:
        # The SQL catalog reports a lost creation race as the database's integrity error.
        if not catalog.namespace_exists(namespace):
            raise


# Iceberg's Java writer (the job's) compresses Parquet with gzip unless a table says
# otherwise; the catalogs that create tables with zstd do so by writing this property,
# and a table pyiceberg creates has none. zstd costs the job a fraction of gzip's CPU.
TABLE_PROPERTIES = {"write.parquet.compression-codec": "zstd"}
# The archive takes a row per event, the job's widest write. Dictionary encoding was a
# third of the CPU the job's Parquet writers spent: the offsets, times and ids fill each
# page's dictionary and then re-encode plain anyway; zstd still packs repeated strings.
ARCHIVE_PROPERTIES = {"parquet.enable.dictionary": "false"}


def _ensure(
    catalog: Catalog, identifier: str, schema: Schema, spec: PartitionSpec, own: dict[str, str] | None = None
) -> Table:
    """Load or create a table; a newer schema's added fields are added to an existing table.

    Added Avro fields are BACKWARD compatible, so the archive evolves with the
    reader schema instead of failing the job that writes it.
    """
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        table = None
    if table is not None:
        missing = {f.name for f in schema.fields} - {f.name for f in table.schema().fields}
        if missing:
            log.info("adding columns %s to %s", sorted(missing), identifier)
            with table.update_schema() as update:
                update.union_by_name(schema)
        wanted = {**TABLE_PROPERTIES, **(own or {})}
        unset = {k: v for k, v in wanted.items() if table.properties.get(k) is None}
        if unset:
            with table.transaction() as tx:
                tx.set_properties(unset)
        return table
    try:
        properties = {"format-version": "2", **TABLE_PROPERTIES, **(own or {})}
        return catalog.create_table(identifier, schema=schema, partition_spec=spec, properties=properties)
    except TableAlreadyExistsError:  # created meanwhile by another process
        return catalog.load_table(identifier)


def sql_table(cfg: IcebergConfig, name: str) -> str:
    """The table's name in Flink SQL: catalog.namespace.table, quoted."""
    return ".".join(f"`{part}`" for part in (cfg.catalog_name, cfg.namespace, name))
