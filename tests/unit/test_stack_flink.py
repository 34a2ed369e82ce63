"""The TaskManagers of the standalone cluster: pid files, ids, start, top-up and stop, without Flink."""

import os
import subprocess
import sys
import time

import pytest

from parity.errors import StackError
from stack import flink, process
from stack.config import StackConfig

TASKMANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("PARITY_STACK_FLINK_TASKMANAGERS", raising=False)
    return StackConfig(home=tmp_path / "home", cache=tmp_path / "cache", job_venv=tmp_path / "venv")


@pytest.fixture
def fake_taskmanager():
    """A process whose command line looks like a TaskManager's JVM."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", TASKMANAGER_MAIN]
    proc = subprocess.Popen([*argv, "-D", f"{flink.RESOURCE_ID}=taskmanager-unit", "--configDir", "/x"])
    deadline = time.monotonic() + 10
    while flink.MARKER not in process.command_line(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd
    yield proc.pid
    proc.kill()
    proc.wait()


def write_pids(cfg: StackConfig, kind: str, *pids: int) -> None:
    flink.pid_dir(cfg).mkdir(parents=True, exist_ok=True)
    (flink.pid_dir(cfg) / f"flink--{kind}.pid").write_text("".join(f"{pid}\n" for pid in pids))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_every_running_taskmanager_of_the_pid_file_in_start_order(cfg, fake_taskmanager):
    write_pids(cfg, flink.TASKMANAGER, dead_pid(), fake_taskmanager, os.getpid())
    # Dead lines are skipped; a live pid without Flink on its command line is not a TaskManager.
    assert flink.taskmanager_pids(cfg) == [fake_taskmanager]
    assert flink.taskmanager_pids(cfg, check_marker=False) == [fake_taskmanager, os.getpid()]
    assert flink.pids(cfg) == {flink.TASKMANAGER: fake_taskmanager}


def test_taskmanager_id_is_read_from_its_command_line(fake_taskmanager):
    assert flink.taskmanager_id(fake_taskmanager) == "taskmanager-unit"
    assert flink.taskmanager_id(os.getpid()) is None


def test_each_taskmanager_gets_its_own_resource_id():
    first, second = flink._taskmanager_args(), flink._taskmanager_args()
    assert first[0] == "-D" and first[1].startswith(f"{flink.RESOURCE_ID}=taskmanager-")
    assert first != second
    assert flink._taskmanager_args("tm-a", "1536m") == [
        "-D",
        f"{flink.RESOURCE_ID}=tm-a",
        "-D",
        "taskmanager.memory.process.size=1536m",
    ]


def test_up_means_every_configured_taskmanager_is_listed(cfg, monkeypatch):
    two = cfg.model_copy(update={"flink_taskmanagers": 2})
    monkeypatch.setattr(flink, "overview", lambda cfg: {"taskmanagers": 1})
    assert flink.is_up(cfg)
    assert not flink.is_up(two)


def test_start_replaces_only_the_missing_taskmanagers_under_a_live_jobmanager(cfg, monkeypatch):
    three = cfg.model_copy(update={"flink_taskmanagers": 3})
    started: list[str | None] = []
    monkeypatch.setattr(flink, "is_up", lambda cfg: len(started) == 2)
    monkeypatch.setattr(flink, "pids", lambda cfg, check_marker=True: {flink.JOBMANAGER: 1})
    monkeypatch.setattr(flink, "_answers", lambda cfg: True)
    monkeypatch.setattr(flink, "taskmanager_pids", lambda cfg, check_marker=True: [2])
    monkeypatch.setattr(flink, "start_taskmanager", lambda cfg, process_size=None: started.append(None))
    monkeypatch.setattr(flink, "stop", lambda cfg: pytest.fail("the live JobManager was stopped"))
    flink.start(three)
    assert len(started) == 2


def test_stop_ends_every_taskmanager_before_the_jobmanager(cfg, monkeypatch):
    write_pids(cfg, flink.JOBMANAGER, 10)
    write_pids(cfg, flink.TASKMANAGER, 11, 12)
    monkeypatch.setattr(process, "alive", lambda pid: True)
    monkeypatch.setattr(process, "command_line", lambda pid: f"java {TASKMANAGER_MAIN}")
    stopped: list[int] = []
    monkeypatch.setattr(process, "stop_pid", stopped.append)
    flink.stop(cfg)
    assert stopped == [11, 12, 10]
    assert not list(flink.pid_dir(cfg).glob("*.pid"))


def test_only_a_taskmanager_of_this_cluster_is_killed(cfg, fake_taskmanager):
    write_pids(cfg, flink.TASKMANAGER, fake_taskmanager)
    with pytest.raises(StackError, match=f"pid {os.getpid()} is not a running TaskManager"):
        flink.kill_taskmanager(cfg, os.getpid())
    flink.kill_taskmanager(cfg, fake_taskmanager)
    assert not process.alive(fake_taskmanager)
    assert flink.taskmanager_pids(cfg) == []


def test_start_taskmanager_needs_a_configured_cluster(cfg):
    with pytest.raises(StackError, match="start the cluster"):
        flink.start_taskmanager(cfg)
