import fnmatch
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from parity.config import FlinkJobConfig
from stack import prometheus
from stack.config import StackConfig

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"


def _rules_files() -> set[Path]:
    found = set(RULES_DIR.glob("*.rules.yml"))
    assert {p.name for p in found} >= {"parity.rules.yml", "drift.rules.yml"}
    return found


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


def test_generated_config_loads_every_rules_file(tmp_path):
    loaded = yaml.safe_load(prometheus.config_text(StackConfig(home=tmp_path)))["rule_files"]
    assert all(Path(path).is_absolute() for path in loaded)
    assert {Path(path) for path in loaded} == _rules_files()


def test_docker_compose_prometheus_loads_every_rules_file():
    """Each rules file is mounted into the container, where a rule_files entry matches it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {}
    for volume in compose["services"]["prometheus"]["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[(ROOT / host).resolve()] = PurePosixPath(container)
    config = RULES_DIR / "prometheus.yml"
    assert mounts.get(config) == PurePosixPath("/etc/prometheus/prometheus.yml")
    patterns = yaml.safe_load(config.read_text())["rule_files"]

    def in_container(path: Path) -> PurePosixPath | None:
        for host, container in mounts.items():
            if path == host:
                return container
            if path.is_relative_to(host):
                return container.joinpath(*path.relative_to(host).parts)
        return None

    for path in sorted(_rules_files()):
        inside = in_container(path)
        assert inside is not None, f"docker-compose.yml does not mount {path.name} into prometheus"
        assert any(fnmatch.fnmatchcase(str(inside), pattern) for pattern in patterns), (
            f"deploy/prometheus/prometheus.yml loads no rule file matching {inside}"
        )
