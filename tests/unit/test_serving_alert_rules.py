"""The Prometheus rules parse, and every alert fires (and stays quiet) as its promtool test says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = sorted(RULES_DIR.glob("*.rules.yml"))
TESTS = sorted((RULES_DIR / "tests").glob("*.test.yml"))


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus); the alert rules need it")
    return path


def test_rules_pass_promtool_check():
    result = subprocess.run([promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test():
    text = "\n".join(path.read_text() for path in RULES)
    alerts = set(re.findall(r"^\s*- alert: (\S+)", text, re.MULTILINE))
    assert len(alerts) >= 4
    fired = set()
    for path in TESTS:
        # A check that expects an alert lists its labels after the alert's name.
        for name, body in re.findall(r"alertname: (\S+)(.*?)(?=alertname:|\Z)", path.read_text(), re.DOTALL):
            if "exp_labels" in body:
                fired.add(name)
    assert alerts <= fired, f"alerts without a test that fires them: {sorted(alerts - fired)}"


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    result = subprocess.run(
        [promtool(), "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_queries_only_metrics_that_exist():
    import json

    dashboard = json.loads((RULES_DIR.parent / "grafana" / "parity-serving.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    known = (
        "feature_fetch_",
        "feature_defaults_served_total",
        "feature_entities_",
        "feature_skew_",
        "flink_taskmanager_job_task_operator_pendingRecords",
    )
    for expr in exprs:
        names = re.findall(
            r"\b([a-z_]+(?:_total|_seconds_bucket|_seconds_count|_ratio|_threshold|_entities|_open|pendingRecords))\b",
            expr,
        )
        assert names and all(n.startswith(known) for n in names), expr
