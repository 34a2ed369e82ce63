import os
import re
import socket
import sys

import pytest

from parity.errors import StackError
from stack import process


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_port_in_use(listener):
    assert process.port_in_use(listener)
    assert not process.port_in_use(free_port())


def test_port_owner_names_the_process(listener):
    owner = process.port_owner(listener)
    assert owner is not None
    assert f"pid {os.getpid()}" in owner


def test_taken_port_error_names_port_owner_and_setting(listener):
    with pytest.raises(StackError) as err:
        process.check_ports_free("redis", {"PARITY_STACK_REDIS_PORT": listener})
    text = str(err.value)
    assert f"port {listener} is already taken by pid {os.getpid()}" in text
    assert "PARITY_STACK_REDIS_PORT=" in text


def test_free_ports_pass():
    process.check_ports_free("redis", {"PARITY_STACK_REDIS_PORT": free_port()})


def test_start_failure_shows_log_tail_and_fix(tmp_path):
    log = tmp_path / "kafka.log"
    log.write_text(
        "\n".join(f"line {i}" for i in range(100)) + "\njava.net.BindException: Address already in use\n"
    )
    text = str(process.start_failure("kafka", log, "it did not answer within 60 s"))
    assert text.startswith("kafka failed to start: it did not answer within 60 s")
    assert str(log) in text
    assert "line 99" in text
    assert "line 50" not in text  # only the last lines
    assert "a port is taken" in text


@pytest.mark.parametrize(
    ("line", "fix"),
    [
        ("java.lang.ClassNotFoundException: kafka.Kafka", "python -m stack fetch"),
        ("Error: Could not find or load main class kafka.Kafka", "python -m stack fetch"),
        ("UnsupportedClassVersionError: compiled by a more recent version", "Java"),
        ("java.lang.OutOfMemoryError: Java heap space", "memory"),
        ("something else", "python -m stack down"),
    ],
)
def test_likely_fix(line, fix):
    assert fix in process.likely_fix(line)


def test_missing_log_is_reported(tmp_path):
    assert "no log at" in process.tail(tmp_path / "none.log")


def test_read_pid_ignores_stale_and_foreign_pids(tmp_path):
    pid_file = tmp_path / "x.pid"
    assert process.read_pid(pid_file, "anything") is None
    pid_file.write_text(f"{os.getpid()}\n")
    assert process.read_pid(pid_file, "no-such-marker-in-cmdline") is None
    assert process.read_pid(pid_file, "python") == os.getpid()
    pid_file.write_text("not a pid")
    assert process.read_pid(pid_file, "python") is None


def test_spawn_then_stop(tmp_path):
    log, pid_file = tmp_path / "logs" / "s.log", tmp_path / "run" / "s.pid"
    proc = process.spawn(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
        log_file=log,
        pid_file=pid_file,
    )
    process.wait_until(lambda: "ready" in log.read_text(), service="s", log_file=log, timeout_s=20, proc=proc)
    assert process.read_pid(pid_file, "time.sleep") == proc.pid
    process.stop_by_pid_file(pid_file, "time.sleep", timeout_s=5)
    assert proc.wait(timeout=5) is not None
    assert not pid_file.exists()
    process.stop_by_pid_file(pid_file, "time.sleep")  # safe when nothing runs


def test_wait_until_fails_early_when_the_process_exits(tmp_path):
    log, pid_file = tmp_path / "s.log", tmp_path / "s.pid"
    proc = process.spawn(
        [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log_file=log, pid_file=pid_file
    )
    with pytest.raises(StackError, match="exited with code 3") as err:
        process.wait_until(lambda: False, service="s", log_file=log, timeout_s=30, proc=proc)
    assert "boom" in str(err.value)


def test_wait_until_times_out(tmp_path):
    with pytest.raises(StackError, match="did not answer within"):
        process.wait_until(
            lambda: False, service="s", log_file=tmp_path / "s.log", timeout_s=0.2, interval_s=0.05
        )


def test_java_not_found_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojava"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"Java 17 not found .*openjdk-17-jre-headless"):
        process.java()


def test_java_too_old_is_skipped(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    process.java_major.cache_clear()
    with pytest.raises(StackError, match=r"Java 17 not found .*Java 11"):
        process.java()


def test_stop_also_ends_workers_the_process_started(tmp_path):
    log, pid_file = tmp_path / "p.log", tmp_path / "p.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child-pid', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = process.spawn([sys.executable, "-c", script], log_file=log, pid_file=pid_file)
    try:
        # The log also holds the command line, so match the printed line only.
        printed = re.compile(r"^child-pid (\d+)$", re.MULTILINE)
        process.wait_until(
            lambda: bool(printed.search(log.read_text())), service="p", log_file=log, timeout_s=20
        )
        found = printed.search(log.read_text())
        assert found
        child = int(found.group(1))
        assert child in process.descendants(proc.pid)
        process.stop_pid(proc.pid, timeout_s=5)
        proc.wait(timeout=5)
        process.wait_until(lambda: not process.alive(child), service="p", log_file=log, timeout_s=5)
    finally:
        process.stop_pid(proc.pid, timeout_s=1)
