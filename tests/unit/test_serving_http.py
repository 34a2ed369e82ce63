"""The HTTP endpoint: strict requests, clear refusals, limits that hold under abuse, metrics and health."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry

from parity.config import RedisConfig
from serving import online
from serving.assembly import to_ms
from serving.breaker import BreakerState
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from serving.server import create_app
from sinks.base import TileRow
from sinks.redis_layout import EPOCH_LOST, epoch_key
from tests.unit.test_serving_fakes import FakeRedis, down
from tests.unit.views import user_stats

HOUR = 3_600_000
GOOD = {"features": ["user_stats:clicks_1d"], "entities": [{"user_id": "a"}]}


@pytest.fixture
def fake(monkeypatch):
    client = FakeRedis({"user_stats": user_stats}, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    return client


def serve(**settings) -> tuple[OnlineStore, Client]:
    cfg = ServingConfig(**settings)
    store = OnlineStore(
        RedisConfig(key_prefix="t"),
        {"user_stats": user_stats},
        serving=cfg,
        metrics=ServingMetrics(CollectorRegistry()),
    )
    return store, Client(create_app(store, cfg))


@pytest.fixture
def http(fake):
    return serve(max_entities=3, max_body_bytes=4096)[1]


def seed(fake: FakeRedis, entity: str = "a") -> None:
    """One click in the last closed hour, and a completeness watermark that makes it fresh."""
    now = to_ms(datetime.now(UTC))
    start = now - now % HOUR - HOUR
    fake.put(user_stats, TileRow(entity, start, start + HOUR, 1, (0, 1)))
    fake.set_completeness(user_stats, start + HOUR)


def rejected(store: OnlineStore, reason: str) -> float:
    return store.metrics.registry.get_sample_value("feature_requests_rejected_total", {"reason": reason}) or 0


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

    def together(self, *calls):
        """Run ``calls`` (each ``async (client) -> result``) concurrently on one event loop."""

        async def run():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://parity.test") as client:
                return await asyncio.gather(*(call(client) for call in calls))

        return asyncio.run(run())


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
    assert http.get("/healthz").json() == {
        "status": "ok",
        "redis": True,
        "circuit": "closed",
        "lost_views": [],
        "head_watermarks": {"user_stats": None},
    }
    fake.strings["t:{user_stats:v1}:head"] = b"1767225601500"
    heads = http.get("/healthz").json()["head_watermarks"]
    assert heads == {"user_stats": "2026-01-01T00:00:01.500000+00:00"}
    fake.fail = down()
    health = http.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    # Redis down: still 200, every value the default with status error.
    response = http.post(
        "/features", json={"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "a"}]}
    )
    assert response.json()["results"][0]["features"]["user_stats:clicks_7d"]["status"] == "error"


def raw(json_text: str) -> dict:
    """A request body as JSON text, so it can carry escapes (a lone surrogate) Python cannot encode."""
    return {"content": json_text.encode(), "headers": {"content-type": "application/json"}}


def test_surrogate_ids_are_422_before_redis_and_never_open_the_breaker(fake):
    store, http = serve()
    seed(fake)
    body = '{"features": ["user_stats:clicks_1d"], "entities": [{"user_id": "a"}, {"user_id": "u\\ud800"}]}'
    for _ in range(20):  # four times the failures that would open the breaker
        response = http.post("/features", **raw(body))
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "entities", 1, "user_id"]
        assert "lone surrogate (\\ud800)" in error["msg"]
    assert fake.round_trips == 0
    assert store.breaker_state is BreakerState.CLOSED
    assert rejected(store, "invalid") == 20
    response = http.post("/features", json=GOOD)
    value = response.json()["results"][0]["features"]["user_stats:clicks_1d"]
    assert (value["value"], value["status"]) == (1, "present")


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('{"user_id": "a\\u0000b"}', ["body", "entities", 0, "user_id"], "contains NUL"),
        ('{"user_id": "' + "x" * 300 + '"}', ["body", "entities", 0, "user_id"], "300 bytes long; the limit"),
        ('{"user_id": ""}', ["body", "entities", 0, "user_id"], "is empty"),
        # A join key name: pydantic names it as best it can, with replacement characters.
        ('{"user_id": "a", "\\udfff": "b"}', ["body", "entities", 0, "\ufffd" * 3, "[key]"], "surrogate"),
    ],
)
def test_ids_unfit_for_a_key_are_422_naming_the_field(http, fake, body, where, message):
    response = http.post(
        "/features", **raw(f'{{"features": ["user_stats:clicks_1d"], "entities": [{body}]}}')
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert (error["loc"], message in error["msg"]) == (where, True), error
    assert fake.round_trips == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('"entities": [{"user_id": "a"}], "features": ["user_stats:clicks_1d"], "\\ud800": 1', "unicode"),
        ('"entities": [{"user_id": "a"}], "features": ["user_stats:clicks_1d"], "as_of": "\\ud800"', "as_of"),
        ('"entities": [{"user_id": "a"}], "features": ["\\ud800"]', "<view>:<feature>"),
    ],
)
def test_surrogates_anywhere_else_are_422_too_never_a_500(http, fake, body, message):
    response = http.post("/features", **raw(f"{{{body}}}"))
    assert response.status_code == 422, response.text
    assert message in response.text
    assert fake.round_trips == 0


def test_a_chunked_body_over_the_limit_is_413_and_not_read_to_the_end(fake):
    store, http = serve()  # the default limit, 1 MB
    chunk, sent = b"x" * 65536, []

    async def fifty_megabytes():
        for _ in range(50 * 16):
            sent.append(len(chunk))
            yield chunk

    response = http.post("/features", content=fifty_megabytes())
    assert response.status_code == 413, response.text
    assert "exceeds the limit of 1000000 bytes" in response.text
    assert response.headers["connection"] == "close"
    assert sum(sent) <= 1_000_000 + 2 * len(chunk)  # reading stopped at the limit
    assert rejected(store, "body_too_large") == 1


def test_a_chunked_body_within_the_limit_is_served(http, fake):
    seed(fake)

    async def pieces():
        yield b'{"features": ["user_stats:clicks_1d"], '
        yield b'"entities": [{"user_id": "a"}]}'

    response = http.post("/features", content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["features"]["user_stats:clicks_1d"]["status"] == "present"


def test_entities_times_features_over_the_cap_is_413_naming_both(fake):
    store, http = serve(max_values=4)
    body = {"features": ["user_stats:clicks_1d", "user_stats:clicks_7d", "user_stats:impressions_1d"]}
    response = http.post("/features", json={**body, "entities": [{"user_id": "a"}, {"user_id": "b"}]})
    assert response.status_code == 413
    assert "2 entities x 3 features = 6 values in one request; the limit is 4" in response.text
    assert fake.round_trips == 0
    assert rejected(store, "too_large") == 1
    assert http.post("/features", json={**body, "entities": [{"user_id": "a"}]}).status_code == 200


def holding(fake: FakeRedis, monkeypatch, calls: int) -> tuple[list, threading.Event]:
    """Hold the first ``calls`` MGETs until ``release`` is set; ``held`` lists those waiting."""
    held: list = []
    release, lock = threading.Event(), threading.Lock()
    mget = fake.mget

    def held_mget(keys):
        with lock:
            hold = len(held) < calls
            if hold:
                held.append(keys)
        if hold:
            assert release.wait(10)
        return mget(keys)

    monkeypatch.setattr(fake, "mget", held_mget)
    return held, release


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_when_every_slot_is_taken_the_next_request_is_429_at_once(fake, monkeypatch):
    store, http = serve(max_concurrent=2)
    seed(fake)
    held, release = holding(fake, monkeypatch, calls=2)

    async def slow(client):
        return await client.post("/features", json=GOOD)

    async def refused(client):
        await until(lambda: len(held) == 2)
        started = time.monotonic()
        response = await client.post("/features", json=GOOD)
        waited = time.monotonic() - started
        release.set()
        return response, waited

    first, second, (third, waited) = http.together(slow, slow, refused)
    assert third.status_code == 429, third.text
    assert third.headers["retry-after"] == "1"
    assert "PARITY_SERVING_MAX_CONCURRENT" in third.json()["detail"]
    assert waited < 1.0  # refused, not queued behind the two held reads
    assert (first.status_code, second.status_code) == (200, 200)
    assert rejected(store, "concurrency") == 1
    assert http.post("/features", json=GOOD).status_code == 200  # the slots came back


def test_entities_past_the_budget_in_flight_are_429_while_small_reads_still_fit(fake, monkeypatch):
    store, http = serve(max_entities_in_flight=3)
    seed(fake)
    held, release = holding(fake, monkeypatch, calls=1)
    two = {**GOOD, "entities": [{"user_id": "a"}, {"user_id": "b"}]}

    async def large(client):
        return await client.post("/features", json=two)

    async def meanwhile(client):
        await until(lambda: len(held) == 1)
        refused = await client.post("/features", json=two)  # 2 + 2 > 3
        fits = await client.post("/features", json=GOOD)  # 2 + 1
        release.set()
        return refused, fits

    first, (refused, fits) = http.together(large, meanwhile)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert (
        "2 entities are being read and 2 more would pass PARITY_SERVING_MAX_ENTITIES_IN_FLIGHT (3)"
        in (refused.json()["detail"])
    )
    assert (first.status_code, fits.status_code) == (200, 200)
    assert rejected(store, "entities_in_flight") == 1
    five = {**GOOD, "entities": [{"user_id": u} for u in "abcde"]}
    assert http.post("/features", json=five).status_code == 200  # larger than the budget: runs alone


def test_a_request_past_the_timeout_is_504_and_keeps_its_slot_until_the_read_ends(fake, monkeypatch):
    store, http = serve(max_concurrent=1, request_timeout_s=0.3)
    seed(fake)
    held, release = holding(fake, monkeypatch, calls=1)

    async def late(client):
        started = time.monotonic()
        response = await client.post("/features", json=GOOD)
        return response, time.monotonic() - started

    async def meanwhile(client):
        await until(lambda: len(held) == 1)
        await asyncio.sleep(0.6)  # past the timeout, the read still held
        response = await client.post("/features", json=GOOD)
        release.set()
        return response

    (timed_out, took), busy = http.together(late, meanwhile)
    assert timed_out.status_code == 504, timed_out.text
    assert "PARITY_SERVING_REQUEST_TIMEOUT_S" in timed_out.json()["detail"]
    assert timed_out.headers["retry-after"] == "1"
    assert took < 0.55  # at the timeout, not when the read ended
    assert busy.status_code == 429  # the abandoned read still holds the only slot
    assert (rejected(store, "timeout"), rejected(store, "concurrency")) == (1, 1)
    assert store.breaker_state is BreakerState.CLOSED  # a slow answer is not a Redis failure
    response = http.post("/features", json=GOOD)
    assert response.status_code == 200
    assert response.json()["results"][0]["features"]["user_stats:clicks_1d"]["status"] == "present"


def test_rejections_are_counted_by_reason(http):
    http.post("/features", json={"features": ["user_stats:clicks_7d"], "entities": [{"user_id": 7}]})
    http.post("/features", json={"features": ["user_stats:clicks_7d"], "entities": [{"user_id": "x" * 5000}]})
    text = http.get("/metrics").text
    assert 'feature_requests_rejected_total{reason="invalid"} 1.0' in text
    assert 'feature_requests_rejected_total{reason="body_too_large"} 1.0' in text
    assert 'feature_requests_rejected_total{reason="concurrency"} 0.0' in text


def test_a_read_before_the_pruned_horizon_answers_beyond_horizon(http, fake):
    now = to_ms(datetime.now(UTC))
    start = now - now % HOUR - HOUR
    fake.put(user_stats, TileRow("a", start - 9 * 24 * HOUR, start - 9 * 24 * HOUR + HOUR, 1, (0, 1)))
    fake.put(user_stats, TileRow("a", start, start + HOUR, 1, (0, 1)))
    fake.prune(user_stats, "a", start + HOUR - 8 * 24 * HOUR)
    fake.set_completeness(user_stats, start + HOUR)
    as_of = datetime.fromtimestamp((start - 8 * 24 * HOUR) / 1000, UTC).isoformat()
    response = http.post("/features", json={**GOOD, "as_of": as_of})
    assert response.status_code == 200, response.text
    value = response.json()["results"][0]["features"]["user_stats:clicks_1d"]
    assert (value["value"], value["status"]) == (0, "beyond_horizon")


def test_health_names_a_lost_view_and_stays_200(http, fake):
    fake.strings[epoch_key("t", user_stats)] = EPOCH_LOST.encode()
    health = http.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["lost_views"] == ["user_stats"]
    fake.strings[epoch_key("t", user_stats)] = b"1767229200000 repair"
    assert http.get("/healthz").json()["lost_views"] == []
