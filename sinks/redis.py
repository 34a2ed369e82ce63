"""The online store writer: tiles into one Redis hash per (view, entity).

Guarantee: at-least-once, made idempotent. A tile's value is *set*, never
incremented, so writing the same tile twice (a retry, a restart from a
checkpoint) leaves the same value. A tile carrying fewer events than the
stored one is an older version and is refused; the check and the write happen
in one Lua script (``sinks/lua/set_tiles.lua``), atomically inside Redis. Each
``write`` is synchronous: when it returns, Redis has acknowledged every tile of
the batch, so nothing is held in a buffer that a crash after a checkpoint could
lose.

A sink that finds the view's epoch key when it opens marks the view ``lost``
if a later write finds the key gone: see the epoch contract in
``sinks.redis_layout``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.credentials import CredentialProvider
from redis.exceptions import NoPermissionError, RedisClusterException
from redis.retry import Retry

from features.definition import FeatureView
from parity.config import RedisConfig
from parity.errors import ConfigError, SinkError
from sinks.base import TileRow, WriteResult
from sinks.lua_scripts import load_script
from sinks.redis_layout import (
    completeness_key,
    due_key,
    encode_tile,
    entity_key,
    epoch_key,
    late_counted_key,
    late_events_key,
    window_key,
)
from sinks.redis_windows import layout_args

log = logging.getLogger(__name__)


def client_kwargs(cfg: RedisConfig) -> dict[str, Any]:
    """``redis.Redis`` arguments for ``cfg``: every client of the online store is built from these.

    The password stays out of them: a credential provider reads it when a
    connection opens (from ``password_file`` then, if that is where it is).
    redis-py's own retries are off: the callers retry (the job's backoff, the
    reads' breaker), and redis-py 6+ retries by default, a wrong password too
    (an ``AuthenticationError`` is a ``ConnectionError``), turning it into
    seconds of waiting. A cluster client alone gets one retry (``build_client``).
    """
    kwargs: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "db": cfg.db,
        "socket_timeout": cfg.socket_timeout_s,
        "socket_connect_timeout": cfg.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if cfg.password is not None or cfg.password_file is not None:
        kwargs["credential_provider"] = _Credentials(cfg)
    if cfg.tls:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=_path(cfg.tls_ca_file),
            ssl_certfile=_path(cfg.tls_cert_file),
            ssl_keyfile=_path(cfg.tls_key_file),
            ssl_cert_reqs="required",
            # redis-py 5 (the job's) leaves the name unchecked by default, 6+ checks it: say so.
            ssl_check_hostname=True,
        )
    return kwargs


# A client of the online store: one Redis, or a Redis Cluster (``PARITY_REDIS_MODE``).
Client = redis.Redis | RedisCluster


def connect(cfg: RedisConfig) -> Client:
    """A client with bounded timeouts, so a slow Redis fails a call instead of hanging it."""
    return build_client(cfg, client_kwargs(cfg))


def build_client(cfg: RedisConfig, kwargs: dict[str, Any]) -> Client:
    """``redis.Redis`` from ``kwargs``, or in cluster mode a ``RedisCluster`` from the seeds.

    The cluster client routes each call by its keys' slot and follows a slot
    that moves; every node gets the same login, TLS and timeouts.
    """
    if cfg.mode == "single":
        return redis.Redis(**kwargs)
    node_kwargs = {k: v for k, v in kwargs.items() if k not in ("host", "port", "db")}
    # The cluster's own retry (its nodes' connections still have none): one more attempt
    # after the slot-map refresh that a refused connection asks for. Without it, the first
    # call after a failover failed on the dead master's address though the replica serves.
    node_kwargs["retry"] = Retry(NoBackoff(), 1)
    seeds = [ClusterNode(host, port) for host, port in cfg.seed_nodes()]  # type: ignore[no-untyped-call]
    try:
        # Unlike redis.Redis, it asks a seed for the slot map right away.
        return RedisCluster(startup_nodes=seeds, **node_kwargs)
    except RedisClusterException as exc:
        # A redis error, so callers treat it as an unreachable Redis.
        names = ",".join(f"{host}:{port}" for host, port in cfg.seed_nodes())
        raise redis.ConnectionError(
            f"no seed of the Redis Cluster answered (PARITY_REDIS_CLUSTER_NODES={names}): {exc}"
        ) from exc


def mget(client: Client, keys: Sequence[str]) -> list[Any]:
    """MGET, split by slot on a cluster: keys of several views may live on several nodes."""
    if isinstance(client, RedisCluster):
        return list(client.mget_nonatomic(keys))
    return list(client.mget(keys))


def explain(cfg: RedisConfig, exc: BaseException) -> str:
    """The error's text, and for a refused login or TLS handshake the settings to look at."""
    text = str(exc).rstrip(".")
    if isinstance(exc, _PasswordFileError):
        return text
    if isinstance(exc, redis.AuthenticationError):
        if cfg.password is None and cfg.password_file is None:
            return f"{text}: Redis wants a login; set PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD"
        user = f"user {cfg.username!r}" if cfg.username else "the default user"
        return (
            f"{text}: Redis refused {user}; check PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD"
            " (or PARITY_REDIS_PASSWORD_FILE)"
        )
    if isinstance(exc, NoPermissionError):
        return f"{text}: the ACL user PARITY_REDIS_USERNAME={cfg.username} lacks a command or key it needs"
    if isinstance(exc, redis.ConnectionError) and not isinstance(exc, redis.TimeoutError):
        if cfg.tls and _is_tls_failure(text):
            return (
                f"{text}: the TLS handshake with {cfg.host}:{cfg.port} failed; check "
                "PARITY_REDIS_TLS_CA_FILE (the CA that signed the server's certificate, which "
                f"must name {cfg.host}) and PARITY_REDIS_TLS_CERT_FILE if the server asks for one"
            )
        if not cfg.tls and ("reset" in text or "closed" in text):
            return f"{text}: if {cfg.host}:{cfg.port} only takes TLS, set PARITY_REDIS_TLS=true"
    return text


