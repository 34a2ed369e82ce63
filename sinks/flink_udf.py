"""Flink-side adapters: vectorized Python functions that hand tile rows to RedisTileSink.

Tiles reach Python in Arrow batches (one call per batch, not per row). Each
call writes its batch synchronously and returns only after Redis has
acknowledged it. Flink finishes every in-flight Python bundle before a
checkpoint, so once a checkpoint completes, every tile before it is in Redis:
at-least-once, and idempotent by RedisTileSink's version guard.

A write that finds Redis unreachable or slow is retried, whole, with bounded
backoff (``sinks.retry``, for up to ``RedisConfig.write_retry_s``), so a
short outage only delays the batch; past that the job fails and restarts
from its checkpoint. Each function says why its write may be repeated.

This is the only module of sinks/ that imports PyFlink.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd
import redis
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from features.registry import get_view
from parity.config import RedisConfig
from parity.errors import SinkError
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from sinks.retry import Backoff, retrying

log = logging.getLogger(__name__)

T = TypeVar("T")


class _RedisFunction(ScalarFunction):  # type: ignore[misc]
    """Holds what is pickled to the workers: the view's name and the Redis settings."""

    def __init__(self, view_name: str, redis_settings: dict[str, Any]) -> None:
        self._view_name = view_name
        self._redis_settings = redis_settings
        self._sink: RedisTileSink | None = None

    def open(self, function_context: FunctionContext) -> None:
        self._view = get_view(self._view_name)
        cfg = RedisConfig(**self._redis_settings)
        self._backoff = Backoff(budget_s=cfg.write_retry_s)
        self._sink = RedisTileSink(self._view, cfg)
        self._sink.open()
        self._metrics = function_context.get_metric_group().add_group(
            "parity_view", self._view.qualified_name
        )
        # Retries mean Redis is unreachable or slow right now; errors mean the retries ran
        # out and the job fails.
        self._retries = self._metrics.counter("redis_write_retries")
        self._errors = self._metrics.counter("redis_write_errors")

    def _write(self, write: Callable[[RedisTileSink], T], what: str) -> T:
        """Run one idempotent write, retried through a short outage."""
        sink = self._require_sink()
        try:
            return retrying(
                lambda: write(sink),
                self._backoff,
                what=f"{self._view.qualified_name}: {what}",
                on_retry=self._retries.inc,
            )
        except SinkError:
            # The job fails and restarts from its last checkpoint; the rows are written again.
            self._errors.inc()
            raise

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _require_sink(self) -> RedisTileSink:
        assert self._sink is not None, "open() was not called"
        return self._sink


class RedisTiles(_RedisFunction):
    """eval(entity, tile_start_ms, tile_end_ms, events, *aggregates) -> events written per row."""

    def open(self, function_context: FunctionContext) -> None:
        super().open(function_context)
        self._applied = self._metrics.counter("redis_tiles_applied")
        self._refused = self._metrics.counter("redis_tiles_refused_stale")
        self._batches = self._metrics.counter("redis_batches")
        self._write_ms = self._metrics.distribution("redis_write_ms")

    def eval(
        self, entity: pd.Series, start: pd.Series, end: pd.Series, events: pd.Series, *values: pd.Series
    ) -> pd.Series:
        columns = [v.tolist() for v in values]
        ints = [a.is_integer for a in self._view.aggregations]
        rows = [
            TileRow(
                entity=str(entity.iat[i]),
                tile_start_ms=int(start.iat[i]),
                tile_end_ms=int(end.iat[i]),
                events=int(events.iat[i]),
                values=tuple(_value(col[i], is_int) for col, is_int in zip(columns, ints, strict=True)),
            )
            for i in range(len(entity))
        ]
        began = time.monotonic()
        # Safe to repeat: a tile is set, never incremented, and one with as many events
        # as the stored one is the same tile (the guard refuses only fewer). The window
        # values are recomputed from the tiles.
        result = self._write(lambda sink: sink.write(rows), f"{len(rows)} tiles")
        self._write_ms.update(int((time.monotonic() - began) * 1000))
        self._applied.inc(result.applied)
        self._refused.inc(result.refused_stale)
        self._batches.inc()
        return events


