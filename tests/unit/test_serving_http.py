"""The HTTP endpoint: strict requests, clear refusals, metrics and health."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry

from parity.config import RedisConfig
from serving import online
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from serving.server import create_app
from tests.unit.test_serving_fakes import FakeRedis, down
from tests.unit.views import user_stats


@pytest.fixture
def fake(monkeypatch):
    client = FakeRedis({"user_stats": user_stats}, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    return client


@pytest.fixture
def http(fake):
    cfg = ServingConfig(max_entities=3, max_body_bytes=4096)
    store = OnlineStore(
        RedisConfig(key_prefix="t"),
        {"user_stats": user_stats},
        serving=cfg,
        metrics=ServingMetrics(CollectorRegistry()),
    )
    yield Client(create_app(store, cfg))


class Client:
    """Calls the ASGI app in process: no socket, no server."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://parity.test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str) -> httpx.Response:
        return self.request("GET", url)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def test_features_come_back_in_entity_order_with_status(http):
    body = {"features": ["user_stats:click_rate_7d"], "entities": [{"user_id": "a"}, {"user_id": "b"}]}
    response = http.post("/features", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["entity"] for r in results] == body["entities"]
    value = results[0]["features"]["user_stats:click_rate_7d"]
    assert (value["value"], value["status"]) == (0.02, "missing")
    assert value["window_end"].endswith(("Z", "+00:00"))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "a"}], "limit": 3},
            422,
            "Extra inputs",
        ),
        ({"features": ["user_stats:clicks_7d"], "entities": [{"user_id": 7}]}, 422, "valid string"),
        ({"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "a"}] * 4}, 413, "limit is 3"),
        ({"features": ["user_stats:clicks_9d"], "entities": [{"user_id": "a"}]}, 422, "has no 'clicks_9d'"),
        ({"features": ["user_stats:clicks_7d"], "entities": [{"id": "a"}]}, 422, "lacks the join key"),
        ({"features": [], "entities": [{"user_id": "a"}]}, 422, "at least 1"),
        (
            {
                "features": ["user_stats:clicks_7d"],
                "entities": [{"user_id": "a"}],
                "as_of": "2026-01-01T00:00",
            },
            422,
            "timezone info",
        ),
    ],
)
def test_bad_requests_get_4xx_with_the_reason(http, fake, body, status, message):
    response = http.post("/features", json=body)
    assert response.status_code == status, response.text
    assert message in response.text
    assert fake.round_trips == 0


def test_oversized_body_is_413(http):
    body = {"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "x" * 5000}]}
    response = http.post("/features", json=body)
    assert response.status_code == 413
    assert "exceeds the limit of 4096" in response.text


def test_metrics_and_health(http, fake):
    http.post("/features", json={"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "a"}]})
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert 'feature_fetch_latency_seconds_count{source="redis"} 1.0' in metrics.text
    assert http.get("/healthz").json() == {"status": "ok", "redis": True, "circuit": "closed"}
    fake.fail = down()
    health = http.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    # Redis down: still 200, every value the default with status error.
    response = http.post(
        "/features", json={"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "a"}]}
    )
    assert response.json()["results"][0]["features"]["user_stats:clicks_7d"]["status"] == "error"