class _PasswordFileError(redis.AuthenticationError):
    """The password file could not be read when a connection opened."""


class _Credentials(CredentialProvider):
    """The username and password, the password read only when a connection asks for it."""

    def __init__(self, cfg: RedisConfig) -> None:
        self._cfg = cfg

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = self._cfg.password_value() or ""
        except ConfigError as exc:
            # A redis error, so reads degrade and writes fail like any other refused login.
            raise _PasswordFileError(str(exc)) from exc
        return (self._cfg.username, password) if self._cfg.username else (password,)


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _is_tls_failure(text: str) -> bool:
    return any(mark in text for mark in ("SSL", "certificate", "TLS"))


class RedisTileSink:
    """Writes tile rows of one view to Redis. See the module docstring for the guarantee.

    Tiles that start before the entity's newest tile end minus (longest window
    + prune margin) can no longer be part of any window and are pruned.

    Every write also recomputes the entity's window values for the current
    window end and the next range of ends (``sinks.redis_windows``), so an
    online read is one MGET.
    That work is skipped while the view is catching up (its tiles older than
    its max staleness): the values are marked out of date instead, and the
    first completeness advance after catching up recomputes them all. Reads
    stay exact either way; out-of-date values are merged at read time.

    Args:
        clock: wall-clock epoch ms; decides which window end to precompute.
    """

    def __init__(self, view: FeatureView, cfg: RedisConfig, clock: Callable[[], int] | None = None) -> None:
        self._view = view
        self._cfg = cfg
        self._clock = clock or _now_ms
        self._client: Client | None = None
        self._horizon_ms = int((view.longest_window + view.prune_margin) / timedelta(milliseconds=1))
        self._staleness_ms = int(view.max_staleness / timedelta(milliseconds=1))
        self._layout = layout_args(view)
        self._epoch = epoch_key(cfg.key_prefix, view)
        # The epoch key, passed to the scripts only once seen: see sinks.redis_layout.
        self._armed: list[str] = []

    def open(self) -> None:
        """Connect, and arm the loss check if the view's epoch key is there.

        Raises:
            SinkError: Redis did not answer.
        """
        try:
            self._client = connect(self._cfg)
        except redis.RedisError as exc:  # a cluster client asks its seeds as it is built
            raise self._failed(f"Redis did not answer for {self._view.qualified_name}", exc) from exc
        self._set_tiles = self._client.register_script(load_script("set_tiles"))
        self._refresh = self._client.register_script(load_script("refresh_windows"))
        self._advance = self._client.register_script(load_script("advance_completeness"))
        self._mark_pruned = self._client.register_script(load_script("mark_pruned"))
        self._count_late = self._client.register_script(load_script("count_late"))
        if isinstance(self._client, RedisCluster):
            # A cluster pipeline does not load scripts before it runs them, as a plain one does.
            scripts = (self._set_tiles, self._refresh, self._advance, self._mark_pruned, self._count_late)
            try:
                for script in scripts:
                    self._client.script_load(script.script)
            except redis.RedisError as exc:
                raise self._failed(
                    f"Redis did not load the scripts of {self._view.qualified_name}", exc
                ) from exc
        self._armed = [self._epoch] if self.epoch() is not None else []

    def write(self, rows: Sequence[TileRow]) -> WriteResult:
        """Set every tile of the batch, in one pipelined round trip.

        Raises:
            SinkError: Redis did not acknowledge the batch; nothing may be assumed written.
        """
        client = self._require_client()
        by_entity: dict[str, list[TileRow]] = defaultdict(list)
        for row in rows:
            by_entity[row.entity].append(row)
        now_ms = self._clock()
        at = str(self._window_end_s(now_ms))
        prefix = self._cfg.key_prefix
        due = due_key(prefix, self._view)
        pipe = client.pipeline(transaction=False)
        for entity, tiles in by_entity.items():
            newest_end = max(t.tile_end_ms for t in tiles)
            fresh = newest_end >= now_ms - self._staleness_ms
            argv: list[str | int] = [(newest_end - self._horizon_ms) // 1000, at if fresh else "", entity]
            argv.extend(self._layout)
            for tile in tiles:
                argv.extend(encode_tile(tile))
            keys = [entity_key(prefix, self._view, entity), window_key(prefix, self._view, entity), due]
            keys.extend(self._armed)
            self._set_tiles(keys=keys, args=argv, client=pipe)
        try:
            applied = sum(int(n) for n in pipe.execute())
        except redis.RedisError as exc:
            raise self._failed(
                f"Redis at {self._cfg.address} did not take {len(rows)} tiles of {self._view.qualified_name}",
                exc,
            ) from exc
        return WriteResult(applied=applied, refused_stale=len(rows) - applied)

    def advance_completeness(self, tile_end_ms: int) -> int:
        """Move the view's completeness watermark forward (never back); refresh due window values.

        The refresh runs only once the view has caught up (``tile_end_ms``
        within its max staleness of the clock). Returns the entities refreshed.
        """
        client = self._require_client()
        try:
            self._advance(
                keys=[completeness_key(self._cfg.key_prefix, self._view), *self._armed],
                args=[tile_end_ms],
                client=client,
            )
        except redis.RedisError as exc:
            raise self._failed(
                f"Redis did not take the completeness watermark of {self._view.qualified_name}", exc
            ) from exc
        if tile_end_ms < self._clock() - self._staleness_ms:
            return 0
        return self.refresh()

    def refresh(self, batch: int = 500) -> int:
        """Recompute every entity whose stored window values stop covering reads by the next tile end.

        Works in script calls of at most ``batch`` entities, so Redis is never
        held for long. Returns the entities refreshed.
        """
        client = self._require_client()
        at = self._window_end_s(self._clock())
        # Values covered only up to the next tile boundary are refreshed now: the
        # job's next advance comes after that boundary plus the allowed lateness.
        due_by = at + self._view.tile_ms // 1000
        prefix = self._cfg.key_prefix
        heads = [entity_key(prefix, self._view, ""), window_key(prefix, self._view, "")]
        args = [at, due_by, batch, *heads, *self._layout]
        keys = [due_key(prefix, self._view)]
        total = 0
        try:
            while True:
                done = int(self._refresh(keys=keys, args=args, client=client))
                total += done
                if done < batch:
                    return total
        except redis.RedisError as exc:
            raise self._failed(
                f"Redis did not take the window values of {self._view.qualified_name}", exc
            ) from exc

    def completeness_ms(self) -> int | None:
        """The view's completeness watermark in Redis, if any tile was written."""
        raw = self._require_client().get(completeness_key(self._cfg.key_prefix, self._view))
        return int(raw) if raw is not None else None

    def epoch(self) -> str | None:
        """The view's epoch key: ``<epoch ms> <origin>``, ``lost``, or None when absent.

        Raises:
            SinkError: Redis did not answer.
        """
        try:
            raw = self._require_client().get(self._epoch)
        except redis.RedisError as exc:
            raise self._failed(
                f"Redis did not answer for the epoch of {self._view.qualified_name}", exc
            ) from exc
        return raw.decode() if isinstance(raw, bytes) else None

    def set_epoch(self, origin: str, *, only_if_absent: bool = False) -> bool:
        """Declare that this Redis holds the view's online horizon completely; True if set.

        Only a fresh start and a finished repair may call it (sinks.redis_layout).

        Raises:
            SinkError: Redis did not answer.
        """
        value = f"{_now_ms()} {origin}"
        try:
            done = self._require_client().set(self._epoch, value, nx=only_if_absent)
        except redis.RedisError as exc:
            raise self._failed(f"Redis did not take the epoch of {self._view.qualified_name}", exc) from exc
        if done:
            self._armed = [self._epoch]
        return bool(done)

    def mark_pruned(self, newest_gone_ms: Mapping[str, int]) -> None:
        """Record, per entity, the start of the newest tile Redis does not hold, as pruning does.

        For a rebuild that leaves out tiles older than the online horizon: a read
        whose window reaches them then says so instead of serving a short value.

        Raises:
            SinkError: Redis did not answer.
        """
        pipe = self._require_client().pipeline(transaction=False)
        prefix = self._cfg.key_prefix
        for entity, start_ms in newest_gone_ms.items():
            key = entity_key(prefix, self._view, entity)
            self._mark_pruned(keys=[key], args=[start_ms // 1000], client=pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            name = self._view.qualified_name
            raise self._failed(f"Redis did not take the pruned marks of {name}", exc) from exc

    def count_late(self, positions: Sequence[tuple[int, int]]) -> int:
        """Add late rows to the view's running total, each once; return the new total.

        Args:
            positions: (Kafka partition, offset) of each late row, each partition's
                in offset order. Rows at or below the partition's highest offset
                already counted are skipped (the late-count contract in
                ``sinks.redis_layout``), so a repeated call adds nothing.

        Raises:
            SinkError: Redis did not answer; the rows may or may not be counted.
        """
        client = self._require_client()
        prefix = self._cfg.key_prefix
        keys = [late_events_key(prefix, self._view), late_counted_key(prefix, self._view)]
        args = [str(n) for position in positions for n in position]
        try:
            return int(self._count_late(keys=keys, args=args, client=client))
        except redis.RedisError as exc:
            raise self._failed(
                f"Redis did not take the late-event count of {self._view.qualified_name}", exc
            ) from exc

    def flush(self) -> None:
        """Nothing is buffered: every write is acknowledged before it returns."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _window_end_s(self, ms: int) -> int:
        return (ms - ms % self._view.tile_ms) // 1000

    def _failed(self, what: str, exc: redis.RedisError) -> SinkError:
        return SinkError(f"{what}: {explain(self._cfg, exc)}")

    def _require_client(self) -> Client:
        if self._client is None:
            raise SinkError("RedisTileSink used before open()")
        return self._client


def _now_ms() -> int:
    return int(time.time() * 1000)
