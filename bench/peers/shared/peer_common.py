"""What every peer engine shares: settings, Confluent Avro decoding, the tile layout and its Redis writer.

Peers run in their own virtualenvs (bench/peers/setup.sh), without parity installed, so
this module depends only on the standard library, fastavro, confluent-kafka and redis.

The tile of features/user_stats.py (version 2), computed by every peer:

- key: ``user_id``; tile: the UTC hour ``[start, start + 1 h)`` of ``event_time``;
- value: ``events|impressions|clicks|mobile_clicks``, where impressions and clicks count
  ``event_type`` and mobile clicks count clicks with ``device = 'mobile'`` (a missing
  device, as in v1 events, is not mobile);
- closing: a tile closes once an event of the same user at or after ``tile end + 5 min``
  (the view's max out-of-orderness) has been read. Tiles still open when the peer reaches
  the end of the topic are not written, as parity's bounded run leaves its open hour open.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import redis
from confluent_kafka import Consumer, TopicPartition

HOUR_MS = 3_600_000
# features/user_stats.py: ad_events.max_out_of_orderness.
GRACE_MS = 5 * 60_000
# Confluent wire format: magic byte 0, then a big-endian 4-byte schema id.
_HEADER = 5
_ENV_PREFIX = "PEER_"


@dataclass(frozen=True)
class PeerConfig:
    """Where a peer reads and writes; every field comes from a ``PEER_<FIELD>`` variable.

    Attributes:
        name: The peer (``bytewax``, ``quix``); part of the Redis keys.
        run: The run id; part of the Redis keys and of the consumer group.
        topic: The input topic (Confluent Avro ad events).
        bootstrap: Kafka bootstrap servers.
        registry_url: The schema registry's Confluent-compatible base URL.
        redis_url: Where tiles are written.
        workdir: Scratch space for the engine's own state.
    """

    name: str
    run: str
    topic: str
    bootstrap: str = "127.0.0.1:19092"
    registry_url: str = "http://127.0.0.1:18081/apis/ccompat/v7"
    redis_url: str = "redis://127.0.0.1:16379/0"
    workdir: str = ".parity/bench/peers/work"

    @classmethod
    def from_env(cls, **given: str) -> PeerConfig:
        """The config from ``PEER_*`` variables, ``given`` values taking precedence."""
        values = {
            name: os.environ[f"{_ENV_PREFIX}{name.upper()}"]
            for name in cls.__dataclass_fields__
            if f"{_ENV_PREFIX}{name.upper()}" in os.environ
        } | given
        missing = {"name", "run", "topic"} - values.keys()
        if missing:
            raise SystemExit(f"set {', '.join(sorted(_ENV_PREFIX + m.upper() for m in missing))}")
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The variables that recreate this config in a worker process."""
        fields = self.__dataclass_fields__
        return {f"{_ENV_PREFIX}{name.upper()}": str(getattr(self, name)) for name in fields}

    @property
    def group_id(self) -> str:
        return f"peer-{self.name}-{self.run}"

    def redis_key(self, user: str) -> str:
        return f"peer:{self.name}:{self.run}:e:{user}"


