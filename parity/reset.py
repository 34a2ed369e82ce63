"""Removing a view's state: its online keys, offline tables, checkpoints and (optionally) its topic.

For local runs and demos that start again from scratch. A production
correction goes through replay instead, which replaces a time range in place.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient
from pyiceberg.exceptions import NoSuchTableError

from features.definition import FeatureView
from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RedisConfig
from sinks import iceberg
from sinks.redis import connect


@dataclass
class ResetReport:
    redis_keys: int = 0
    tables: list[str] = field(default_factory=list)
    topic: str | None = None

    def line(self) -> str:
        parts = [f"{self.redis_keys} Redis keys", f"tables {self.tables or 'none'}"]
        if self.topic:
            parts.append(f"topic {self.topic} and its consumer group")
        return "removed " + ", ".join(parts)


def reset_view(view: FeatureView, *, topic: bool, dry_run: bool = False) -> ResetReport:
    report = ResetReport()
    redis_cfg = RedisConfig()
    client = connect(redis_cfg)
    try:
        keys = list(
            client.scan_iter(match=f"{redis_cfg.key_prefix}:{view.name}:v{view.version}:*", count=1000)
        )
        report.redis_keys = len(keys)
        if keys and not dry_run:
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])
    finally:
        client.close()

    iceberg_cfg = IcebergConfig()
    catalog = iceberg.open_catalog(iceberg_cfg)
    for name in (iceberg.tiles_table(view), iceberg.progress_table(view)):
        identifier = f"{iceberg_cfg.namespace}.{name}"
        if catalog.table_exists(identifier):
            report.tables.append(identifier)
            if not dry_run:
                with contextlib.suppress(NoSuchTableError):
                    catalog.purge_table(identifier)

    if not dry_run:
        shutil.rmtree(FlinkJobConfig().checkpoint_dir / view.qualified_name, ignore_errors=True)

    if topic:
        report.topic = view.source.topic
        if not dry_run:
            admin = AdminClient({"bootstrap.servers": KafkaConfig().bootstrap_servers})
            for future in admin.delete_topics([view.source.topic], operation_timeout=10).values():
                with contextlib.suppress(Exception):  # an absent topic is already reset
                    future.result()
            for future in admin.delete_consumer_groups([f"parity-{view.qualified_name}"]).values():
                with contextlib.suppress(Exception):
                    future.result()
    return report
