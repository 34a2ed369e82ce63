"""Removing all of a view version's state, after listing it.

For local runs and demos that start again from scratch. A production
correction goes through replay instead, which replaces a time range in place.

A view version's state, every piece named after ``<view>_v<version>``:

- its Redis keys, ``<prefix>:<view>:v<version>:*``;
- its Iceberg tables: tiles, progress and the raw archive (left behind, a
  replay would bring the removed events back), plus the staging tables of
  replays killed before they dropped them;
- its Kafka consumer group ``parity-<view>_v<version>``, whose committed
  offsets would make the next run skip everything this one read;
- its checkpoint folder, holding retained checkpoints and savepoints, from
  which the next run would resume the removed state.

The topic is not included: other views may read it, so it is removed only
when asked for.

Protocol:
1. ``ViewReset.find`` lists everything and changes nothing;
2. the caller shows the list (and asks);
3. ``ViewReset.remove`` removes it: the consumer group, the Redis keys (all
   that match then, including any written since step 1), the tables, the
   checkpoint folder, and the topic when it was asked for.

Stop the view's job first: a running job writes its state again.
"""

from __future__ import annotations

import contextlib
import shutil
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

from features.definition import FeatureView
from features.registry import load_views
from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RedisConfig
from parity.errors import ParityError
from parity.kafka_security import librdkafka_config
from sinks import iceberg
from sinks.redis import connect
from sinks.redis_layout import view_pattern

_KAFKA_TIMEOUT_S = 10.0
_UNLINK_BATCH = 1000
_T = TypeVar("_T")


@dataclass
class ViewState:
    """Everything stored for one view version, as ``ViewReset.find`` found it."""

    view: str
    redis_pattern: str
    redis_keys: int = 0
    tables: list[str] = field(default_factory=list)
    raw_table: str | None = None
    staging_tables: list[str] = field(default_factory=list)
    consumer_group: str | None = None
    checkpoint_dir: Path | None = None
    checkpoints: list[str] = field(default_factory=list)
    savepoints: list[str] = field(default_factory=list)
    topic: str | None = None
    topic_readers: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        found = (self.redis_keys, self.tables, self.raw_table, self.staging_tables, self.consumer_group)
        return not any(found) and self.checkpoint_dir is None and self.topic is None

    def lines(self) -> list[str]:
        """One line per item, in the order ``remove`` removes them."""
        if self.empty:
            return [f"{self.view}: no stored state"]
        out = [f"{self.view}:"]
        if self.consumer_group:
            out.append(f"  Kafka consumer group {self.consumer_group} (its committed offsets)")
        if self.redis_keys:
            out.append(
                f"  Redis: {self.redis_keys} {_plural(self.redis_keys, 'key')} matching {self.redis_pattern}"
            )
        out += [f"  Iceberg table {name}" for name in self.tables]
        if self.raw_table:
            out.append(f"  Iceberg table {self.raw_table} (the raw archive, which replay reads)")
        out += [f"  Iceberg table {name} (left by an unfinished replay)" for name in self.staging_tables]
        if self.checkpoint_dir is not None:
            out.append(f"  checkpoint folder {self.checkpoint_dir}, with")
            out += [f"    checkpoint {name}" for name in self.checkpoints]
            out += [f"    savepoint {name}" for name in self.savepoints]
            if not (self.checkpoints or self.savepoints):
                out[-1] = out[-1].removesuffix(", with") + " (no completed checkpoint)"
        if self.topic is not None:
            shared = f", also read by {', '.join(self.topic_readers)}" if self.topic_readers else ""
            out.append(f"  Kafka topic {self.topic} and every event in it{shared}")
        return out


