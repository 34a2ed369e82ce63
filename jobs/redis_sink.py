"""The job's writes to Redis in the JVM: the 'parity-redis' tables of ``jobs/jvm``.

Three insert-only tables, one per kind of row, each written by its own Flink
sink with the same Lua scripts as ``sinks.redis.RedisTileSink``: tiles,
completeness rows and late rows. Key names come from ``sinks.redis_layout``
and the window layout from ``sinks.redis_windows``, passed as options, so the
JVM side rebuilds neither.

The guarantee is the Python writer's: rows are batched (``PARITY_FLINK_REDIS_BATCH_SIZE``
tiles or ``PARITY_FLINK_REDIS_BATCH_INTERVAL_MS``, whichever comes first) and each
batch is written synchronously, on every watermark and before every checkpoint
barrier, so a completed checkpoint implies its rows are in Redis. A tile
updated several times within one batch is written once, with its newest value.
"""

from __future__ import annotations

from datetime import timedelta

from features.definition import FeatureView
from jobs.compiler import literal, quote
from parity.config import FlinkJobConfig, RedisConfig
from sinks import redis_layout as keys
from sinks.redis_windows import layout_args

TILES, COMPLETENESS, LATE = "parity_redis_tiles", "parity_redis_completeness", "parity_redis_late"
LIVE = "parity_redis_live"
# How often the live tile sink looks for entities due for a write.
LIVE_TICK_MS = 100


def sink_ddl(view: FeatureView, redis: RedisConfig, flink: FlinkJobConfig) -> list[str]:
    """CREATE TEMPORARY TABLE statements for the sinks of ``view``: closed tiles, completeness,
    late rows, and for a view with a ``freshness`` its live tiles.

    Live tiles are the open tiles' running totals, upserted by (entity, tile start)
    and written at most once per ``freshness`` per entity (an entity's first update
    within a tick, ``LIVE_TICK_MS``); their newest event time moves the view's head
    watermark (``sinks.redis_layout.head_key``).

    The login and TLS settings of ``redis`` travel as options: a password file by its path
    (read by the sink at each connect), a password as 'redis.password', whose value Flink
    prints as ``******`` where it logs options (never log these statements yourself).
    """
    prefix = redis.key_prefix
    common = {
        "connector": "parity-redis",
        "view": view.qualified_name,
        "redis.host": redis.host,
        "redis.port": str(redis.port),
        "redis.db": str(redis.db),
        "redis.socket-timeout": f"{int(redis.socket_timeout_s * 1000)} ms",
        "redis.write-retry": f"{int(redis.write_retry_s * 1000)} ms",
        "redis.wait-replicas": str(redis.wait_replicas),
        "key.epoch": keys.epoch_key(prefix, view),
        "key.tiles": keys.entity_key(prefix, view, ""),
        "key.windows": keys.window_key(prefix, view, ""),
        "key.due": keys.due_key(prefix, view),
        "layout": ",".join(str(a) for a in layout_args(view)),
        "tile-ms": str(view.tile_ms),
        "horizon-ms": str(_ms(view.longest_window + view.prune_margin)),
        "staleness-ms": str(_ms(view.max_staleness)),
        "batch.size": str(flink.redis_batch_size),
        "batch.interval": f"{flink.redis_batch_interval_ms} ms",
    }
    if redis.mode == "cluster":
        common["redis.mode"] = "cluster"
        common["redis.cluster.nodes"] = ",".join(f"{host}:{port}" for host, port in redis.seed_nodes())
    if redis.username:
        common["redis.username"] = redis.username
    if redis.password_file is not None:
        common["redis.password-file"] = str(redis.password_file.resolve())
    elif redis.password is not None:
        # Flink hides values of keys containing "password" where it logs configuration;
        # a password file keeps it out of the statement as well.
        common["redis.password"] = redis.password.get_secret_value()
    if redis.tls:
        common["redis.tls"] = "true"
        # Absolute: the task managers read them, from whatever directory they run in.
        files = {
            "redis.tls.ca-file": redis.tls_ca_file,
            "redis.tls.cert-file": redis.tls_cert_file,
            "redis.tls.key-file": redis.tls_key_file,
        }
        common |= {key: str(path.resolve()) for key, path in files.items() if path is not None}
    aggregates = [(quote(a.name), "BIGINT" if a.is_integer else "DOUBLE") for a in view.aggregations]
    tiles = [("entity", "STRING"), ("tile_start_ms", "BIGINT"), ("events", "BIGINT"), *aggregates]
    statements = [
        _table(TILES, tiles, common | {"kind": "tiles"}),
        _table(
            COMPLETENESS,
            [("tile_end_ms", "BIGINT")],
            common | {"kind": "completeness", "key.completeness": keys.completeness_key(prefix, view)},
        ),
        _table(
            LATE,
            [("event_time_s", "BIGINT"), ("kafka_partition", "INT"), ("kafka_offset", "BIGINT")],
            common
            | {
                "kind": "late",
                "key.late-events": keys.late_events_key(prefix, view),
                "key.late-counted": keys.late_counted_key(prefix, view),
            },
        ),
    ]
    if view.freshness is not None:
        live = [*tiles, ("newest_event_time", "TIMESTAMP(3)")]
        options = common | {
            "kind": "live",
            "key.head": keys.head_key(prefix, view),
            # Checked every tick: an entity's first update waits a tick at most, its later
            # ones until it was last written a freshness ago.
            "batch.interval": f"{min(LIVE_TICK_MS, _ms(view.freshness))} ms",
            "live.interval": f"{_ms(view.freshness)} ms",
        }
        statements.append(_table(LIVE, live, options, primary_key=("entity", "tile_start_ms")))
    return statements


def _table(
    name: str, columns: list[tuple[str, str]], options: dict[str, str], primary_key: tuple[str, ...] = ()
) -> str:
    lines = [f"  {column} {kind}" for column, kind in columns]
    if primary_key:
        lines.append(f"  PRIMARY KEY ({', '.join(primary_key)}) NOT ENFORCED")
    body = ",\n".join(lines)
    with_clause = ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())
    return f"CREATE TEMPORARY TABLE {quote(name)} (\n{body}\n) WITH (\n{with_clause}\n)"


def _ms(size: timedelta) -> int:
    return int(size / timedelta(milliseconds=1))
