"""The log archive against the real Kafka, registry, Redis and a local Iceberg catalog.

Reads are served with logging at sample rate 1.0 to a topic private to the test
(``serve`` of the log skew test); the archive must hold each record once, with
the read's trace id, the hashed key and the values served, whatever is run
again or interrupted.
"""

from __future__ import annotations

from typing import Any

import pytest

from parity.config import KafkaConfig, RegistryConfig
from serving import log_archive
from serving.assembly import from_ms
from serving.log_archive import ArchiveSummary, archive_log, ensure_table
from tests.integration.test_feature_log import FEATURES, USERS, hmac_hex, seed_users
from tests.integration.test_log_skew import serve
from tests.integration.test_serving_consistency import HOUR

pytestmark = pytest.mark.integration


def archive(iso, topic: str, **kwargs: Any) -> ArchiveSummary:
    return archive_log(KafkaConfig(), RegistryConfig(), iso.iceberg, topic=topic, **kwargs)


def archived(iso) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ensure_table(iso.iceberg).scan().to_arrow().to_pylist()
    return rows


def assert_holds_exactly(rows: list[dict[str, Any]], reads: dict[str, list]) -> None:
    """One row per (read, user), with the read's trace id, the user's HMAC and what the read returned."""
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == len(rows)
    assert sorted((r["trace_id"], r["entity_key"]) for r in rows) == sorted(
        (trace, hmac_hex(user)) for trace in reads for user in USERS
    )
    for row in rows:
        user = next(i for i, u in enumerate(USERS) if hmac_hex(u) == row["entity_key"])
        served = reads[row["trace_id"]][user]
        assert row["view"] == "user_stats"
        assert [(f["value"], f["status"]) for f in row["features"]] == [
            (served[name].value, served[name].status.value) for name in FEATURES
        ]
        assert row["window_end"] == served[FEATURES[0]].window_end


def test_the_archive_holds_each_logged_record_once_across_runs(isolated):
    topic = f"{isolated.topic}.served-features"
    watermark = seed_users(isolated)
    reads = serve(isolated, topic, [from_ms(watermark), from_ms(watermark - 30 * HOUR)])

    first = archive(isolated, topic)
    assert (first.read, first.appended, first.undecodable, first.caught_up) == (8, 8, 0, True)
    assert_holds_exactly(archived(isolated), reads)

    more = serve(isolated, topic, [from_ms(watermark - 5 * HOUR)])
    second = archive(isolated, topic)
    assert (second.read, second.appended) == (4, 4)
    assert_holds_exactly(archived(isolated), reads | more)

    third = archive(isolated, topic)
    assert (third.read, third.appended, third.commits) == (0, 0, 0)
    assert third.snapshot_id == second.snapshot_id
    assert len(archived(isolated)) == 12


def test_a_crash_after_an_iceberg_commit_duplicates_no_row(isolated, monkeypatch):
    topic = f"{isolated.topic}.served-features"
    watermark = seed_users(isolated)
    reads = serve(isolated, topic, [from_ms(watermark), from_ms(watermark - 30 * HOUR)])

    def crash(*_: object) -> None:
        raise RuntimeError("killed between the Iceberg commit and the group commit")

    monkeypatch.setattr(log_archive, "_commit_visible", crash)
    with pytest.raises(RuntimeError, match="killed"):
        archive(isolated, topic, batch_records=3)
    assert len(archived(isolated)) == 3  # the first batch committed, nothing after it
    monkeypatch.undo()

    again = archive(isolated, topic, batch_records=3)
    assert (again.read, again.appended) == (5, 5)
    assert archive(isolated, topic).appended == 0
    assert_holds_exactly(archived(isolated), reads)
