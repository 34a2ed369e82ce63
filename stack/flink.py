"""A Flink standalone cluster (one JobManager, one or more TaskManagers) run from the PyFlink wheel.

FLINK_HOME is the wheel's pyflink folder; configuration, logs and pid files
live under the stack's home, so the venv itself is only read (plus the
connector jars `fetch` puts into its lib/).

PARITY_STACK_FLINK_TASKMANAGERS sets how many TaskManagers `up` starts.
Flink's scripts keep one pid file per daemon kind with one line per instance
started (dead ones stay listed). Every TaskManager started here gets its own
resource id (its name in the REST API) and ephemeral RPC and data ports, so
several run side by side; `start_taskmanager` and `kill_taskmanager` add and
remove one under a running cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.config import StackConfig
from stack.fetch import pyflink_dir
from stack.status import Info

NAME = "flink"
MARKER = "org.apache.flink"
JOBMANAGER = "standalonesession"
TASKMANAGER = "taskexecutor"
RESOURCE_ID = "taskmanager.resource-id"


PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def settings(cfg: StackConfig) -> dict[str, str]:
    """Overrides applied on top of the wheel's conf/config.yaml."""
    h = cfg.host
    python = str(cfg.job_venv_dir / "bin" / "python")
    return {
        "jobmanager.rpc.address": h,
        "jobmanager.rpc.port": str(cfg.flink_rpc_port),
        "jobmanager.bind-host": h,
        "taskmanager.bind-host": h,
        "taskmanager.host": h,
        # Ephemeral, so that several TaskManagers share the host.
        "taskmanager.rpc.port": "0",
        "taskmanager.data.port": "0",
        "rest.address": h,
        "rest.bind-address": h,
        "rest.port": str(cfg.flink_rest_port),
        "taskmanager.numberOfTaskSlots": "2",
        "parallelism.default": "2",
        # Sized for a 2-core machine that also runs Kafka and the registry.
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": "2048m",
        # Python workers and the job client use the job venv without -pyexec.
        "python.executable": python,
        "python.client.executable": python,
        "env.pid.dir": str(pid_dir(cfg)),
        "env.log.dir": str(log_dir(cfg)),
        "io.tmp.dirs": str(cfg.service_dir(NAME) / "tmp"),
        # Hadoop's shutdown hook touches the job's classloader after `flink run` returns;
        # the check then prints a harmless stack trace on every submission.
        "classloader.check-leaked-classloader": "false",
        # Flink's own metrics for Prometheus (plugins/metrics-prometheus ships in the wheel).
        "metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER,
        "metrics.reporter.prom.host": h,
        "metrics.reporter.prom.port": f"{cfg.flink_metrics_ports[0]}-{cfg.flink_metrics_ports[1]}",
        # A chained task's name lists all its operators; operator_name labels a metric enough.
        "metrics.reporter.prom.scope.variables.excludes": "task_name",
        **cfg.flink_extra_conf,
    }


def conf_dir(cfg: StackConfig) -> Path:
    return cfg.service_dir(NAME) / "conf"


def log_dir(cfg: StackConfig) -> Path:
    return cfg.logs_dir / NAME


def pid_dir(cfg: StackConfig) -> Path:
    return cfg.run_dir / NAME


