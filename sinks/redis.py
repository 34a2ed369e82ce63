"""The online store writer: tiles into one Redis hash per (view, entity).

Guarantee: at-least-once, made idempotent. A tile's value is *set*, never
incremented, so writing the same tile twice (a retry, a restart from a
checkpoint) leaves the same value. A tile carrying fewer events than the
stored one is an older version and is refused; the check and the write happen
in one Lua script, atomically inside Redis. Each ``write`` is synchronous: when
it returns, Redis has acknowledged every tile of the batch, so nothing is held
in a buffer that a crash after a checkpoint could lose.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

import redis

from features.definition import FeatureView
from parity.config import RedisConfig
from parity.errors import SinkError
from sinks.base import TileRow, WriteResult
from sinks.redis_layout import completeness_key, encode_tile, entity_key, late_events_key

log = logging.getLogger(__name__)

# KEYS[1]: the entity hash. ARGV[1]: prune tiles starting before this (epoch s).
# ARGV[2..]: field, value pairs; a value starts with its event count (the version).
_SET_TILES = """
local applied = 0
for i = 2, #ARGV, 2 do
  local version = tonumber(string.match(ARGV[i + 1], '^[^|]*'))
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == false or tonumber(string.match(current, '^[^|]*')) <= version then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    applied = applied + 1
  end
end
local prune_before = tonumber(ARGV[1])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local start = tonumber(field)
  if start ~= nil and start < prune_before then
    redis.call('HDEL', KEYS[1], field)
  end
end
return applied
"""

# KEYS[1]: the completeness key. ARGV[1]: a tile end (epoch ms). Only ever moves forward.
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client with bounded timeouts, so a slow Redis fails a call instead of hanging it."""
    return redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        password=cfg.password.get_secret_value() if cfg.password else None,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
    )


class RedisTileSink:
    """Writes tile rows of one view to Redis. See the module docstring for the guarantee.

    Tiles that start before the entity's newest tile end minus (longest window
    + prune margin) can no longer be part of any window and are pruned.
    """

    def __init__(self, view: FeatureView, cfg: RedisConfig) -> None:
        self._view = view
        self._cfg = cfg
        self._client: redis.Redis | None = None
        self._horizon_ms = int((view.longest_window + view.prune_margin) / timedelta(milliseconds=1))

    def open(self) -> None:
        self._client = connect(self._cfg)
        self._set_tiles = self._client.register_script(_SET_TILES)
        self._advance = self._client.register_script(_ADVANCE)

    def write(self, rows: Sequence[TileRow]) -> WriteResult:
        """Set every tile of the batch, in one pipelined round trip.

        Raises:
            SinkError: Redis did not acknowledge the batch; nothing may be assumed written.
        """
        client = self._require_client()
        by_entity: dict[str, list[TileRow]] = defaultdict(list)
        for row in rows:
            by_entity[row.entity].append(row)
        pipe = client.pipeline(transaction=False)
        for entity, tiles in by_entity.items():
            newest_end = max(t.tile_end_ms for t in tiles)
            argv: list[str | int] = [(newest_end - self._horizon_ms) // 1000]
            for tile in tiles:
                argv.extend(encode_tile(tile))
            self._set_tiles(
                keys=[entity_key(self._cfg.key_prefix, self._view, entity)], args=argv, client=pipe
            )
        try:
            applied = sum(int(n) for n in pipe.execute())
        except redis.RedisError as exc:
            raise SinkError(
                f"Redis at {self._cfg.host}:{self._cfg.port} did not take {len(rows)} tiles of "
                f"{self._view.qualified_name}: {exc}"
            ) from exc
        return WriteResult(applied=applied, refused_stale=len(rows) - applied)

    def advance_completeness(self, tile_end_ms: int) -> None:
        """Move the view's completeness watermark forward (never back)."""
        client = self._require_client()
        try:
            self._advance(
                keys=[completeness_key(self._cfg.key_prefix, self._view)], args=[tile_end_ms], client=client
            )
        except redis.RedisError as exc:
            raise SinkError(
                f"Redis did not take the completeness watermark of {self._view.qualified_name}: {exc}"
            ) from exc

    def completeness_ms(self) -> int | None:
        """The view's completeness watermark in Redis, if any tile was written."""
        raw = self._require_client().get(completeness_key(self._cfg.key_prefix, self._view))
        return int(raw) if raw is not None else None

    def count_late(self, count: int) -> int:
        """Add to the view's running total of late events; return the new total."""
        client = self._require_client()
        try:
            return int(client.incrby(late_events_key(self._cfg.key_prefix, self._view), count))
        except redis.RedisError as exc:
            raise SinkError(
                f"Redis did not take the late-event count of {self._view.qualified_name}: {exc}"
            ) from exc

    def flush(self) -> None:
        """Nothing is buffered: every write is acknowledged before it returns."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise SinkError("RedisTileSink used before open()")
        return self._client
