"""Prometheus from Debian's package, scraping the Flink cluster and the feature server.

The Flink standalone cluster exposes its metrics through Flink's own
Prometheus reporter (the wheel's plugins/metrics-prometheus), one port per
JobManager and TaskManager. A streaming job in a local mini-cluster
(``parity job run``) starts the same reporter on a port of its own range.
It loads every alert rules file in deploy/prometheus (``*.rules.yml``).
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.config import StackConfig
from stack.status import Info

NAME = "prometheus"
MARKER = "prometheus"
RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def rule_files() -> list[Path]:
    """Every alert rules file of the repository (deploy/prometheus/*.rules.yml), in name order."""
    return sorted(RULES_DIR.glob("*.rules.yml"))


def config_text(cfg: StackConfig) -> str:
    first, last = cfg.flink_metrics_ports
    flink_targets = ", ".join(f'"{cfg.host}:{port}"' for port in range(first, last + 1))
    first, last = cfg.job_metrics_ports
    job_targets = ", ".join(f'"{cfg.host}:{port}"' for port in range(first, last + 1))
    rules = ", ".join(f'"{path}"' for path in rule_files())
    return (
        "global:\n"
        "  scrape_interval: 15s\n"
        "  evaluation_interval: 15s\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        "  - job_name: flink\n"
        f"    static_configs: [{{targets: [{flink_targets}]}}]\n"
        "  - job_name: parity-job\n"
        f"    static_configs: [{{targets: [{job_targets}]}}]\n"
        "  - job_name: parity-serving\n"
        f'    static_configs: [{{targets: ["{cfg.host}:{cfg.serving_port}"]}}]\n'
        "  - job_name: prometheus\n"
        f'    static_configs: [{{targets: ["{cfg.host}:{cfg.prometheus_port}"]}}]\n'
    )


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "conf": base / "prometheus.yml",
        "data": base / "data",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    process.check_ports_free(NAME, {"PARITY_STACK_PROMETHEUS_PORT": cfg.prometheus_port}, cfg.host)
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError("prometheus: binary not found; run `python -m stack fetch` (installs it with apt)")
    p = paths(cfg)
    p["data"].mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(config_text(cfg))
    argv = [
        binary,
        f"--config.file={p['conf']}",
        f"--storage.tsdb.path={p['data']}",
        f"--web.listen-address={cfg.host}:{cfg.prometheus_port}",
        "--storage.tsdb.retention.time=2d",
    ]
    proc = process.spawn(argv, log_file=p["log"], pid_file=p["pid"])
    process.wait_until(
        lambda: is_up(cfg), service=NAME, log_file=p["log"], timeout_s=cfg.start_timeout_s, proc=proc
    )


def stop(cfg: StackConfig) -> None:
    process.stop_by_pid_file(paths(cfg)["pid"], MARKER)


def is_up(cfg: StackConfig) -> bool:
    try:
        with urllib.request.urlopen(f"http://{cfg.host}:{cfg.prometheus_port}/-/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    address = f"http://{cfg.host}:{cfg.prometheus_port}"
    return Info(NAME, address, process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg))
