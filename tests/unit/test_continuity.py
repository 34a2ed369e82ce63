"""Where a streaming job starts from (jobs.continuity), and offline reads refusing duplicate tiles."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from features.user_stats import view as user_stats
from jobs.console import USER_PREFIX, say
from jobs.continuity import StartKind, StoredProgress, heal_command, newest_state, plan_start
from parity.errors import JobError, ReadError
from serving.offline import _refuse_duplicates

HOUR = 3_600_000
NOTHING = StoredProgress(None, None, None)


def _state(root: Path, relative: str, mtime: int) -> Path:
    folder = root / relative
    folder.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"x")
    os.utime(folder / "_metadata", ns=(mtime, mtime))
    return folder


def test_newest_of_checkpoints_and_savepoints_wins(tmp_path):
    _state(tmp_path, "job-a/chk-3", 1_000)
    savepoint = _state(tmp_path, "savepoints/savepoint-abc", 3_000)
    _state(tmp_path, "job-b/chk-9", 2_000)
    (tmp_path / "job-b" / "chk-10").mkdir()  # in progress: no _metadata yet
    assert newest_state(tmp_path) == savepoint
    assert newest_state(tmp_path / "absent") is None


def test_a_first_run_starts_fresh_with_nothing_closed(tmp_path):
    plan = plan_start(user_stats, tmp_path, NOTHING)
    assert (plan.kind, plan.state, plan.closed_before_ms, plan.lost) == (StartKind.FRESH, None, 0, None)


def test_retained_state_is_resumed_and_offline_completeness_closes(tmp_path):
    checkpoint = _state(tmp_path, "job/chk-1", 1)
    # Redis may run ahead of the checkpoint; only Iceberg's completeness is covered by it.
    plan = plan_start(user_stats, tmp_path, StoredProgress(10 * HOUR, 12 * HOUR, None))
    assert (plan.kind, plan.state, plan.closed_before_ms) == (StartKind.RESUME, checkpoint, 10 * HOUR)
    assert any("resuming" in line for line in plan.describe(user_stats))


def test_a_named_state_must_be_complete(tmp_path):
    with pytest.raises(JobError, match="not a completed checkpoint"):
        plan_start(user_stats, tmp_path, NOTHING, from_state=tmp_path / "nowhere")


def test_progress_without_state_is_refused_unless_asked(tmp_path):
    progress = StoredProgress(10 * HOUR, 11 * HOUR, (10 * HOUR + 5, 13 * HOUR + 7), {0: 42})
    with pytest.raises(JobError, match="--without-state"):
        plan_start(user_stats, tmp_path, progress)
    plan = plan_start(user_stats, tmp_path, progress, without_state=True)
    assert plan.kind is StartKind.WITHOUT_STATE
    assert plan.closed_before_ms == 11 * HOUR  # the newer store's: no closed tile is redone
    assert plan.lost == (10 * HOUR, 14 * HOUR)
    # It reads on right after the archive, never from the group's possibly older offsets.
    assert plan.offsets_for([0, 1]) == {0: 42, 1: 0}
    text = "\n".join(plan.describe(user_stats))
    assert heal_command(user_stats, 10 * HOUR, 14 * HOUR) in text
    assert "--start 1970-01-01T10:00Z --end 1970-01-01T14:00Z --to-online" in text


def test_without_state_ignores_retained_state(tmp_path):
    _state(tmp_path, "job/chk-1", 1)
    plan = plan_start(user_stats, tmp_path, StoredProgress(HOUR, None, None), without_state=True)
    assert (plan.kind, plan.state, plan.lost) == (StartKind.WITHOUT_STATE, None, None)


def test_every_line_for_the_user_is_marked(capsys):
    say("one\ntwo")
    assert capsys.readouterr().out == f"{USER_PREFIX}one\n{USER_PREFIX}two\n"


def test_offline_reads_refuse_two_rows_for_one_tile():
    one = pa.table({"user_id": ["a", "a", "b"], "tile_start": [0, HOUR, 0], "events": [1, 2, 3]})
    _refuse_duplicates(one, user_stats, 1)
    twice = pa.table({"user_id": ["a", "a", "b"], "tile_start": [0, 0, 0], "events": [1, 2, 3]})
    with pytest.raises(
        ReadError, match=r"1 \(entity, tile_start\) keys more than once.*\(a, 1970-01-01T00:00"
    ):
        _refuse_duplicates(twice, user_stats, 1)
