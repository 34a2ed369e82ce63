"""Start, watch and stop detached local processes: one log file and one pid file each."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from parity.errors import StackError

TAIL_LINES = 20


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file, or a note when there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already holds the port (bind fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT after a clean stop is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_owner(port: int) -> str | None:
    """'pid N (command)' of the process listening on the port, when /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address is HEX_IP:HEX_PORT; state 0A is LISTEN
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if str(fd.readlink()) in wanted:
                    return f"pid {proc.name} ({' '.join(command_line(int(proc.name)).split())[:120]})"
    return None


def check_ports_free(service: str, ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Fail before starting when a port is taken; ports maps the setting's variable name to its port."""
    for variable, port in ports.items():
        if port_in_use(port, host):
            owner = port_owner(port) or "another process"
            raise StackError(
                f"{service}: port {port} is already taken by {owner}. "
                f"Stop that process, or move {service} elsewhere with {variable}=<free port>."
            )


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in the file if that process still runs and its command line holds marker.

    The marker guards against a stale pid file whose number now belongs to
    an unrelated process.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if alive(pid) and marker in command_line(pid):
        return pid
    return None


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv in its own session, output appended to log_file, pid written to pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,  # survives the CLI and gets no terminal signals
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def wait_until(
    check: Callable[[], bool],
    *,
    service: str,
    log_file: Path,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    running: Callable[[], bool] | None = None,
    interval_s: float = 0.3,
) -> None:
    """Poll check() until it is true; fail early when proc exits or running() turns false."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise start_failure(service, log_file, f"the process exited with code {proc.returncode}")
        if running is not None and not running():
            raise start_failure(service, log_file, "its process exited")
        if time.monotonic() > deadline:
            raise start_failure(service, log_file, f"it did not answer within {timeout_s:.0f} s")
        time.sleep(interval_s)


# Known log lines and what usually fixes them.
HINTS: tuple[tuple[str, str], ...] = (
    (
        r"Address already in use|BindException",
        "a port is taken by another process; run `python -m stack status`",
    ),
    (
        r"ClassNotFoundException|NoClassDefFoundError|Could not find or load main class",
        "jars are missing or incomplete; run `python -m stack fetch`",
    ),
    (
        r"UnsupportedClassVersionError",
        "Java is too old; install Java 17: apt-get install -y openjdk-17-jre-headless",
    ),
    (r"OutOfMemoryError|Cannot allocate memory", "not enough memory; stop other services or lower the heap"),
)


def likely_fix(log_text: str) -> str:
    for pattern, fix in HINTS:
        if re.search(pattern, log_text):
            return fix
    return "read the log above; `python -m stack down` then `python -m stack up` retries from a clean start"


def start_failure(service: str, log_file: Path, why: str) -> StackError:
    last = tail(log_file)
    return StackError(
        f"{service} failed to start: {why}.\n"
        f"log: {log_file}\n--- last {TAIL_LINES} lines ---\n{last}\n---\n"
        f"likely fix: {likely_fix(last)}"
    )


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of pid, from the parent ids in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        kids = [child for child, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.1)
    return not alive(pid)


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process (and its session), then SIGKILL after timeout_s.

    Workers it started (Flink's Python UDF processes) are killed too if they
    outlive it, so nothing is left holding ports or memory.
    """
    children = descendants(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # also reaches children it started
            else:
                os.kill(pid, sig)
        if _wait_gone(pid, timeout_s):
            break
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            if alive(child):
                os.kill(child, signal.SIGKILL)
    if alive(pid):
        raise StackError(f"process {pid} did not stop even after SIGKILL")


def stop_by_pid_file(pid_file: Path, marker: str, timeout_s: float = 20.0) -> None:
    pid = read_pid(pid_file, marker)
    if pid is not None:
        stop_pid(pid, timeout_s)
    pid_file.unlink(missing_ok=True)


@functools.cache
def java_major(binary: str) -> int:
    """The major version `binary -version` reports, 0 when it does not run."""
    try:
        out = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False).stderr
    except OSError:
        return 0
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8" style


def java(min_version: int = 17, search_jvm_dir: bool = False) -> str:
    """A java binary of at least min_version: JAVA_HOME first, then PATH.

    With search_jvm_dir, JDKs installed side by side under /usr/lib/jvm are
    tried too (newest first), for an app that needs a newer Java than the rest.
    """
    candidates: list[str] = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(home) / "bin" / "java"))
    if on_path := shutil.which("java"):
        candidates.append(on_path)
    if search_jvm_dir:
        found = [str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java")]
        candidates += sorted(found, key=java_major, reverse=True)
    for candidate in candidates:
        if Path(candidate).exists() and java_major(candidate) >= min_version:
            return candidate
    seen = ", ".join(f"{c} (Java {java_major(c) or '?'})" for c in dict.fromkeys(candidates)) or "none"
    raise StackError(
        f"Java {min_version} not found (tried: {seen}); install Java {min_version} or newer "
        f"(apt-get install -y openjdk-{min_version}-jre-headless where Debian has it) and set JAVA_HOME"
    )
