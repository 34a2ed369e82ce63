"""Drift against the stack's Iceberg catalog: tiles of two cohorts written straight to the tables.

Each test writes days of tiles (and their closed periods) the way the job commits them, one
tile per user and day at a random hour, with one input shifted on the last day; the check
reads them back through ``load_tiles`` and ``get_historical_features``.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from features.definition import AggKind, Aggregation, FeatureView, Ratio
from features.user_stats import user
from features.user_stats import view as user_stats
from parity import cli
from serving.drift import Verdict, check_drift
from serving.offline import load_tiles
from sinks import iceberg
from tests.unit.views import ad_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 14  # the 7 reference days need 7 more before them for their 7-day windows
USERS = 500

# Each input feeds one feature, so a shifted input shifts exactly one.
probe = FeatureView(
    name="drift_probe",
    version=1,
    owner="tests",
    entity=user,
    source=ad_events,
    tile=timedelta(hours=1),
    aggregations=(
        Aggregation("impressions", AggKind.COUNT, where="event_type = 'impression'"),
        Aggregation("clicks", AggKind.COUNT, where="event_type = 'click'"),
        Aggregation("spend", AggKind.SUM, column="cost"),
    ),
    windows=(timedelta(days=1),),
    derived=(Ratio("click_rate_1d", numerator="clicks_1d", denominator="impressions_1d", on_zero=0.0),),
    defaults={"impressions_1d": 0, "clicks_1d": 0, "spend_1d": 0.0, "click_rate_1d": 0.0},
    max_staleness=timedelta(hours=2),
)


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """Drift reads only the Iceberg catalog, a local file: no service has to answer."""


def activity(seed: int, shift_last_day: dict[str, float]) -> list[dict]:
    """One tile per active user and day; on the last day each named input is multiplied."""
    rng = random.Random(seed)
    rows = []
    for day in range(DAYS):
        factor = shift_last_day if day == DAYS - 1 else {}
        for u in range(USERS):
            if rng.random() < 0.1:  # not seen that day
                continue
            impressions = rng.randint(5, 40)
            clicks = sum(rng.random() < 0.1 for _ in range(impressions))
            mobile = sum(rng.random() < 0.5 for _ in range(clicks))
            start = T0 + timedelta(days=day, hours=rng.randrange(24))
            rows.append(
                {
                    "user_id": f"u{u:03d}",
                    "tile_start": start,
                    "tile_end": start + timedelta(hours=1),
                    "impressions": impressions,
                    "clicks": round(clicks * factor.get("clicks", 1)),
                    "mobile_clicks": round(mobile * factor.get("clicks", 1)),
                    "spend": round(impressions * rng.uniform(0.05, 0.15), 4) * factor.get("spend", 1),
                }
            )
    return rows


def write(iso, view: FeatureView, rows: list[dict]) -> None:
    """Append the tiles, and every hour of the days as a closed period, as the job's commit does."""
    tiles, progress = iceberg.ensure_tables(iso.iceberg, view)
    columns = {"user_id", "tile_start", "tile_end", *(a.name for a in view.aggregations)}
    tiles.append(
        pa.Table.from_pylist(
            [
                {
                    **{k: v for k, v in r.items() if k in columns},
                    "events": r["impressions"] + r["clicks"],
                }
                for r in rows
            ],
            schema=tiles.schema().as_arrow(),
        )
    )
    progress.append(
        pa.Table.from_pylist(
            [
                {
                    "tile_start": T0 + timedelta(hours=h),
                    "tile_end": T0 + timedelta(hours=h + 1),
                    "entities": 1,
                    "events": 1,
                }
                for h in range(DAYS * 24)
            ],
            schema=progress.schema().as_arrow(),
        )
    )


def test_only_the_shifted_feature_is_flagged(isolated):
    write(isolated, probe, activity(seed=11, shift_last_day={"spend": 2.0}))
    report = check_drift(probe, load_tiles(isolated.iceberg, probe))

    end = T0 + timedelta(days=DAYS)
    assert (report.current.start, report.current.end) == (end - timedelta(days=1), end)
    assert (report.reference.start, report.reference.end) == (
        end - timedelta(days=8),
        end - timedelta(days=1),
    )
    assert 0.85 * USERS < report.current.rows == report.current.entities <= USERS
    assert 0.85 * USERS * 7 < report.reference.rows <= USERS * 7
    assert report.snapshot_id is not None and report.warnings == []
    verdicts = {f.feature: f.verdict for f in report.features}
    assert verdicts == {
        "impressions_1d": Verdict.OK,
        "clicks_1d": Verdict.OK,
        "spend_1d": Verdict.DRIFT,
        "click_rate_1d": Verdict.OK,
    }
    spend = next(f for f in report.features if f.feature == "spend_1d")
    assert spend.current_mean > 1.6 * spend.reference_mean
    # Far from the threshold on either side, so the verdicts are not a coin toss of the data.
    assert all(f.psi < 0.1 for f in report.features if f.feature != "spend_1d")
    assert spend.psi > 1


def test_cli_flags_doubled_clicks_and_writes_the_gauges_and_the_report(
    isolated, monkeypatch, capsys, tmp_path
):
    write(isolated, user_stats, activity(seed=12, shift_last_day={"clicks": 2.0}))
    monkeypatch.setenv("PARITY_ICEBERG_NAMESPACE", isolated.iceberg.namespace)
    page, prom = tmp_path / "drift.html", tmp_path / "parity_drift_user_stats.prom"

    code = cli.main(["drift", "user_stats", "--json", "--html", str(page), "--textfile", str(prom)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    payload = json.loads(captured.out)
    assert payload["current"]["end"] == "2026-03-15T00:00:00Z"
    assert payload["warnings"] == []
    verdicts = {f["feature"]: f["verdict"] for f in payload["features"]}
    # The 1-day counts of clicks double; impressions, and the mobile share of clicks, stay.
    # The 7-day clicks gain 1/7 on the last day only: not asserted either way.
    assert {k: verdicts[k] for k in ("clicks_1d", "mobile_clicks_1d")} == {
        "clicks_1d": "drift",
        "mobile_clicks_1d": "drift",
    }
    assert {k: verdicts[k] for k in ("impressions_1d", "impressions_7d", "mobile_click_share_7d")} == {
        "impressions_1d": "ok",
        "impressions_7d": "ok",
        "mobile_click_share_7d": "ok",
    }
    assert set(payload["drifted"]) == {k for k, v in verdicts.items() if v == "drift"}

    gauges = {
        (s.name, s.labels.get("feature")): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    scores = {f["feature"]: f["psi"] for f in payload["features"]}
    assert gauges[("feature_drift_score", "clicks_1d")] == pytest.approx(scores["clicks_1d"])
    assert gauges[("feature_drift_detected", "clicks_1d")] == 1
    assert gauges[("feature_drift_detected", "impressions_1d")] == 0
    assert "<tr class='drift'><td>clicks_1d</td>" in page.read_text()

    # The day before the shift: nothing drifted, exit 0.
    assert cli.main(["drift", "user_stats", "--end", "2026-03-14T00:00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "0 of 8 features drifted" in table
