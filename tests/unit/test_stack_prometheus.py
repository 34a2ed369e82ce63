import shutil
import subprocess

import pytest

from parity.config import FlinkJobConfig
from stack import prometheus
from stack.config import StackConfig


def test_generated_config_scrapes_flink_and_serving_and_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make setup does)")
    cfg = StackConfig(home=tmp_path)
    text = prometheus.config_text(cfg)
    assert '"127.0.0.1:19250"' in text and '"127.0.0.1:19253"' in text
    assert '"127.0.0.1:8000"' in text
    assert '"127.0.0.1:19254"' in text and '"127.0.0.1:19257"' in text
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_ports_a_local_job_exports_on():
    first, last = StackConfig().job_metrics_ports
    assert FlinkJobConfig().metrics_ports == f"{first}-{last}"
