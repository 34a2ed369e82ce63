"""Starting and controlling feature jobs from the client environment.

The job runtime (PyFlink) lives in its own virtualenv; the client only spawns
its Python (``parity job run``, a local mini-cluster) or the ``flink`` CLI of
the same install (``parity job submit``, the standalone cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from jobs.console import USER_PREFIX
from parity.errors import JobError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def job_python() -> Path:
    """The job runtime's interpreter: PARITY_JOB_PYTHON, or .venv-job/bin/python."""
    configured = os.environ.get("PARITY_JOB_PYTHON")
    path = Path(configured) if configured else PROJECT_ROOT / ".venv-job" / "bin" / "python"
    if not path.exists():
        raise JobError(
            f"the job runtime is not installed ({path} is missing); run `make setup` to create it, "
            "or set PARITY_JOB_PYTHON to a Python with apache-flink installed."
        )
    return path


def stream_command(
    view: str,
    *,
    bounded: bool = False,
    drain: bool = False,
    from_checkpoint: Path | None = None,
    without_state: bool = False,
    group_id: str | None = None,
    parallelism: int | None = None,
    topic: str | None = None,
) -> list[str]:
    """The argv that runs a view's streaming job in a local mini-cluster."""
    cmd = [str(job_python()), "-m", "jobs.stream", "--view", view]
    if bounded:
        cmd.append("--bounded")
    if drain:
        cmd.append("--drain")
    cmd += _state_args(from_checkpoint, without_state)
    if group_id:
        cmd += ["--group-id", group_id]
    if parallelism:
        cmd += ["--parallelism", str(parallelism)]
    if topic:
        cmd += ["--topic", topic]
    return cmd


def start_local(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a job process in the background, its output in log_path.

    It gets its own process group, so the job and its Python workers can be
    signalled (or killed) together.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_job_env(env),
            start_new_session=True,
        )


def _state_args(from_checkpoint: Path | None, without_state: bool) -> list[str]:
    args = ["--from-checkpoint", str(from_checkpoint)] if from_checkpoint is not None else []
    return args + (["--without-state"] if without_state else [])


def job_log(view: str) -> Path:
    """Where ``parity job run`` keeps a view's job log: .parity/logs/job-<view>.log."""
    from parity.config import DEFAULT_HOME

    return DEFAULT_HOME / "logs" / f"job-{view}.log"


def run_local(cmd: list[str], log_path: Path) -> int:
    """Run a job in the foreground: its own lines to this terminal, Flink's log to log_path.

    On failure the last lines of the log are shown too, so the cause is on screen.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"job log: {log_path}", flush=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=_job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        # Ctrl-C reaches the job too, which stops with a savepoint; this process waits for it.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        tail: list[bytes] = []
        for raw in proc.stdout:
            log.write(raw)
            tail = [*tail[-19:], raw]
            line = raw.decode(errors="replace")
            if line.startswith(USER_PREFIX):
                print(line[len(USER_PREFIX) :], end="", flush=True)
        code = proc.wait()
        signal.signal(signal.SIGINT, previous)
    if code != 0:
        shown = b"".join(tail).decode(errors="replace")
        print(f"the job exited with {code}; the end of {log_path}:\n{shown}", file=sys.stderr, flush=True)
    return code


def _job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return env


def flink_cli(args: list[str]) -> int:
    """Run ``flink <args>`` against the local standalone cluster (``make up``)."""
    from stack import flink
    from stack.config import StackConfig

    cfg = StackConfig()
    if not flink.is_up(cfg):
        raise JobError(
            "the Flink standalone cluster is not running; start it with `make up` (or parity stack up)"
        )
    env = flink.env(cfg)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.call([str(flink.flink_bin(cfg)), *args], cwd=PROJECT_ROOT, env=env)


def submit(
    view: str,
    *,
    from_checkpoint: Path | None = None,
    without_state: bool = False,
    parallelism: int | None = None,
    topic: str | None = None,
    group_id: str | None = None,
) -> int:
    """Submit a view's streaming job to the standalone cluster, detached.

    The job itself picks the state it resumes from (jobs.continuity), as a local run does.
    """
    python = str(job_python())
    args = ["run", "--detached", "-py", str(PROJECT_ROOT / "jobs" / "stream.py"), "-pyexec", python]
    args += ["-pyclientexec", python]
    args += ["--view", view, "--detached", *_state_args(from_checkpoint, without_state)]
    if parallelism:
        args += ["--parallelism", str(parallelism)]
    if topic:
        args += ["--topic", topic]
    if group_id:
        args += ["--group-id", group_id]
    return flink_cli(args)