class RedisCompleteness(_RedisFunction):
    """eval(tile_end_ms) -> tile_end_ms; moves the view's completeness watermark forward
    and refreshes the window values due by then (RedisTileSink.advance_completeness)."""

    def open(self, function_context: FunctionContext) -> None:
        super().open(function_context)
        # Start from the stored watermark, so a restart does not report a lag of 0 until
        # the next tile period closes.
        self._newest_ms = self._write(_stored_completeness, "reading the completeness watermark")
        # How far the view's completeness lags the wall clock: a stalled or lagging job.
        self._metrics.gauge("completeness_lag_ms", self._lag_ms)
        # Entities whose precomputed window values were merged again as their windows moved.
        self._refreshed = self._metrics.counter("redis_windows_refreshed")

    def eval(self, tile_end_ms: pd.Series) -> pd.Series:
        if len(tile_end_ms):
            newest = int(tile_end_ms.max())
            # Safe to repeat: the watermark only moves forward, and a refresh recomputes
            # window values from the tiles.
            self._refreshed.inc(self._write(lambda sink: sink.advance_completeness(newest), "completeness"))
            self._newest_ms = newest if self._newest_ms is None else max(newest, self._newest_ms)
        return tile_end_ms

    def _lag_ms(self) -> int:
        if self._newest_ms is None:
            return 0
        return max(0, int(time.time() * 1000) - self._newest_ms)


class LateEvents(_RedisFunction):
    """eval(event_time_s, kafka_partition, kafka_offset) for rows whose tile had closed: count
    them, log them, keep a total in Redis.

    The Redis total counts each late row once (RedisTileSink.count_late): rows
    read again after a restore, or a write retried after Redis had in fact
    applied it, add nothing. It relies on each partition's rows arriving here in
    offset order, which the job's forward-chained path from the source keeps (the
    late-count contract in sinks.redis_layout). The Flink counter and the log
    count what this run read, repeats included, and restart from zero with the job.
    """

    def eval(self, event_time_s: pd.Series, partition: pd.Series, offset: pd.Series) -> pd.Series:
        count = len(event_time_s)
        if count:
            self._late.inc(count)
            positions = list(zip(partition.tolist(), offset.tolist(), strict=True))
            # Safe to repeat: rows at or below their partition's counted offset are skipped.
            total = self._write(lambda sink: sink.count_late(positions), "late-event count")
            oldest = datetime.fromtimestamp(int(event_time_s.min()), tz=UTC).isoformat()
            log.warning(
                "%s: %d late events dropped from streaming tiles (oldest %s; %d so far); "
                "they are in the raw archive: replay their range to correct the offline store",
                self._view.qualified_name,
                count,
                oldest,
                total,
            )
        return event_time_s

    def open(self, function_context: FunctionContext) -> None:
        super().open(function_context)
        self._late = self._metrics.counter("late_events")


def _stored_completeness(sink: RedisTileSink) -> int | None:
    try:
        return sink.completeness_ms()
    except redis.RedisError as exc:
        raise SinkError(f"Redis did not answer for the completeness watermark: {exc}") from exc


def _value(raw: Any, is_int: bool) -> int | float | None:
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        return None
    return int(raw) if is_int else float(raw)


def redis_tiles_udf(view_name: str, redis: RedisConfig) -> Any:
    return udf(RedisTiles(view_name, _settings(redis)), result_type=DataTypes.BIGINT(), func_type="pandas")


def late_events_udf(view_name: str, redis: RedisConfig) -> Any:
    return udf(LateEvents(view_name, _settings(redis)), result_type=DataTypes.BIGINT(), func_type="pandas")


def redis_completeness_udf(view_name: str, redis: RedisConfig) -> Any:
    return udf(
        RedisCompleteness(view_name, _settings(redis)), result_type=DataTypes.BIGINT(), func_type="pandas"
    )


def _settings(cfg: RedisConfig) -> dict[str, Any]:
    # The password stays a SecretStr (it pickles as one), so the settings' repr never shows it.
    return cfg.model_dump()
