"""The optional redis-cluster service: named only, one folder per node, created once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from parity.errors import StackError
from stack import cli, redis_cluster
from stack.config import StackConfig

EMPTY = {"cluster_state": "fail", "cluster_slots_assigned": "0", "cluster_known_nodes": "1"}
# Right after a restart from nodes.conf: all slots and peers known, not serving yet.
REJOINING = {"cluster_state": "fail", "cluster_slots_assigned": "16384", "cluster_known_nodes": "3"}
SERVING = {"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_known_nodes": "3"}


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("PARITY_STACK_REDIS_CLUSTER_PORTS", raising=False)
    return StackConfig(home=tmp_path)


FOLDER = Path("/home/.parity/redis-cluster")


def nodes(*infos: dict[str, str]) -> dict[str, dict[str, str]]:
    return {f"127.0.0.1:{17001 + i}": info for i, info in enumerate(infos)}


def test_runs_only_when_named():
    assert "redis-cluster" not in [s.name for s in cli.selected(None)]
    assert [s.name for s in cli.selected("redis-cluster,redis")] == ["redis", "redis-cluster"]


def test_seeds_list_the_three_nodes(cfg, monkeypatch):
    assert redis_cluster.seeds(cfg) == "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
    monkeypatch.setenv("PARITY_STACK_REDIS_CLUSTER_PORTS", "[7001, 7002, 7003]")
    assert redis_cluster.seeds(StackConfig()) == "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"


def test_ports_leave_room_for_the_cluster_bus():
    with pytest.raises(ValidationError, match="PARITY_STACK_REDIS_CLUSTER_PORTS"):
        StackConfig(redis_cluster_ports=(17001, 17001, 17003))
    with pytest.raises(ValidationError, match="at most 55535"):
        StackConfig(redis_cluster_ports=(17001, 17002, 60000))


def test_replicas_need_three_ports_more_each():
    cfg = StackConfig(redis_cluster_ports=tuple(range(17001, 17007)), redis_cluster_replicas=1)
    assert len(redis_cluster.addresses(cfg)) == 6
    with pytest.raises(
        ValidationError, match=r"must be 6 different ports \(3 masters, 1 replica\(s\) each\)"
    ):
        StackConfig(redis_cluster_replicas=1)
    with pytest.raises(ValidationError, match="PARITY_STACK_REDIS_CLUSTER_REPLICAS"):
        StackConfig(redis_cluster_ports=(17001, 17002, 17003, 17004))


def test_the_node_timeout_is_the_setting(tmp_path):
    cfg = StackConfig(home=tmp_path, redis_cluster_node_timeout_ms=1500)
    assert "cluster-node-timeout 1500" in redis_cluster.config_text(cfg, 17001, tmp_path).splitlines()


def test_each_node_has_its_own_folder_pid_and_log(cfg, tmp_path):
    p = redis_cluster.node_paths(cfg, 17002)
    assert p["base"] == tmp_path / "redis-cluster" / "17002"
    assert p["conf"].parent == p["nodes"].parent == p["base"]
    assert p["pid"] == tmp_path / "run" / "redis-cluster-17002.pid"
    assert p["log"] == tmp_path / "logs" / "redis-cluster-17002.log"
    every = [redis_cluster.node_paths(cfg, port) for port in cfg.redis_cluster_ports]
    for key in ("base", "pid", "log"):
        assert len({str(n[key]) for n in every}) == 3
    # None of them is the single Redis's.
    assert redis_cluster.paths(cfg)["log"] == tmp_path / "logs" / "redis-cluster.log"


def test_config_is_a_cluster_node_without_persistence_or_eviction(cfg, tmp_path):
    text = redis_cluster.config_text(cfg, 17003, tmp_path / "n")
    lines = text.splitlines()
    for expected in (
        "bind 127.0.0.1",
        "port 17003",
        f"dir {tmp_path / 'n'}",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        "cluster-node-timeout 5000",
        'save ""',
        "appendonly no",
        "maxmemory-policy noeviction",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
    ):
        assert expected in lines
    assert text.endswith("\n")


def test_cluster_info_is_parsed():
    text = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:3\r\n\r\n"
    assert redis_cluster.parse_info(text) == SERVING


def test_serving_needs_state_ok_every_slot_and_every_node():
    assert redis_cluster.serving(SERVING, 3)
    assert not redis_cluster.serving(REJOINING, 3)
    assert not redis_cluster.serving({**SERVING, "cluster_slots_assigned": "16000"}, 3)
    assert not redis_cluster.serving(SERVING, 4)
    assert not redis_cluster.serving({}, 3)


def test_replicas_count_once_linked_to_their_masters():
    master, linked = {"role": "master"}, {"role": "slave", "master_link_status": "up"}
    syncing = {"role": "slave", "master_link_status": "down"}
    assert redis_cluster.replicas_in_sync([master, master, master], 0)
    assert redis_cluster.replicas_in_sync([master, linked, master, linked, master, linked], 3)
    assert not redis_cluster.replicas_in_sync([master, linked, master, syncing, master, linked], 3)
    assert not redis_cluster.replicas_in_sync([master, master, master, master, master, linked], 3)


def test_empty_nodes_are_created():
    assert redis_cluster.needs_create(nodes(EMPTY, EMPTY, EMPTY), FOLDER)


def test_a_formed_or_restarted_cluster_is_not_created_again():
    assert not redis_cluster.needs_create(nodes(SERVING, SERVING, SERVING), FOLDER)
    # A restart: the masters say fail for a moment, but remember the cluster.
    assert not redis_cluster.needs_create(nodes(REJOINING, SERVING, REJOINING), FOLDER)


def test_a_node_that_forgot_the_cluster_is_an_error_with_the_fix():
    with pytest.raises(
        StackError,
        match=r"127\.0\.0\.1:17002: 1 known node.*`, delete /home/\.parity/redis-cluster, then",
    ):
        redis_cluster.needs_create(nodes(REJOINING, EMPTY, REJOINING), FOLDER)


def test_nothing_answers_means_down(tmp_path):
    cfg = StackConfig(home=tmp_path, redis_cluster_ports=(9, 10, 11))
    assert not redis_cluster.is_up(cfg)
    info = redis_cluster.info(cfg)
    assert not info.up and info.pid is None
    assert info.address == "127.0.0.1:9,127.0.0.1:10,127.0.0.1:11"


def test_stop_is_safe_when_nothing_runs(cfg):
    redis_cluster.stop(cfg)


def test_a_missing_binary_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"redis-cli not found; run `python -m stack fetch`.*redis-tools"):
        redis_cluster.binary("redis-cli")
