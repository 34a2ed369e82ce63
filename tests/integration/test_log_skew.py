"""The log skew check against the real Kafka, registry, Redis and a local Iceberg catalog.

Reads are served with logging at sample rate 1.0; the check reads the log back
and compares it with Iceberg. Then one entity's tile is overwritten in Redis
only, so what is served for it differs, and the check must name exactly the
records of that entity's later read, by trace id.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from features.user_stats import view as user_stats
from serving import cli
from serving.assembly import from_ms, to_ms
from serving.config import ServingConfig
from serving.feature_log import FeatureLogger
from serving.log_skew import check_log_skew
from serving.metrics import ServingMetrics
from serving.offline import load_tiles
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.redis import RedisTileSink
from tests.integration.test_feature_log import FEATURES, KEY, USERS, hmac_hex, seed_users
from tests.integration.test_serving_consistency import HOUR, T0

pytestmark = pytest.mark.integration


def serve(iso, topic: str, times: list[datetime]) -> dict[str, list]:
    """One logged read of every user per time; returns the rows by trace id, once all are sent."""
    cfg = ServingConfig(log_sample_rate=1.0, log_topic=topic, log_hash_key=SecretStr(KEY))
    metrics = ServingMetrics(CollectorRegistry())
    views = {"user_stats": user_stats}
    logger = FeatureLogger(views, cfg, metrics=metrics)
    store = OnlineStore(iso.redis, views, serving=cfg, metrics=metrics, feature_log=logger)
    tracer = TracerProvider().get_tracer(__name__)
    reads = {}
    try:
        for as_of in times:
            with tracer.start_as_current_span("request") as span:
                rows = store.get_online_features(FEATURES, [{"user_id": u} for u in USERS], as_of=as_of)
            reads[format(span.get_span_context().trace_id, "032x")] = rows
    finally:
        store.close()
        logger.close()
    assert metrics.registry.get_sample_value("feature_log_records_total") == len(times) * len(USERS)
    return reads


def test_log_skew_is_zero_when_consistent_and_names_the_trace_ids_of_a_corrupted_entity(
    isolated, monkeypatch, capsys
):
    topic = f"{isolated.topic}.served-features"
    watermark = seed_users(isolated)
    # At the watermark (values the sink precomputed) and 30 h before it (merged at read time).
    serve(isolated, topic, [from_ms(watermark), from_ms(watermark - 30 * HOUR)])

    offline = load_tiles(isolated.iceberg, user_stats)
    report = check_log_skew(user_stats, offline, topic=topic, hash_key=SecretStr(KEY), max_records=1000)
    # The never-seen user is not in Iceberg, so its hashed key cannot be mapped back.
    assert (report.read, report.compared, report.equal, report.differing, report.unmatched) == (8, 6, 6, 0, 2)

    # Overwrite alice's last tile in Redis only; the sink recomputes her stored window values.
    alice = USERS[0]
    last = to_ms(T0) + 70 * HOUR
    sink = RedisTileSink(user_stats, isolated.redis, clock=lambda: watermark)
    sink.open()
    try:
        sink.write([TileRow(alice, last, last + HOUR, 90, (50, 40, 40))])
    finally:
        sink.close()
    (trace_id, rows), *_ = serve(isolated, topic, [from_ms(watermark)]).items()
    expected = offline.features(alice, from_ms(watermark))
    assert rows[0]["user_stats:clicks_1d"].value != expected["clicks_1d"].value  # served differs now

    monkeypatch.setenv("PARITY_ICEBERG_NAMESPACE", isolated.iceberg.namespace)
    monkeypatch.setenv("PARITY_SERVING_LOG_TOPIC", topic)
    monkeypatch.setenv("PARITY_SERVING_LOG_HASH_KEY", KEY)
    code = cli.main(["skew", "user_stats", "--from-log", "--threshold", "0.05", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1, result
    assert (result["read"], result["compared"], result["differing"], result["unmatched"]) == (12, 9, 1, 3)
    (example,) = result["examples"]
    assert (example["trace_id"], example["entity_key"]) == (trace_id, hmac_hex(alice))
    assert example["features"]["clicks_1d"]["served"][0] == rows[0]["user_stats:clicks_1d"].value
    assert example["features"]["clicks_1d"]["offline"][0] == expected["clicks_1d"].value

    # --since leaves out the reads before it: only the last read's records are compared.
    since = from_ms(to_ms(datetime.fromisoformat(example["request_time"])) - 1).isoformat()
    code = cli.main(["skew", "user_stats", "--from-log", "--since", since, "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (code, result["read"], result["differing"]) == (1, 4, 1)
