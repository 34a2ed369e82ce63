"""Degraded mode against a real, private Redis (stopped and started by the test), and the HTTP server.

The shared Redis is never stopped: the degraded-mode test starts its own
redis-server on a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from serving.assembly import Status, to_ms
from serving.breaker import BreakerState
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from tests.integration.conftest import HttpServer, free_port, wait_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000
NOW = datetime.now(UTC)
START = to_ms(NOW) - to_ms(NOW) % HOUR - HOUR  # the last closed hour


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """These tests bring their own Redis where they stop it; the HTTP test needs the configured one."""


class PrivateRedis:
    """A redis-server of the test's own on a free port, with nothing saved.

    ``args`` add server settings (TLS, ACL users), ``port_option`` takes the free port
    (``--tls-port`` for a TLS-only server, with ``--port 0`` in ``args``), and ``client``
    holds the ``redis.Redis`` arguments the readiness check needs to get in.
    """

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str] = (),
        port_option: str = "--port",
        client: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.args = list(args)
        self.port_option = port_option
        self.client = dict(client or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        settings = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self.args]
        self.proc = subprocess.Popen(
            [binary, self.port_option, str(self.port), *settings],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, what=f"redis-server on port {self.port}", interval=0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def _answers(self) -> bool:
        try:
            client = redis.Redis(**{"socket_timeout": 0.2, **self.client, "port": self.port})
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def write_tile(cfg: RedisConfig) -> None:
    sink = RedisTileSink(user_stats, cfg)
    sink.open()
    try:
        sink.write([TileRow("u1", START, START + HOUR, 5, (4, 1, 0))])
        sink.advance_completeness(START + HOUR)
    finally:
        sink.close()


def test_redis_down_then_back_defaults_fast_then_recovers(private_redis):
    cfg = RedisConfig(port=private_redis.port, key_prefix="degraded")
    serving = ServingConfig(timeout_s=0.2, breaker_failures=3, breaker_cooldown_s=1.0)
    metrics = ServingMetrics(CollectorRegistry())
    write_tile(cfg)
    store = OnlineStore(cfg, {"user_stats": user_stats}, serving=serving, metrics=metrics)
    request = (["user_stats:clicks_1d"], [{"user_id": "u1"}])

    def errors() -> float:
        return sum(
            s.value
            for family in metrics.registry.collect()
            for s in family.samples
            if s.name == "feature_fetch_errors_total"
        )

    try:
        assert store.get_online_features(*request)[0]["user_stats:clicks_1d"].status is Status.PRESENT
        private_redis.stop()
        for _ in range(10):
            started = time.monotonic()
            value = store.get_online_features(*request)[0]["user_stats:clicks_1d"]
            assert time.monotonic() - started < 1.0  # bounded: never hangs
            assert (value.value, value.status) == (0, Status.ERROR)
        assert errors() == 10
        assert store.breaker_state is BreakerState.OPEN

        private_redis.start()
        write_tile(cfg)  # the private server keeps nothing across restarts
        time.sleep(1.1)  # the cool-down; then one probe closes the breaker
        value = store.get_online_features(*request)[0]["user_stats:clicks_1d"]
        assert (value.value, value.status) == (1, Status.PRESENT)
        assert store.breaker_state is BreakerState.CLOSED
    finally:
        store.close()


def test_a_slow_redis_costs_a_read_the_timeout_not_more(private_redis):
    cfg = RedisConfig(port=private_redis.port, key_prefix="slow")
    write_tile(cfg)
    store = OnlineStore(
        cfg,
        {"user_stats": user_stats},
        serving=ServingConfig(timeout_s=0.2),
        metrics=ServingMetrics(CollectorRegistry()),
    )
    try:
        assert store.get_online_features(["user_stats:clicks_1d"], [{"user_id": "u1"}])[0]
        private_redis.proc.send_signal(signal.SIGSTOP)  # frozen: connected, but never answers
        started = time.monotonic()
        value = store.get_online_features(["user_stats:clicks_1d"], [{"user_id": "u1"}])[0]
        assert time.monotonic() - started < 0.6
        assert value["user_stats:clicks_1d"].status is Status.ERROR
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
        store.close()


@pytest.fixture
def http_server(tmp_path):
    """`python -m serving serve` against the configured Redis, on its own key prefix."""
    prefix = f"http{os.getpid()}"
    env = {
        "PARITY_REDIS_KEY_PREFIX": prefix,
        # An Iceberg namespace of its own, where the view was never written: the server's
        # lost-store check then reads the tiles this prefix holds as they are.
        "PARITY_ICEBERG_NAMESPACE": prefix,
        "PARITY_SERVING_MAX_ENTITIES": "5",
        "PARITY_SERVING_TRACE_EXPORTER": "console",
    }
    log = tmp_path / "serve.log"
    with HttpServer(env, log, healthy=(200, 503)) as base:
        write_tile(RedisConfig(key_prefix=prefix))
        yield base, log


def test_http_serves_features_and_refuses_bad_requests_with_a_reason(http_server):
    base, log = http_server
    good = {"features": ["user_stats:clicks_1d"], "entities": [{"user_id": "u1"}, {"user_id": "nobody"}]}
    response = httpx.post(f"{base}/features", json=good)
    assert response.status_code == 200, response.text
    values = [r["features"]["user_stats:clicks_1d"] for r in response.json()["results"]]
    assert [(v["value"], v["status"]) for v in values] == [(1, "present"), (0, "missing")]

    refusals = [
        ({**good, "entity_rows": []}, 422, "Extra inputs are not permitted"),
        ({**good, "entities": [{"user_id": "u"}] * 6}, 413, "the limit is 5"),
        ({**good, "entities": [{"user_id": 12}]}, 422, "Input should be a valid string"),
        ({**good, "features": ["user_stats:nope"]}, 422, "has no 'nope'"),
    ]
    for body, status, message in refusals:
        response = httpx.post(f"{base}/features", json=body)
        assert (response.status_code, message in response.text) == (status, True), response.text

    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'feature_fetch_latency_seconds_count{source="redis"}' in metrics
    assert "u1" not in metrics
    # Spans go to the console exporter (batched); log lines carry the trace id.
    wait_for(lambda: "get_online_features" in log.read_text(), timeout=15, what="a span in the server log")
    assert "redis.read_windows" in log.read_text()
