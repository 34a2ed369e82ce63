import json
import socket

import pytest

from parity.errors import StackError
from stack import cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def nothing_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_STACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PARITY_STACK_JOB_VENV", str(tmp_path / "venv"))
    for name in (
        "KAFKA_PORT",
        "KAFKA_CONTROLLER_PORT",
        "REGISTRY_PORT",
        "REGISTRY_MANAGEMENT_PORT",
        "REDIS_PORT",
        "FLINK_REST_PORT",
        "FLINK_RPC_PORT",
        "PROMETHEUS_PORT",
    ):
        monkeypatch.setenv(f"PARITY_STACK_{name}", str(free_port()))


def test_selected_keeps_start_order():
    assert [s.name for s in cli.selected("flink,kafka")] == ["kafka", "flink"]
    assert [s.name for s in cli.selected(None)] == ["kafka", "registry", "redis", "flink", "prometheus"]


def test_unknown_service_is_named():
    with pytest.raises(
        StackError, match=r"unknown service.*bogus.*choose from kafka, registry, redis, flink, prometheus"
    ):
        cli.selected("redis,bogus")


def test_status_exits_1_when_down(nothing_runs, capsys):
    assert cli.main(["status"]) == 1
    out = capsys.readouterr().out
    assert out.count("DOWN") == 5


def test_status_json(nothing_runs, capsys):
    assert cli.main(["status", "--json", "--only", "redis"]) == 1
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "redis"
    assert row["up"] is False
    assert row["log"].endswith("redis.log")


def test_down_is_safe_when_nothing_runs(nothing_runs, capsys):
    assert cli.main(["down"]) == 0
    assert capsys.readouterr().out.count("stopped") == 5


def test_errors_go_to_stderr_with_exit_1(nothing_runs, capsys):
    assert cli.main(["status", "--only", "nope"]) == 1
    assert "error: unknown service" in capsys.readouterr().err