class ViewReset:
    """Finds and removes one view version's state; settings default to the PARITY_* environment.

    Args:
        view: The view version.
        topic: Also remove the view's source topic, which other views may read.
        redis_cfg: Where the online store is.
        iceberg_cfg: Where the offline store is (its namespace holds the tables).
        kafka: Where the consumer group and topic are.
        flink: Where checkpoints are kept.
    """

    def __init__(
        self,
        view: FeatureView,
        *,
        topic: bool = False,
        redis_cfg: RedisConfig | None = None,
        iceberg_cfg: IcebergConfig | None = None,
        kafka: KafkaConfig | None = None,
        flink: FlinkJobConfig | None = None,
    ) -> None:
        self._view = view
        self._topic = topic
        self._redis = redis_cfg or RedisConfig()
        self._iceberg = iceberg_cfg or IcebergConfig()
        self._kafka = kafka or KafkaConfig()
        self._flink = flink or FlinkJobConfig()

    @property
    def group_id(self) -> str:
        """The consumer group the streaming job of this view version commits offsets under."""
        return f"parity-{self._view.qualified_name}"

    @property
    def checkpoint_dir(self) -> Path:
        return self._flink.checkpoint_dir / self._view.qualified_name

    def find(self) -> ViewState:
        """List the view version's state; nothing is changed.

        Raises:
            ParityError: Redis or Kafka did not answer.
            ConfigError: the Iceberg catalog cannot be opened.
        """
        view = self._view
        state = ViewState(view.qualified_name, view_pattern(self._redis.key_prefix, view))
        state.redis_keys = len(self._redis_keys(state.redis_pattern))
        self._find_tables(state)
        root = self.checkpoint_dir
        if root.is_dir():
            state.checkpoint_dir = root
            # Flink's layout: <job id>/chk-<n>/ and savepoints/savepoint-*/.
            state.checkpoints = sorted(str(p.relative_to(root)) for p in root.glob("*/chk-*"))
            state.savepoints = sorted(str(p.relative_to(root)) for p in root.glob("savepoints/*"))
        admin = self._admin()
        groups = _kafka_result(admin.list_consumer_groups(request_timeout=_KAFKA_TIMEOUT_S), self._kafka)
        # An unreachable broker is an error in the listing, not an exception.
        if groups.errors:
            raise _kafka_error(self._kafka, groups.errors[0].str())
        if any(g.group_id == self.group_id for g in groups.valid):
            state.consumer_group = self.group_id
        if self._topic:
            try:
                topics = admin.list_topics(timeout=_KAFKA_TIMEOUT_S).topics
            except KafkaException as exc:
                raise _kafka_error(self._kafka, exc.args[0]) from exc
            if view.source.topic in topics:
                state.topic = view.source.topic
                state.topic_readers = sorted(
                    v.name
                    for v in load_views().values()
                    if v.source.topic == state.topic and v.name != view.name
                )
        return state

    def remove(self, state: ViewState) -> None:
        """Remove what ``find`` listed; whatever is already gone is skipped.

        Raises:
            ParityError: Redis or Kafka did not answer, or Kafka refused a deletion.
        """
        admin = self._admin()
        if state.consumer_group:
            for future in admin.delete_consumer_groups(
                [state.consumer_group], request_timeout=_KAFKA_TIMEOUT_S
            ).values():
                _deleted(future, KafkaError.GROUP_ID_NOT_FOUND, f"consumer group {state.consumer_group}")
        if state.redis_keys:
            self._unlink(state.redis_pattern)
        tables = [*state.tables, *([state.raw_table] if state.raw_table else []), *state.staging_tables]
        if tables:
            catalog = iceberg.open_catalog(self._iceberg)
            for name in tables:
                with contextlib.suppress(NoSuchTableError):
                    catalog.purge_table(name)
        if state.checkpoint_dir is not None:
            shutil.rmtree(state.checkpoint_dir, ignore_errors=True)
        if state.topic is not None:
            for future in admin.delete_topics([state.topic], operation_timeout=_KAFKA_TIMEOUT_S).values():
                _deleted(future, KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {state.topic}")

    def _redis_keys(self, pattern: str) -> list[bytes]:
        client = connect(self._redis)
        try:
            return list(client.scan_iter(match=pattern, count=_UNLINK_BATCH))
        except redis.RedisError as exc:
            raise _redis_error(self._redis, exc) from exc
        finally:
            client.close()

    def _unlink(self, pattern: str) -> None:
        keys = self._redis_keys(pattern)
        client = connect(self._redis)
        try:
            for start in range(0, len(keys), _UNLINK_BATCH):
                client.unlink(*keys[start : start + _UNLINK_BATCH])
        except redis.RedisError as exc:
            raise _redis_error(self._redis, exc) from exc
        finally:
            client.close()

    def _find_tables(self, state: ViewState) -> None:
        """Fill in the view's tables that exist, as namespace.table identifiers."""
        namespace = self._iceberg.namespace
        catalog = iceberg.open_catalog(self._iceberg)
        try:
            present = {".".join(identifier[1:]) for identifier in catalog.list_tables(namespace)}
        except NoSuchNamespaceError:
            return
        view = self._view
        state.tables = [
            f"{namespace}.{name}"
            for name in (iceberg.tiles_table(view), iceberg.progress_table(view))
            if name in present
        ]
        if iceberg.raw_table(view) in present:
            state.raw_table = f"{namespace}.{iceberg.raw_table(view)}"
        state.staging_tables = [
            f"{namespace}.{name}" for name in sorted(present) if iceberg.is_staging_table(view, name)
        ]

    def _admin(self) -> AdminClient:
        # Quiet: an unreachable broker becomes one error line instead of librdkafka's log lines.
        return AdminClient(librdkafka_config(self._kafka) | {"log_level": 0})


def reset_view(
    view: FeatureView,
    *,
    topic: bool,
    dry_run: bool = False,
    redis_cfg: RedisConfig | None = None,
    iceberg_cfg: IcebergConfig | None = None,
    kafka: KafkaConfig | None = None,
    flink: FlinkJobConfig | None = None,
) -> ViewState:
    """List a view version's state and, unless ``dry_run``, remove it; returns what was found."""
    reset = ViewReset(
        view, topic=topic, redis_cfg=redis_cfg, iceberg_cfg=iceberg_cfg, kafka=kafka, flink=flink
    )
    state = reset.find()
    if not dry_run:
        reset.remove(state)
    return state


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def _kafka_result(future: Future[_T], kafka: KafkaConfig) -> _T:
    try:
        return future.result()
    except KafkaException as exc:
        raise _kafka_error(kafka, exc.args[0]) from exc


def _deleted(future: Future[None], absent: int, what: str) -> None:
    """Wait for one deletion; one that finds the item already gone is done too."""
    try:
        future.result()
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == absent:
            return
        reason = error.str() if isinstance(error, KafkaError) else str(exc)
        raise ParityError(f"Kafka did not delete {what}: {reason}") from exc


def _kafka_error(kafka: KafkaConfig, reason: object) -> ParityError:
    return ParityError(
        f"Kafka at {kafka.bootstrap_servers} did not answer ({reason}); nothing was removed. "
        "Start the local stack with `make up` or set PARITY_KAFKA_BOOTSTRAP_SERVERS."
    )


def _redis_error(cfg: RedisConfig, exc: redis.RedisError) -> ParityError:
    return ParityError(
        f"Redis at {cfg.address} did not answer ({str(exc).rstrip('.')}). "
        "Start the local stack with `make up` or set PARITY_REDIS_HOST and PARITY_REDIS_PORT."
    )
