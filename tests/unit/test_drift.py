"""Drift: PSI and the KS test on synthetic frames, the cohorts' point-in-time rows, the outputs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from parity.errors import InputError, ReadError
from serving.assembly import to_ms
from serving.drift import DriftConfig, Verdict, check_drift, cohorts, compare, export, render_html
from serving.metrics import DriftMetrics
from serving.offline import OfflineTiles
from tests.unit.views import user_stats

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 15
USERS = 120


def one(reference, current, **cfg):
    return compare({"x": reference}, {"x": current}, ["x"], DriftConfig(**cfg))[0]


# --- the computation on synthetic frames -------------------------------------------------------


def test_same_distribution_is_ok():
    rng = np.random.default_rng(1)
    result = one(rng.normal(10, 2, 2000), rng.normal(10, 2, 300))
    assert result.verdict is Verdict.OK
    assert result.psi < 0.1
    assert result.ks_pvalue > 0.05


def test_a_shifted_distribution_drifts():
    rng = np.random.default_rng(2)
    result = one(rng.normal(10, 2, 2000), rng.normal(12, 2, 300))
    assert result.verdict is Verdict.DRIFT
    assert result.psi > 0.5
    assert result.ks_pvalue < 1e-10
    assert result.current_mean - result.reference_mean == pytest.approx(2, abs=0.4)


def test_psi_over_the_reference_deciles_by_hand():
    # Reference 0..99: cut points 9.9, 19.8, ...; every current value lies in the first decile.
    reference = np.arange(100.0)
    current = np.tile(np.arange(10.0), 5)
    result = one(reference, current)
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert result.psi == pytest.approx(expected)
    assert result.reference_shares == pytest.approx((0.1,) * 10)
    assert result.current_shares == pytest.approx((1.0,) + (1e-4,) * 9)
    assert result.verdict is Verdict.DRIFT


def test_a_large_psi_from_few_values_is_not_drift_unless_ks_rejects():
    # Current values fill every other decile: bin shares differ a lot (PSI ~3.8), the
    # distribution functions never differ by more than 0.1, which 50 values cannot tell from noise.
    reference = np.arange(1000.0)
    current = np.concatenate([np.arange(d * 100, d * 100 + 100, 10.0) for d in range(0, 10, 2)])
    result = one(reference, current)
    assert result.psi > 3
    assert result.ks_statistic == pytest.approx(0.1, abs=0.01)
    assert result.ks_pvalue > 0.5
    assert result.verdict is Verdict.OK


def test_a_tiny_shift_that_ks_finds_in_many_rows_is_not_drift():
    rng = np.random.default_rng(3)
    result = one(rng.normal(0, 1, 200_000), rng.normal(0.05, 1, 200_000))
    assert result.ks_pvalue < 1e-10
    assert result.psi < 0.01
    assert result.verdict is Verdict.OK


def test_ties_stay_in_one_bin():
    # A count that is mostly 0: the deciles repeat 0, and every 0 lands in one bin.
    reference = np.repeat([0.0, 1.0, 2.0], [800, 150, 50])
    same = one(reference, np.repeat([0.0, 1.0, 2.0], [80, 15, 5]))
    assert same.psi == pytest.approx(0.0, abs=1e-12)
    assert same.ks_statistic == 0
    assert same.verdict is Verdict.OK
    moved = one(reference, np.repeat([0.0, 1.0, 2.0], [50, 30, 20]))
    assert moved.verdict is Verdict.DRIFT
    # Three distinct values, one bin each.
    assert moved.cuts == (1.0, 2.0)
    assert moved.reference_shares == pytest.approx((0.8, 0.15, 0.05))
    assert moved.current_shares == pytest.approx((0.5, 0.3, 0.2))


def test_few_distinct_values_get_a_bin_each():
    # Each value moves a little: deciles of the reference would hold both cohorts' values alike.
    result = one(np.repeat([7.0, 14.0, 21.0], 100), np.repeat([8.0, 16.0, 24.0], 100))
    assert result.cuts == (8.0, 14.0, 16.0, 21.0, 24.0)
    assert result.verdict is Verdict.DRIFT
    assert result.psi > 10


def test_many_distinct_values_are_cut_at_the_reference_deciles():
    rng = np.random.default_rng(6)
    reference = rng.normal(0, 1, 1000)
    result = one(reference, rng.normal(0, 1, 100))
    assert result.cuts == pytest.approx(tuple(np.quantile(reference, np.arange(1, 10) / 10)))


def test_too_few_values_have_no_verdict_and_no_score():
    values = [1.0, math.nan, math.inf] + [2.0] * 60
    result = one(values, [1.0] * 49 + [math.nan])
    assert result.verdict is Verdict.TOO_FEW
    assert (result.reference_n, result.current_n) == (61, 49)
    assert math.isnan(result.psi) and math.isnan(result.ks_pvalue)
    assert result.as_dict()["psi"] is None


def test_pandas_and_arrow_frames_give_the_same_result():
    rng = np.random.default_rng(4)
    ref = {"a": rng.normal(0, 1, 500), "b": rng.poisson(3, 500).astype(float)}
    cur = {"a": rng.normal(0.5, 1, 200), "b": rng.poisson(3, 200).astype(float)}
    expected = compare(ref, cur, ["a", "b"])
    assert compare(pd.DataFrame(ref), pd.DataFrame(cur), ["a", "b"]) == expected
    assert compare(pa.table(ref), pa.table(cur), ["a", "b"]) == expected
    assert [f.verdict for f in expected] == [Verdict.DRIFT, Verdict.OK]


def test_thresholds_decide_the_verdict():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(0, 1, 3000), rng.normal(0.4, 1, 3000)
    result = one(ref, cur)
    assert 0.1 < result.psi < 0.3 and result.ks_pvalue < 1e-6
    assert one(ref, cur, psi_threshold=result.psi).verdict is Verdict.DRIFT
    assert one(ref, cur, psi_threshold=result.psi * 1.01).verdict is Verdict.OK


# --- settings ----------------------------------------------------------------------------------


def test_config_reads_spans_and_keeps_times_in_utc():
    cfg = DriftConfig.of(
        reference="12h",
        current="90m",
        step="30m",
        end=datetime(2026, 1, 2, 2, tzinfo=timezone(timedelta(hours=2))),
    )
    assert (cfg.reference, cfg.current, cfg.step) == (
        timedelta(hours=12),
        timedelta(minutes=90),
        timedelta(minutes=30),
    )
    assert cfg.end == datetime(2026, 1, 2, tzinfo=UTC) and cfg.end.tzinfo is UTC
    assert DriftConfig() == DriftConfig.of(reference="7d", current="1d", step="1d")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reference": "7x"}, "reference: '7x' is not a positive duration"),
        ({"current": "0d"}, "current: '0d' is not a positive duration"),
        ({"current": "36h"}, "current (36h) is not a whole number of steps (1d)"),
        ({"end": datetime(2026, 1, 1)}, "end has no time zone"),
        ({"psi_threshold": 0}, "psi_threshold: Input should be greater than 0"),
        ({"ks_alpha": 1.5}, "ks_alpha: Input should be less than 1"),
        ({"windows": 3}, "windows: Extra inputs are not permitted"),
    ],
)
def test_config_errors_are_input_errors_naming_the_setting(values, message):
    with pytest.raises(InputError, match="invalid drift settings") as caught:
        DriftConfig.of(**values)
    assert message in str(caught.value)


# --- cohorts from point-in-time reads ------------------------------------------------------------


def tiles(rows: list[tuple[str, int, int, int]], days: int = DAYS) -> OfflineTiles:
    """(user, start ms, impressions, clicks) tiles; every hour of ``days`` days closed."""
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "tile_start": pa.array([r[1] for r in rows], pa.int64()),
            "events": pa.array([r[2] + r[3] for r in rows], pa.int64()),
            "impressions": pa.array([r[2] for r in rows], pa.int64()),
            "clicks": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    ends = [to_ms(T0) + (h + 1) * HOUR for h in range(days * 24)]
    return OfflineTiles(user_stats, 7, arrow=table, period_ends_ms=ends)


def daily(doubled_from_day: int = DAYS - 1) -> list[tuple[str, int, int, int]]:
    """Each user has one tile a day at its own hour, the same counts every day; clicks double
    from ``doubled_from_day`` on."""
    rows = []
    for day in range(DAYS):
        for u in range(USERS):
            clicks = (1 + u % 3) * (2 if day >= doubled_from_day else 1)
            rows.append((f"u{u:03d}", to_ms(T0) + day * DAY + (u % 24) * HOUR, 10 + u % 20, clicks))
    return rows


def test_doubled_clicks_on_the_last_day_flag_the_click_features_only():
    report = check_drift(user_stats, tiles(daily()))
    verdicts = {f.feature: f.verdict for f in report.features}
    # clicks_7d on the last day is 8/7 of every earlier day's: each of its few values moves. The
    # users' 7-day click rates also rise by 1/7, but within their spread (0.04 to 0.2): PSI < 0.1.
    assert verdicts == {
        "impressions_1d": Verdict.OK,
        "impressions_7d": Verdict.OK,
        "clicks_1d": Verdict.DRIFT,
        "clicks_7d": Verdict.DRIFT,
        "click_rate_7d": Verdict.OK,
    }
    assert report.drifted == ["clicks_1d", "clicks_7d"]
    by_name = {f.feature: f for f in report.features}
    assert by_name["click_rate_7d"].psi < 0.1
    assert by_name["impressions_1d"].psi == pytest.approx(0.0, abs=1e-12)
    assert by_name["clicks_1d"].current_mean == pytest.approx(2 * by_name["clicks_1d"].reference_mean)
    assert report.warnings == []


def test_no_shift_flags_nothing():
    report = check_drift(user_stats, tiles(daily(doubled_from_day=DAYS)))
    assert report.drifted == []
    assert all(f.psi == pytest.approx(0.0, abs=1e-12) for f in report.features)


def test_cohorts_hold_each_entity_seen_in_a_step_as_of_the_steps_end():
    rows = daily()
    # Seen once, on the third reference day, with two tiles that day.
    third = to_ms(T0) + (DAYS - 1 - 7 + 2) * DAY
    rows += [("once", third + 3 * HOUR, 4, 1), ("once", third + 20 * HOUR, 6, 2)]
    reference, current, _ = cohorts(user_stats, tiles(rows), DriftConfig())
    end = T0 + timedelta(days=DAYS)
    assert (reference.start, reference.end, current.start, current.end) == (
        end - timedelta(days=8),
        end - timedelta(days=1),
        end - timedelta(days=1),
        end,
    )
    assert (reference.rows, reference.entities) == (USERS * 7 + 1, USERS + 1)
    assert (current.rows, current.entities) == (USERS, USERS)
    frame = reference.frame.to_pylist()
    once = [r for r in frame if r["user_id"] == "once"]
    assert len(once) == 1
    assert once[0]["event_timestamp"] == datetime.fromtimestamp((third + DAY) / 1000, UTC)
    assert (once[0]["impressions_1d"], once[0]["clicks_1d"], once[0]["click_rate_7d"]) == (10, 3, 0.3)
    u005 = sorted(
        (r["event_timestamp"], r["clicks_1d"], r["clicks_7d"]) for r in frame if r["user_id"] == "u005"
    )
    assert [t for t, _, _ in u005] == [reference.start + timedelta(days=k) for k in range(1, 8)]
    assert all((c1, c7) == (3, 21) for _, c1, c7 in u005)


def test_an_earlier_end_moves_both_cohorts():
    end = T0 + timedelta(days=DAYS - 1)  # before the doubled day
    report = check_drift(user_stats, tiles(daily()), DriftConfig(end=end))
    assert report.current.end == end
    assert report.drifted == []


def test_history_shorter_than_the_first_windows_is_reported():
    report = check_drift(user_stats, tiles(daily()), DriftConfig(reference=timedelta(days=10)))
    assert len(report.warnings) == 1
    assert "starts at 2026-01-01T00:00:00Z, after 2025-12-30T00:00:00Z" in report.warnings[0]


@pytest.mark.parametrize(
    ("cfg", "error", "message"),
    [
        (DriftConfig(end=T0 + timedelta(days=DAYS, hours=1)), InputError, "after the offline completeness"),
        (DriftConfig(end=T0 + timedelta(days=3, minutes=30)), InputError, "not on a tile boundary"),
        (
            DriftConfig(end=T0 + timedelta(days=1)),
            ReadError,
            "no entity of user_stats_v1 has a tile in the reference",
        ),
    ],
)
def test_an_end_that_does_not_fit_the_store_is_refused(cfg, error, message):
    with pytest.raises(error, match=message):
        check_drift(user_stats, tiles(daily()), cfg)


def test_a_step_must_be_whole_tiles_and_a_view_must_have_closed_periods():
    daily_tiles = replace(user_stats, tile=timedelta(days=1))
    loaded = tiles(daily())
    with pytest.raises(InputError, match="step 1h is not a whole number of user_stats's 1d tiles"):
        cohorts(daily_tiles, loaded, DriftConfig(step=timedelta(hours=1)))
    with pytest.raises(ReadError, match="no closed tile period"):
        check_drift(user_stats, OfflineTiles(user_stats, None, arrow=loaded.to_arrow()))


# --- outputs -----------------------------------------------------------------------------------


def test_gauges_in_prometheus_text_format(tmp_path):
    report = check_drift(user_stats, tiles(daily()))
    report.features.append(
        replace(report.features[0], feature="sparse", verdict=Verdict.TOO_FEW, psi=math.nan)
    )
    registry = CollectorRegistry()
    export(report, DriftMetrics(registry))
    path = tmp_path / "parity_drift_user_stats.prom"
    write_to_textfile(str(path), registry)
    samples = {
        (s.name, s.labels.get("feature")): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
        if s.labels["view"] == "user_stats"
    }
    psi = {f.feature: f.psi for f in report.features}
    assert samples[("feature_drift_score", "clicks_1d")] == pytest.approx(psi["clicks_1d"])
    assert samples[("feature_drift_detected", "clicks_1d")] == 1
    assert samples[("feature_drift_detected", "impressions_1d")] == 0
    assert ("feature_drift_score", "sparse") not in samples
    assert samples[("feature_drift_threshold", None)] == 0.2
    assert samples[("feature_drift_last_run_timestamp_seconds", None)] > T0.timestamp()


def test_html_report_is_self_contained_and_marks_drifted_rows():
    report = check_drift(user_stats, tiles(daily()))
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<tr class='drift'>") == 2
    assert page.count("<tr class='ok'>") == 3
    assert page.count("<svg ") == 5
    assert "src=" not in page and "href=" not in page and "<script" not in page
    assert "2 of 5 features drifted" in page


def test_json_report_names_cohorts_and_verdicts():
    payload = json.loads(json.dumps(check_drift(user_stats, tiles(daily())).as_dict()))
    assert payload["current"] == {
        "start": "2026-01-15T00:00:00Z",
        "end": "2026-01-16T00:00:00Z",
        "rows": USERS,
        "entities": USERS,
    }
    assert payload["drifted"] == ["clicks_1d", "clicks_7d"]
    assert payload["features"][0]["verdict"] == "ok"


def test_cli_prints_the_table_and_writes_the_report_files(tmp_path, monkeypatch, capsys):
    import features.registry
    import serving.offline
    from parity import cli

    loaded = tiles(daily())
    monkeypatch.setattr(features.registry, "get_view", lambda name: user_stats)
    monkeypatch.setattr(serving.offline, "load_tiles", lambda cfg, view, snapshot_id=None: loaded)
    html_path, prom = tmp_path / "drift.html", tmp_path / "drift.prom"
    code = cli.main(["drift", "user_stats", "--html", str(html_path), "--textfile", str(prom)])
    out = capsys.readouterr().out
    assert code == 1
    lines = {
        line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(("clicks", "imp"))
    }
    assert lines == {
        "impressions_1d": "ok",
        "impressions_7d": "ok",
        "clicks_1d": "DRIFT",
        "clicks_7d": "DRIFT",
    }
    assert "2 of 5 features drifted: clicks_1d, clicks_7d (drift when PSI >= 0.2 and KS p < 0.05)" in out
    assert "<table>" in html_path.read_text()
    assert 'feature_drift_detected{feature="clicks_7d",view="user_stats"} 1.0' in prom.read_text()

    assert cli.main(["drift", "user_stats", "--json", "--end", "2026-01-15T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out)["drifted"] == []
    assert cli.main(["drift", "user_stats", "--current", "36h"]) == 1
    assert "current (36h) is not a whole number of steps" in capsys.readouterr().err
