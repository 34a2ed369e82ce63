"""A Redis Cluster master killed mid-stream: its replica takes over, and nothing is lost.

Each test starts a cluster of its own (three masters, one replica each, a 2 s
node timeout) so that killing a node leaves the shared stack alone. The view's
keys share one hash tag, so one master holds all of them: that is the one
killed (SIGKILL), while the job streams and more events arrive. The job's
writes fail until the replica is promoted; its sink retries them against the
new owner of the slot. Then both stores must equal the independent
reference, reads included, through a client whose seed list still names the
dead node.

Redis replicates asynchronously, so a write the old master acknowledged but
had not sent to its replica is lost with it. A bare SIGKILL leaves almost no
such window (the reply and the replication stream leave in the same
event-loop turn), so the second test makes one. It freezes the replica
(SIGSTOP) and writes a ballast value larger than the loopback socket buffers
to the master, so that what the master replicates next waits in the master's
own memory; a frozen replica alone is not enough, since the kernel keeps what
was sent to it. Then events arrive, the master is killed, and the replica
takes over without their writes. With PARITY_REDIS_WAIT_REPLICAS=1 the sink
counted none of them done (WAIT fell short), so it writes them again to the
new master once it has a replica to acknowledge them. With 0 the same test
fails: the tiles written during the freeze are missing from Redis.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from features.user_stats import view as user_stats
from serving.online import OnlineStore
from sinks.redis_layout import completeness_key
from stack import redis_cluster
from stack.config import StackConfig
from stack.redis_cluster import parse_info
from tests.chaos.test_continuity import START, _any_checkpoint, _check_stores, _events, _send, _then
from tests.chaos.test_online_loss import _caught_up
from tests.chaos.test_redis_outage import _job_id, _sink_retries
from tests.integration.conftest import local_job_metric, wait_for

pytestmark = [
    pytest.mark.integration,
    # The nodes are detached by design (their own session, as `stack up` leaves them).
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]

PORTS = tuple(range(17101, 17107))


@pytest.fixture
def cluster(tmp_path) -> Iterator[StackConfig]:
    cfg = StackConfig(
        home=tmp_path / "stack",
        redis_cluster_ports=PORTS,
        redis_cluster_replicas=1,
        redis_cluster_node_timeout_ms=2000,
    )
    try:
        redis_cluster.start(cfg)
        yield cfg
    finally:
        redis_cluster.stop(cfg)


def _owner(cfg: StackConfig, slot: int) -> tuple[int, list[int]] | None:
    """The port of the master serving ``slot`` and its replicas' ports, as the first live node sees them.

    None while no master that node holds healthy serves it (during a failover).
    """
    for port in cfg.redis_cluster_ports:
        client = redis.Redis(host=cfg.host, port=port, socket_timeout=1)
        try:
            nodes = client.execute_command("CLUSTER NODES")  # parsed by redis-py, by address
        except redis.RedisError:
            continue
        finally:
            client.close()
        for address, node in nodes.items():
            flags = node["flags"].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            if any(int(first) <= slot <= int(last) for first, last, *_ in node["slots"]):
                replicas = [_port(a) for a, n in nodes.items() if n["master_id"] == node["node_id"]]
                return _port(address), replicas
        return None
    raise AssertionError("no node of the cluster answers")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _stream_on(cluster: StackConfig, isolated, monkeypatch, seed: int, *, wait_replicas: int):
    """The job streaming on ``cluster``, caught up with a first batch.

    Returns the job, a store, the events, the view's master and its replica, and the slot.
    """
    monkeypatch.setenv("PARITY_REDIS_MODE", "cluster")
    monkeypatch.setenv("PARITY_REDIS_CLUSTER_NODES", redis_cluster.seeds(cluster))
    monkeypatch.setenv("PARITY_REDIS_WAIT_REPLICAS", str(wait_replicas))
    slot = key_slot(completeness_key(isolated.redis.key_prefix, user_stats).encode())
    owner = _owner(cluster, slot)
    assert owner is not None, f"no master serves slot {slot}"
    master, replicas = owner
    assert len(replicas) == 1, f"the view's master {master} has replicas {replicas}"

    first = _events(seed, START, 30, 3000)
    _send(first, isolated.topic)
    job = isolated.start_job("user_stats", bounded=False)
    store = OnlineStore(isolated.redis, {"user_stats": user_stats})
    wait_for(lambda: _caught_up(isolated, store, first), timeout=300, what="the first events' tiles")
    assert _any_checkpoint(isolated)
    return job, store, first, master, replicas[0], slot


def _ballast(cluster: StackConfig, master: int, key: str, megabytes: int = 48) -> None:
    """A value on ``master`` (``key`` in the view's slot) more than the loopback buffers hold."""
    client = redis.Redis(host=cluster.host, port=master, socket_timeout=30)
    try:
        client.set(key, b"x" * (megabytes << 20))
        backlog = parse_info(redis_cluster.command(cluster.host, master, "INFO", "memory"))
    finally:
        client.close()
    # The master holds what the frozen replica has not read.
    assert int(backlog.get("mem_clients_slaves", "0")) > 8 << 20, backlog


def _taken_over(cluster: StackConfig, slot: int, replica: int, master: int) -> None:
    wait_for(
        lambda: (_owner(cluster, slot) or (None,))[0] == replica,
        timeout=60,
        what=f"replica {replica} taking over slot {slot} from the killed {master}",
    )


def _no_restart_and_retried(isolated) -> None:
    """The sink felt the fault and rode it out: writes retried within the budget, no restart."""
    job_id = _job_id(isolated)
    assert job_id is not None, isolated.log_tail()
    assert _sink_retries(job_id) >= 1
    assert local_job_metric("flink_jobmanager_job_numRestarts", job_id) == 0, isolated.log_tail()


def test_a_killed_master_fails_over_and_both_stores_equal_the_reference(cluster, isolated, monkeypatch):
    job, store, first, master, replica, slot = _stream_on(cluster, isolated, monkeypatch, 41, wait_replicas=0)
    try:
        pid = redis_cluster.node_pids(cluster)[master]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # More events while the slot has no master: the job must write them once one serves it.
        second = _then(first, 42, 6, 800)
        _send(second, isolated.topic)
        _taken_over(cluster, slot, replica, master)
        wait_for(
            lambda: _caught_up(isolated, store, first + second), timeout=300, what="the second events' tiles"
        )
        assert job.poll() is None, isolated.log_tail()
        _no_restart_and_retried(isolated)
        _check_stores(isolated, first + second)
    finally:
        store.close()
    job.send_signal(signal.SIGTERM)
    isolated.wait(job, timeout=180)


def test_writes_the_replica_never_got_are_written_again_after_the_failover(cluster, isolated, monkeypatch):
    job, store, first, master, replica, slot = _stream_on(cluster, isolated, monkeypatch, 43, wait_replicas=1)
    pids = redis_cluster.node_pids(cluster)
    master_pid, replica_pid = pids[master], pids[replica]
    assert master_pid is not None and replica_pid is not None
    try:
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            _ballast(cluster, master, completeness_key(isolated.redis.key_prefix, user_stats) + ":ballast")
            # These events' tiles (closed ones among them) reach the master only.
            second = _then(first, 44, 6, 800)
            _send(second, isolated.topic)
            job_id = _job_id(isolated)
            assert job_id is not None, isolated.log_tail()
            # WAIT fell short: the sink retries rather than count the writes done.
            assert _sink_retries(job_id) >= 1
            os.kill(master_pid, signal.SIGKILL)
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        _taken_over(cluster, slot, replica, master)
        # The new master has no replica to acknowledge writes until the killed node is back
        # (it rejoins as the new master's replica): the sink waits for it, retrying, as
        # production's restarted pod would end the wait.
        redis_cluster.start(cluster)
        wait_for(
            lambda: _caught_up(isolated, store, first + second), timeout=300, what="the second events' tiles"
        )
        assert job.poll() is None, isolated.log_tail()
        _check_stores(isolated, first + second)
    finally:
        store.close()
    job.send_signal(signal.SIGTERM)
    isolated.wait(job, timeout=180)