def env(cfg: StackConfig, java: str | None = None) -> dict[str, str]:
    """Environment for the scripts in <pyflink>/bin, `flink run` included."""
    home = pyflink_dir(cfg)
    result = {
        **os.environ,
        "FLINK_HOME": str(home),
        "FLINK_CONF_DIR": str(conf_dir(cfg)),
        "FLINK_LOG_DIR": str(log_dir(cfg)),
        "FLINK_PID_DIR": str(pid_dir(cfg)),
    }
    if java is not None:
        # The scripts take JAVA_HOME over PATH; point it at the Java we checked.
        result["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    return result


def flink_bin(cfg: StackConfig) -> Path:
    """<pyflink>/bin/flink: run it with env(cfg) to submit to this cluster."""
    return pyflink_dir(cfg) / "bin" / "flink"


def write_config(cfg: StackConfig, java: str) -> Path:
    home = pyflink_dir(cfg)
    conf = conf_dir(cfg)
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(home / "conf", conf)
    for folder in (log_dir(cfg), pid_dir(cfg), cfg.service_dir(NAME) / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    # Flink's own config tool edits config.yaml, so the YAML stays Flink's.
    args = [arg for key, value in settings(cfg).items() for arg in ("-D", f"{key}={value}")]
    result = subprocess.run(
        [
            "bash",
            str(home / "bin" / "config-parser-utils.sh"),
            str(conf),
            str(home / "bin"),
            str(home / "lib"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env(cfg, java),
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"flink: writing {conf / 'config.yaml'} failed:\n{result.stdout}{result.stderr}")
    return conf / "config.yaml"


def _script(cfg: StackConfig, name: str, *args: str, java: str | None = None) -> None:
    script = pyflink_dir(cfg) / "bin" / name
    result = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env=env(cfg, java),
        start_new_session=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"flink: {name} {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


def daemon_pids(cfg: StackConfig, kind: str, check_marker: bool = True) -> list[int]:
    """Running daemons of one kind (standalonesession, taskexecutor) in start order, from the pid file.

    Right after a start the pid may still run the launcher shell that is
    about to exec java, so start-up checks pass check_marker=False.
    """
    found: list[int] = []
    for pid_file in sorted(pid_dir(cfg).glob(f"flink-*-{kind}.pid")):
        for word in pid_file.read_text().split():
            pid = int(word) if word.isdigit() else 0
            if pid and process.alive(pid) and (not check_marker or MARKER in process.command_line(pid)):
                found.append(pid)
    return found


def taskmanager_pids(cfg: StackConfig, check_marker: bool = True) -> list[int]:
    """Every running TaskManager of the cluster, oldest first."""
    return daemon_pids(cfg, TASKMANAGER, check_marker)


def pids(cfg: StackConfig, check_marker: bool = True) -> dict[str, int]:
    """The oldest running daemon of each kind (standalonesession, taskexecutor)."""
    found: dict[str, int] = {}
    for kind in (JOBMANAGER, TASKMANAGER):
        running = daemon_pids(cfg, kind, check_marker)
        if running:
            found[kind] = running[0]
    return found


def taskmanager_id(pid: int) -> str | None:
    """The resource id a TaskManager started here runs under: its id in the REST API."""
    prefix = f"{RESOURCE_ID}="
    words = process.command_line(pid).split()
    return next((w[len(prefix) :] for w in words if w.startswith(prefix)), None)


def registered_taskmanagers(cfg: StackConfig) -> list[str]:
    """Ids of the TaskManagers the JobManager lists (a killed one stays until its heartbeat times out)."""
    data = _rest(cfg, "/taskmanagers")
    found = data.get("taskmanagers", [])
    return [str(tm["id"]) for tm in found if isinstance(tm, dict)] if isinstance(found, list) else []


def log_file(cfg: StackConfig, kind: str = "standalonesession") -> Path:
    logs = sorted(log_dir(cfg).glob(f"flink-*-{kind}-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else log_dir(cfg) / f"flink-{kind}.log"


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    if JOBMANAGER in pids(cfg) and _answers(cfg):
        # TaskManagers died under a live JobManager: replace only them, so the jobs
        # running there restart from their checkpoints instead of dying with the cluster.
        for _ in range(cfg.flink_taskmanagers - len(taskmanager_pids(cfg))):
            start_taskmanager(cfg)
        process.wait_until(
            lambda: is_up(cfg),
            service=f"{NAME} taskmanagers",
            log_file=log_file(cfg, TASKMANAGER),
            timeout_s=cfg.start_timeout_s,
        )
        return
    stop(cfg)  # a half-started cluster from an earlier run, and stale pid files
    process.check_ports_free(
        NAME,
        {
            "PARITY_STACK_FLINK_REST_PORT": cfg.flink_rest_port,
            "PARITY_STACK_FLINK_RPC_PORT": cfg.flink_rpc_port,
        },
        cfg.host,
    )
    java = process.java()
    write_config(cfg, java)
    _script(cfg, "jobmanager.sh", "start", java=java)
    for _ in range(cfg.flink_taskmanagers):
        _script(cfg, "taskmanager.sh", "start", *_taskmanager_args(), java=java)

    def running() -> bool:
        started = len(taskmanager_pids(cfg, check_marker=False))
        return JOBMANAGER in pids(cfg, check_marker=False) and started >= cfg.flink_taskmanagers

    try:
        process.wait_until(
            lambda: is_up(cfg),
            service=NAME,
            log_file=log_file(cfg),
            timeout_s=cfg.start_timeout_s,
            running=running,
        )
    except StackError as exc:
        tm = log_file(cfg, TASKMANAGER)
        raise StackError(f"{exc}\ntaskmanager log: {tm}\n{process.tail(tm, 10)}") from None


def _taskmanager_args(resource_id: str | None = None, process_size: str | None = None) -> list[str]:
    """Dynamic properties of one TaskManager: a resource id of its own, and its memory when given."""
    args = ["-D", f"{RESOURCE_ID}={resource_id or f'taskmanager-{uuid.uuid4().hex[:8]}'}"]
    if process_size is not None:
        args += ["-D", f"taskmanager.memory.process.size={process_size}"]
    return args


def start_taskmanager(cfg: StackConfig, process_size: str | None = None) -> int:
    """Start one more TaskManager for the running JobManager, with the cluster's configuration.

    Args:
        cfg: the stack's settings.
        process_size: its memory (taskmanager.memory.process.size), when not the cluster's.

    Returns:
        The pid of its JVM, once the JobManager lists it.

    Raises:
        StackError: the cluster was never configured, or the TaskManager does not register in time.
    """
    if not (conf_dir(cfg) / "config.yaml").is_file():
        raise StackError(
            f"flink: no {conf_dir(cfg) / 'config.yaml'}; start the cluster with `parity stack up`"
        )
    resource_id = f"taskmanager-{uuid.uuid4().hex[:8]}"
    before = set(taskmanager_pids(cfg, check_marker=False))
    args = _taskmanager_args(resource_id, process_size)
    _script(cfg, "taskmanager.sh", "start", *args, java=process.java())
    # The pid file lists the launcher at once; its command line names the id once it runs java.
    started = [p for p in taskmanager_pids(cfg, check_marker=False) if p not in before]

    def own() -> int | None:
        return next((p for p in taskmanager_pids(cfg) if taskmanager_id(p) == resource_id), None)

    process.wait_until(
        lambda: own() is not None and resource_id in _registered_or_none(cfg),
        service=f"{NAME} taskmanager {resource_id}",
        log_file=log_file(cfg, TASKMANAGER),
        timeout_s=cfg.start_timeout_s,
        running=lambda: any(process.alive(p) for p in started),
    )
    pid = own()
    assert pid is not None  # checked by the wait
    return pid


def kill_taskmanager(cfg: StackConfig, pid: int) -> None:
    """SIGKILL one TaskManager and its Python workers, as a lost machine would vanish.

    Raises:
        StackError: pid is not a running TaskManager of this cluster.
    """
    if pid not in taskmanager_pids(cfg):
        raise StackError(f"flink: pid {pid} is not a running TaskManager of this cluster")
    workers = process.descendants(pid)
    for victim in (pid, *workers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    process.wait_until(
        lambda: not any(process.alive(p) for p in (pid, *workers)),
        service=f"{NAME} taskmanager {pid}",
        log_file=log_file(cfg, TASKMANAGER),
        timeout_s=30,
    )


def stop_taskmanager(cfg: StackConfig, pid: int) -> None:
    """Stop one TaskManager (SIGTERM, then SIGKILL); a no-op when it no longer runs."""
    if pid in taskmanager_pids(cfg):
        process.stop_pid(pid)


def _answers(cfg: StackConfig) -> bool:
    try:
        overview(cfg)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True


def stop(cfg: StackConfig) -> None:
    # TaskManagers first: a JobManager that goes first leaves them retrying to reconnect.
    for pid in (*taskmanager_pids(cfg), *daemon_pids(cfg, JOBMANAGER)):
        process.stop_pid(pid)
    for pid_file in pid_dir(cfg).glob("flink-*.pid"):
        pid_file.unlink()


def _rest(cfg: StackConfig, path: str, timeout_s: float = 2.0) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{cfg.host}:{cfg.flink_rest_port}{path}", timeout=timeout_s) as resp:
        data = json.loads(resp.read())
    return data if isinstance(data, dict) else {}


def _registered_or_none(cfg: StackConfig) -> list[str]:
    try:
        return registered_taskmanagers(cfg)
    except (OSError, urllib.error.URLError, ValueError):
        return []


def overview(cfg: StackConfig, timeout_s: float = 2.0) -> dict[str, object]:
    return _rest(cfg, "/overview", timeout_s)


def is_up(cfg: StackConfig) -> bool:
    """The JobManager answers and lists at least flink_taskmanagers TaskManagers."""
    try:
        taskmanagers = overview(cfg).get("taskmanagers", 0)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(taskmanagers, int) and taskmanagers >= cfg.flink_taskmanagers


def info(cfg: StackConfig) -> Info:
    url = f"http://{cfg.host}:{cfg.flink_rest_port}"
    try:
        log = log_file(cfg)
        pid = pids(cfg).get(JOBMANAGER)
    except StackError:  # no job venv: nothing can run
        log, pid = log_dir(cfg), None
    return Info(NAME, url, pid, log, is_up(cfg))
