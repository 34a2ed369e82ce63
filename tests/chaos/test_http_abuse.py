"""One abusive HTTP client against the real server and the stack's Redis: refused, never able
to degrade reads for everyone else.

The server is ``python -m serving serve`` (uvicorn, its own process) on a free port, with
its default limits, over tiles the job's Redis sink wrote under the test's own key prefix.
The abuse: ids Redis cannot take, a 50 MB chunked body, and a burst of 200 concurrent
clients asking for 1,000 entities as of three hours ago, each entity merged from its
tiles inside Redis, while a well-behaved client keeps reading.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from serving.assembly import to_ms
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from tests.integration.conftest import HttpServer

pytestmark = pytest.mark.integration

HOUR = 3_600_000
ENTITIES = [f"u{e:04d}" for e in range(1000)]
TILES = 48  # hourly tiles per entity: two days, all of them in a 7-day window
ABUSERS = 200
BURST_S = 8.0
TIMEOUT_STATUS = 504  # PARITY_SERVING_REQUEST_TIMEOUT_S passed: the one 5xx the server may answer
JSON = {"content-type": "application/json"}
REFUSED_FOR_LOAD = ("concurrency", "entities_in_flight", "timeout")
GOOD = {"features": ["user_stats:clicks_1d", "user_stats:clicks_7d"], "entities": [{"user_id": "u0001"}]}


def seed(cfg: RedisConfig) -> None:
    """Every entity clicked once an hour for two days, written and precomputed by the job's sink."""
    now = to_ms(datetime.now(UTC))
    end = now - now % HOUR
    sink = RedisTileSink(user_stats, cfg)
    sink.open()
    try:
        for at in range(0, len(ENTITIES), 100):
            sink.write(
                [
                    TileRow(entity, end - h * HOUR, end - (h - 1) * HOUR, 2, (1, 1, 0))
                    for entity in ENTITIES[at : at + 100]
                    for h in range(1, TILES + 1)
                ]
            )
        sink.advance_completeness(end)
    finally:
        sink.close()


def forget(cfg: RedisConfig) -> None:
    client = redis.Redis(host=cfg.host, port=cfg.port)
    try:
        keys = list(client.scan_iter(match=f"{cfg.key_prefix}:*", count=1000))
        for at in range(0, len(keys), 1000):
            client.unlink(*keys[at : at + 1000])
    finally:
        client.close()


@pytest.fixture
def server(isolated, tmp_path):
    cfg = isolated.redis
    seed(cfg)
    try:
        with HttpServer(
            # The test's own Redis prefix and Iceberg namespace: the server's lost-store check
            # asks that namespace whether the view was ever written.
            isolated.env() | {"PARITY_SERVING_TRACE_EXPORTER": "none"},
            tmp_path / "serve.log",
        ) as base:
            yield base
    finally:
        forget(cfg)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def circuit(base: str) -> str:
    return str(httpx.get(f"{base}/healthz", timeout=5).json()["circuit"])


def statuses(response: httpx.Response) -> set[str]:
    return {v["status"] for r in response.json()["results"] for v in r["features"].values()}


def test_ids_redis_cannot_take_are_422_and_the_breaker_stays_closed(server):
    body = b'{"features": ["user_stats:clicks_1d"], "entities": [{"user_id": "u\\ud800"}]}'
    with httpx.Client(base_url=server, timeout=5) as client:
        for _ in range(20):  # four times the failures that would open the breaker
            response = client.post("/features", content=body, headers=JSON)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body", "entities", 0, "user_id"]
        assert circuit(server) == "closed"
        response = client.post("/features", json=GOOD)
        assert response.status_code == 200, response.text
        assert statuses(response) == {"present"}


def test_a_chunked_50mb_body_is_413_without_the_server_reading_it(server):
    sent = 0

    def fifty_megabytes():
        nonlocal sent
        chunk = b"x" * 65536
        for _ in range(50 * 16):
            sent += len(chunk)
            yield chunk

    response = httpx.post(f"{server}/features", content=fifty_megabytes(), timeout=30)
    assert response.status_code == 413, response.text
    assert "exceeds the limit of 1000000 bytes" in response.text
    assert sent < 50 * 2**20  # the server hung up at the limit; the rest was never sent
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_a_burst_of_costly_reads_is_refused_not_served_to_everyone_elses_cost(server):
    as_of = (datetime.now(UTC) - timedelta(hours=3)).isoformat()  # not precomputed: merged in Redis
    # Encoded once: the abusers' own CPU should go to sending, on a machine the server shares.
    abusive = json.dumps(
        {
            "features": [f"user_stats:{f}" for f in user_stats.feature_names],
            "entities": [{"user_id": e} for e in ENTITIES],
            "as_of": as_of,
        }
    ).encode()
    seen: Counter[int] = Counter()
    good: list[tuple[float, int, set[str]]] = []  # (when, status code, value statuses)
    circuits: list[str] = []
    stop = threading.Event()

    def well_behaved() -> None:
        with httpx.Client(base_url=server, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/features", json=GOOD)
                code = response.status_code
                good.append((time.monotonic(), code, statuses(response) if code == 200 else set()))
                circuits.append(circuit(server))
                time.sleep(0.02)

    async def burst() -> None:
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends: a request sent as
        # the server closes the connection fails, with no server to blame.
        limits = httpx.Limits(max_connections=ABUSERS, max_keepalive_connections=ABUSERS, keepalive_expiry=2)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            deadline = time.monotonic() + BURST_S

            async def abuser() -> None:
                while time.monotonic() < deadline:  # never waits the Retry-After: that is the abuse
                    response = await client.post(f"{server}/features", content=abusive, headers=JSON)
                    seen[response.status_code] += 1

            await asyncio.gather(*(abuser() for _ in range(ABUSERS)))

    reader = threading.Thread(target=well_behaved)
    reader.start()
    began = time.monotonic()
    try:
        asyncio.run(burst())
    finally:
        ended = time.monotonic()
        stop.set()
        reader.join(timeout=30)

    assert set(seen) <= {200, 429, TIMEOUT_STATUS}, seen
    assert seen[429] > 0, seen
    codes = Counter(code for _, code, _ in good)
    assert set(codes) <= {200, 429, TIMEOUT_STATUS}, codes
    assert any(began <= at <= ended and code == 200 for at, code, _ in good), codes
    assert all(found == {"present"} for _, code, found in good if code == 200), good
    assert set(circuits) == {"closed"}, Counter(circuits)
    assert circuit(server) == "closed"
    metrics = samples(httpx.get(f"{server}/metrics").text)
    assert metrics["feature_entities_merged_total", (("view", "user_stats"),)] >= 1000  # Redis did merge
    refused = sum(metrics["feature_requests_rejected_total", (("reason", r),)] for r in REFUSED_FOR_LOAD)
    assert refused == seen[429] + seen[TIMEOUT_STATUS] + codes[429] + codes[TIMEOUT_STATUS]
    assert (
        metrics.get(("feature_fetch_errors_total", (("reason", "circuit_open"), ("source", "redis")))) is None
    )
