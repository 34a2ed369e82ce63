"""A Flink standalone cluster (one JobManager, one TaskManager) run from the PyFlink wheel.

FLINK_HOME is the wheel's pyflink folder; configuration, logs and pid files
live under the stack's home, so the venv itself is only read (plus the
connector jars `fetch` puts into its lib/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.config import StackConfig
from stack.fetch import pyflink_dir
from stack.status import Info

NAME = "flink"
MARKER = "org.apache.flink"


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


def pids(cfg: StackConfig, check_marker: bool = True) -> dict[str, int]:
    """Running daemons by kind (standalonesession, taskexecutor), from Flink's pid files.

    Right after a start the pid may still run the launcher shell that is
    about to exec java, so start-up checks pass check_marker=False.
    """
    found: dict[str, int] = {}
    for pid_file in sorted(pid_dir(cfg).glob("flink-*.pid")):
        kind = pid_file.stem.rsplit("-", 1)[-1]
        for word in pid_file.read_text().split():
            pid = int(word) if word.isdigit() else 0
            if pid and process.alive(pid) and (not check_marker or MARKER in process.command_line(pid)):
                found[kind] = pid
    return found


def log_file(cfg: StackConfig, kind: str = "standalonesession") -> Path:
    logs = sorted(log_dir(cfg).glob(f"flink-*-{kind}-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else log_dir(cfg) / f"flink-{kind}.log"


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    found = pids(cfg)
    if "standalonesession" in found and "taskexecutor" not in found and _answers(cfg):
        # The TaskManager died under a live JobManager: replace only it, so the jobs
        # running there restart from their checkpoints instead of dying with the cluster.
        start_taskmanager(cfg)
        return
    if found:
        stop(cfg)  # a half-started cluster from an earlier run
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
    _script(cfg, "taskmanager.sh", "start", java=java)

    def running() -> bool:
        return len(pids(cfg, check_marker=False)) == 2

    try:
        process.wait_until(
            lambda: is_up(cfg),
            service=NAME,
            log_file=log_file(cfg),
            timeout_s=cfg.start_timeout_s,
            running=running,
        )
    except StackError as exc:
        tm = log_file(cfg, "taskexecutor")
        raise StackError(f"{exc}\ntaskmanager log: {tm}\n{process.tail(tm, 10)}") from None


def start_taskmanager(cfg: StackConfig) -> None:
    """Start one more TaskManager for the running JobManager, with the cluster's configuration.

    Raises:
        StackError: the cluster was never configured, or no TaskManager registers in time.
    """
    if not (conf_dir(cfg) / "config.yaml").is_file():
        raise StackError(
            f"flink: no {conf_dir(cfg) / 'config.yaml'}; start the cluster with `parity stack up`"
        )
    before = pids(cfg, check_marker=False).get("taskexecutor")
    _script(cfg, "taskmanager.sh", "start", java=process.java())

    process.wait_until(
        lambda: is_up(cfg) and _taskexecutor_started(cfg, before),
        service=f"{NAME} taskmanager",
        log_file=log_file(cfg, "taskexecutor"),
        timeout_s=cfg.start_timeout_s,
        running=lambda: _taskexecutor_started(cfg, before),
    )


def _taskexecutor_started(cfg: StackConfig, before: int | None) -> bool:
    pid = pids(cfg, check_marker=False).get("taskexecutor")
    return pid is not None and pid != before


def _answers(cfg: StackConfig) -> bool:
    try:
        overview(cfg)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True


def stop(cfg: StackConfig) -> None:
    # TaskManager first: a JobManager that goes first leaves it retrying to reconnect.
    running = pids(cfg)
    for kind in sorted(running, key=lambda k: k != "taskexecutor"):
        process.stop_pid(running[kind])
    for pid_file in pid_dir(cfg).glob("flink-*.pid"):
        pid_file.unlink()


def overview(cfg: StackConfig, timeout_s: float = 2.0) -> dict[str, object]:
    with urllib.request.urlopen(
        f"http://{cfg.host}:{cfg.flink_rest_port}/overview", timeout=timeout_s
    ) as resp:
        data = json.loads(resp.read())
    return data if isinstance(data, dict) else {}


def is_up(cfg: StackConfig) -> bool:
    try:
        taskmanagers = overview(cfg).get("taskmanagers", 0)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(taskmanagers, int) and taskmanagers >= 1


def info(cfg: StackConfig) -> Info:
    url = f"http://{cfg.host}:{cfg.flink_rest_port}"
    try:
        log = log_file(cfg)
        pid = pids(cfg).get("standalonesession")
    except StackError:  # no job venv: nothing can run
        log, pid = log_dir(cfg), None
    return Info(NAME, url, pid, log, is_up(cfg))
