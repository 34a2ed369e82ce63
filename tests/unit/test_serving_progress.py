"""OfflineProgress against a real Iceberg catalog in a temporary folder (SQLite, local files)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from parity.config import IcebergConfig
from serving.progress import OfflineProgress
from sinks import iceberg
from tests.unit.views import user_stats


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _cfg(tmp_path) -> IcebergConfig:
    return IcebergConfig(
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=f"file://{tmp_path / 'wh'}",
        namespace="t",
    )


def _commit_progress(cfg: IcebergConfig) -> None:
    _, progress = iceberg.ensure_tables(cfg, user_stats)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    row = {"tile_start": start, "tile_end": start + timedelta(hours=1), "entities": 1, "events": 1}
    progress.append(pa.Table.from_pylist([row], schema=progress.schema().as_arrow()))


def test_no_table_then_an_empty_table_then_a_commit(tmp_path):
    cfg = _cfg(tmp_path)
    clock = _Clock()
    check = OfflineProgress(cfg, ttl_s=30, clock=clock)
    assert check.has_progress(user_stats) is False
    iceberg.ensure_tables(cfg, user_stats)
    clock.now = 31
    assert check.has_progress(user_stats) is False, "a table with no snapshot is no progress"
    _commit_progress(cfg)
    clock.now = 45
    assert check.has_progress(user_stats) is False, "the answer is kept for ttl_s"
    clock.now = 62
    assert check.has_progress(user_stats) is True


def test_a_catalog_that_cannot_be_opened_answers_none(tmp_path, caplog):
    cfg = IcebergConfig(catalog_uri="postgresql+nosuchdriver://nowhere/db", warehouse=f"file://{tmp_path}")
    assert OfflineProgress(cfg).has_progress(user_stats) is None
    assert "cannot read the offline progress" in caplog.text


def test_the_check_needs_no_pyarrow():
    # The read path installs without pyarrow: the check reads table metadata only.
    code = "import sys, serving.progress; sys.exit('pyarrow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
