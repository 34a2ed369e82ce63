"""A lost online store reads as ``error``, in the one MGET, per view (sinks.redis_layout)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from parity.config import RedisConfig
from serving import online
from serving.assembly import Status, to_ms
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis_layout import EPOCH_LOST, epoch_key
from sinks.repair import RepairSummary, needs_repair
from tests.unit.test_serving_fakes import FakeRedis
from tests.unit.views import spend, user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VIEWS = {"user_stats": user_stats, "spend": spend}
BOTH = ["user_stats:clicks_1d", "spend:orders_1d"]


@pytest.fixture
def fake(monkeypatch):
    client = FakeRedis(VIEWS, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    start = to_ms(T0)
    for view, values in ((user_stats, (0, 1)), (spend, (1, 2.0, 2.0, None))):
        client.put(view, TileRow("u", start, start + HOUR, 1, values))
        client.set_completeness(view, start + HOUR)
        client.precompute(view, "u", start + 2 * HOUR)  # the read's window end: no merge at read time
        client.strings[epoch_key("t", view)] = b"1767225600000 fresh"
    return client


def make_store() -> tuple[OnlineStore, ServingMetrics]:
    metrics = ServingMetrics(CollectorRegistry())
    return OnlineStore(RedisConfig(key_prefix="t"), VIEWS, metrics=metrics), metrics


def read(store: OnlineStore) -> dict[str, Status]:
    row = store.get_online_features(BOTH, [{"user_id": "u"}], as_of=T0.replace(hour=2))[0]
    return {name: value.status for name, value in row.items()}


def lost_count(metrics: ServingMetrics) -> float:
    sample = metrics.registry.get_sample_value(
        "feature_fetch_errors_total", {"source": "redis", "reason": "store_lost"}
    )
    return sample or 0.0


def test_a_view_marked_lost_serves_defaults_with_error_and_the_other_view_its_values(fake):
    fake.strings[epoch_key("t", user_stats)] = EPOCH_LOST.encode()
    store, metrics = make_store()
    rounds = fake.round_trips
    row = store.get_online_features(BOTH, [{"user_id": "u"}], as_of=T0.replace(hour=2))[0]
    assert fake.round_trips == rounds + 1, "still one MGET"
    assert row["user_stats:clicks_1d"] == (
        user_stats.defaults["clicks_1d"],
        Status.ERROR,
        row["user_stats:clicks_1d"][2],
    )
    assert row["spend:orders_1d"].status is Status.PRESENT
    assert lost_count(metrics) == 1


def test_an_epoch_that_vanishes_after_it_was_read_is_a_loss_even_before_the_job_writes_again(fake):
    store, metrics = make_store()
    assert read(store) == {"user_stats:clicks_1d": Status.PRESENT, "spend:orders_1d": Status.PRESENT}
    fake.strings.clear()  # FLUSHALL
    fake.hashes.clear()
    assert read(store) == {"user_stats:clicks_1d": Status.ERROR, "spend:orders_1d": Status.ERROR}
    assert lost_count(metrics) == 2


def test_a_repaired_store_serves_values_again(fake):
    fake.strings[epoch_key("t", user_stats)] = EPOCH_LOST.encode()
    store, _ = make_store()
    assert read(store)["user_stats:clicks_1d"] is Status.ERROR
    fake.strings[epoch_key("t", user_stats)] = b"1767229200000 repair"
    assert read(store)["user_stats:clicks_1d"] is Status.PRESENT


def test_without_an_epoch_ever_seen_a_store_reads_as_before(fake):
    del fake.strings[epoch_key("t", user_stats)]
    store, _ = make_store()
    assert read(store)["user_stats:clicks_1d"] is Status.PRESENT


def test_repair_is_needed_only_without_a_complete_epoch():
    assert needs_repair(None) and needs_repair(EPOCH_LOST)
    assert not needs_repair("1767225600000 repair")


def test_a_dry_run_summary_says_what_it_would_do():
    summary = RepairSummary(
        "user_stats_v2", EPOCH_LOST, to_ms(T0), to_ms(T0) - 8 * 24 * HOUR, 3, 10, dry_run=True
    )
    text = "\n".join(summary.lines())
    assert "would rebuild" in text and "entities         3" in text and "set " not in text
    assert "2026-01-01T00:00:00+00:00" in text


class _Progress:
    """OfflineProgress with a fixed answer per view, counting the checks."""

    def __init__(self, answers: dict[str, bool | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def has_progress(self, view) -> bool | None:
        self.asked.append(view.name)
        return self.answers[view.name]


def test_a_store_lost_before_the_reader_started_is_a_loss_when_iceberg_has_progress(fake):
    fake.strings.clear()  # FLUSHALL before this process ever read the epoch
    fake.hashes.clear()
    progress = _Progress({"user_stats": True, "spend": False})
    metrics = ServingMetrics(CollectorRegistry())
    store = OnlineStore(RedisConfig(key_prefix="t"), VIEWS, metrics=metrics, offline=progress)  # type: ignore[arg-type]
    assert read(store) == {"user_stats:clicks_1d": Status.ERROR, "spend:orders_1d": Status.MISSING}
    assert lost_count(metrics) == 1


def test_the_offline_check_is_asked_only_while_the_epoch_is_absent(fake):
    progress = _Progress({"user_stats": True, "spend": True})
    store = OnlineStore(RedisConfig(key_prefix="t"), VIEWS, offline=progress)  # type: ignore[arg-type]
    assert read(store) == {"user_stats:clicks_1d": Status.PRESENT, "spend:orders_1d": Status.PRESENT}
    assert progress.asked == []


def test_a_catalog_that_cannot_answer_leaves_reads_as_without_the_check(fake):
    del fake.strings[epoch_key("t", user_stats)]
    progress = _Progress({"user_stats": None, "spend": None})
    store = OnlineStore(RedisConfig(key_prefix="t"), VIEWS, offline=progress)  # type: ignore[arg-type]
    assert read(store)["user_stats:clicks_1d"] is Status.PRESENT
