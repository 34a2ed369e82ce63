"""`parity job submit` on the standalone Flink cluster: detached, listed, cancellable."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import KafkaConfig, RegistryConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events
from serving.online import OnlineStore
from stack.config import StackConfig
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def scraped(metric: str, job_id: str) -> float | None:
    """The sum of a job operator metric in the stack's Prometheus, or None before its first scrape."""
    cfg = StackConfig()
    query = f'sum({{__name__=~"flink_taskmanager_job_task_operator_(.*_)?{metric}", job_id="{job_id}"}})'
    url = f"http://{cfg.host}:{cfg.prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_submit_list_and_cancel_on_the_standalone_cluster(isolated, monkeypatch, capfd):
    for key, value in isolated.env().items():
        monkeypatch.setenv(key, value)
    events = generate(
        GeneratorConfig(
            users=20, events=2000, start=datetime(2026, 2, 1, tzinfo=UTC), span=timedelta(days=2), seed=5
        )
    )
    assert produce_events(events, isolated.topic, KafkaConfig(), RegistryConfig()).failed == 0

    assert jobctl.submit("user_stats", topic=isolated.topic, group_id=f"it-{isolated.suffix}") == 0
    submitted = re.search(r"JobID ([0-9a-f]{32})", capfd.readouterr().out)
    assert submitted, "flink run printed no job id"
    job_id = submitted.group(1)
    try:
        assert jobctl.flink_cli(["list", "--running"]) == 0
        assert re.search(
            rf"{job_id} : parity-{user_stats.qualified_name} \(RUNNING\)", capfd.readouterr().out
        )

        store = OnlineStore(isolated.redis)
        try:
            wait_for(
                lambda: store.completeness(user_stats), timeout=180, what="the submitted job's first tiles"
            )
        finally:
            store.close()

        # The stack's Prometheus scrapes the job's own metrics from the cluster's reporter.
        for metric in ("redis_tiles_applied", "completeness_lag_ms", "pendingRecords"):
            wait_for(
                lambda metric=metric: scraped(metric, job_id) is not None,
                timeout=90,
                what=f"Prometheus to scrape the job's {metric}",
            )
        assert scraped("redis_tiles_applied", job_id) > 0
    finally:
        assert jobctl.flink_cli(["cancel", job_id]) == 0
    capfd.readouterr()
    jobctl.flink_cli(["list", "--running"])
    assert job_id not in capfd.readouterr().out
