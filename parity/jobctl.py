"""Starting and controlling feature jobs from the client environment.

The job runtime (PyFlink) lives in its own virtualenv; the client only spawns
its Python (``parity job run``, a local mini-cluster) or the ``flink`` CLI of
the same install (``parity job submit``, the standalone cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    if from_checkpoint is not None:
        cmd += ["--from-checkpoint", str(from_checkpoint)]
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


def run_local(cmd: list[str]) -> int:
    """Run a job in the foreground; its output goes to this terminal."""
    return subprocess.call(cmd, cwd=PROJECT_ROOT, env=_job_env(), stdout=sys.stdout, stderr=sys.stderr)


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
    parallelism: int | None = None,
    topic: str | None = None,
    group_id: str | None = None,
) -> int:
    """Submit a view's streaming job to the standalone cluster, detached."""
    python = str(job_python())
    args = ["run", "--detached", "-py", str(PROJECT_ROOT / "jobs" / "stream.py"), "-pyexec", python]
    args += ["-pyclientexec", python]
    if from_checkpoint is not None:
        args += ["--fromSavepoint", str(from_checkpoint)]
    args += ["--view", view, "--detached"]
    if parallelism:
        args += ["--parallelism", str(parallelism)]
    if topic:
        args += ["--topic", topic]
    if group_id:
        args += ["--group-id", group_id]
    return flink_cli(args)