def _without_timestamp_types(schema: Any) -> Any:
    """The schema with timestamp logical types dropped, so event_time decodes as epoch ms."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: _without_timestamp_types(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_without_timestamp_types(branch) for branch in schema]
    return schema


class ConfluentAvroDecoder:
    """Decodes Confluent-framed Avro values with the writer schema named in each header.

    Schemas are fetched from the registry once per id and cached. ``event_time`` comes
    out as epoch milliseconds (an int), not a datetime.
    """

    def __init__(self, registry_url: str) -> None:
        self._url = registry_url.rstrip("/")
        self._schemas: dict[int, Any] = {}

    def __call__(self, payload: bytes) -> dict[str, Any]:
        if len(payload) < _HEADER or payload[0] != 0:
            raise ValueError("not a Confluent-framed Avro value (magic byte 0 and a schema id)")
        schema_id = int.from_bytes(payload[1:_HEADER], "big")
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self._schemas[schema_id] = self._fetch(schema_id)
        body = io.BytesIO(payload)
        body.seek(_HEADER)
        record: dict[str, Any] = fastavro.schemaless_reader(body, schema, None)
        return record

    def _fetch(self, schema_id: int) -> Any:
        with urllib.request.urlopen(f"{self._url}/schemas/ids/{schema_id}", timeout=10) as response:
            text = json.load(response)["schema"]
        return fastavro.parse_schema(_without_timestamp_types(json.loads(text)))


def new_tile() -> list[int]:
    """An empty tile: events, impressions, clicks, mobile clicks."""
    return [0, 0, 0, 0]


def add_event(tile: list[int], event: dict[str, Any]) -> list[int]:
    """Counts one event into a tile (in place) and returns the tile."""
    tile[0] += 1
    if event["event_type"] == "impression":
        tile[1] += 1
    elif event["event_type"] == "click":
        tile[2] += 1
        if event.get("device") == "mobile":
            tile[3] += 1
    return tile


def merge_tiles(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


def tile_value(tile: Iterable[int]) -> str:
    """The Redis hash value of a tile: ``events|impressions|clicks|mobile_clicks``."""
    return "|".join(str(n) for n in tile)


class RedisTileWriter:
    """Writes closed tiles as hash fields ``<tile start, epoch s> = value`` under one key per user.

    Writes are HSETs of whole values, so a replayed batch rewrites the same fields:
    at-least-once delivery gives the same final hash.
    """

    def __init__(self, cfg: PeerConfig) -> None:
        self._cfg = cfg
        self._client = redis.Redis.from_url(cfg.redis_url)

    def write(self, tiles: Iterable[tuple[str, int, Iterable[int]]]) -> None:
        """Writes ``(user, tile start in epoch s, counts)`` rows in one pipeline."""
        pipe = self._client.pipeline(transaction=False)
        for user, start_s, counts in tiles:
            pipe.hset(self._cfg.redis_key(user), str(start_s), tile_value(counts))
        pipe.execute()

    def close(self) -> None:
        self._client.close()


def end_offsets(cfg: PeerConfig) -> dict[int, int]:
    """Each partition's end offset now: where a peer stops reading."""
    consumer = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": f"{cfg.group_id}-ends"})
    try:
        partitions = consumer.list_topics(cfg.topic, timeout=10).topics[cfg.topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(cfg.topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def launcher_args(name: str, description: str | None) -> tuple[PeerConfig, int]:
    """A launcher's command line (``--topic``, ``--run``, ``--processes``) as the peer's config."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topic", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    return PeerConfig.from_env(name=name, run=args.run, topic=args.topic), args.processes


def launch_workers(
    cfg: PeerConfig,
    worker_argv: list[list[str]],
    extra_env: dict[str, str],
    per_worker_env: list[dict[str, str]] | None = None,
) -> int:
    """Runs one process per argv (this interpreter, the same config) until all have exited.

    When a worker fails, the others are terminated: a cluster missing a member would wait forever.

    Returns:
        0 when every worker exited with 0, else the first non-zero exit code.
    """
    here = Path(__file__).resolve().parent
    env = dict(os.environ) | cfg.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), extra_env.get("PYTHONPATH", "")]))
    env |= {k: v for k, v in extra_env.items() if k != "PYTHONPATH"}
    own = per_worker_env or [{} for _ in worker_argv]
    workers = [
        subprocess.Popen([sys.executable, *argv], env=env | mine)
        for argv, mine in zip(worker_argv, own, strict=True)
    ]
    failed = 0
    while any(worker.poll() is None for worker in workers):
        codes = [worker.returncode for worker in workers if worker.returncode]
        if codes and not failed:
            failed = codes[0]
            for worker in workers:
                if worker.poll() is None:
                    worker.terminate()
        time.sleep(0.2)
    return failed or next((worker.returncode for worker in workers if worker.returncode), 0)
