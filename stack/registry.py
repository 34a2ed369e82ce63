"""Apicurio Registry 3.x, serving the Confluent-compatible API (ccompat v7).

Storage is KafkaSQL: schemas live in a topic of the local Kafka (as they do in
Confluent's registry), so they outlive a registry restart and stay exactly as
long as the records whose ids point at them. Kafka must be up first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from parity.errors import StackError
from stack import process
from stack.artifacts import load
from stack.config import StackConfig
from stack.fetch import registry_dir
from stack.status import Info

NAME = "registry"
# In the registry JVM's command line (the app folder name), whichever launcher jar it uses.
MARKER = "apicurio-registry"
LAUNCHER = "quarkus-run.jar"
COMPATIBILITY = "BACKWARD"


def url(cfg: StackConfig) -> str:
    """The registry URL Confluent clients take."""
    return f"http://{cfg.host}:{cfg.registry_port}/apis/ccompat/v7"


def jvm_options(cfg: StackConfig) -> list[str]:
    h = cfg.host
    return [
        f"-Xmx{cfg.registry_heap}",
        f"-Dquarkus.http.host={h}",
        f"-Dquarkus.http.port={cfg.registry_port}",
        f"-Dquarkus.management.host={h}",
        f"-Dquarkus.management.port={cfg.registry_management_port}",
        # Off by default: without it an incompatible schema is accepted (no 409).
        f"-Dapicurio.rules.global.compatibility={COMPATIBILITY}",
        # In memory, a restart would forget the ids that records already in Kafka carry.
        "-Dapicurio.storage.kind=kafkasql",
        f"-Dapicurio.kafkasql.bootstrap.servers={h}:{cfg.kafka_port}",
    ]


def log_file(cfg: StackConfig) -> Path:
    return cfg.logs_dir / f"{NAME}.log"


def pid_file(cfg: StackConfig) -> Path:
    return cfg.run_dir / f"{NAME}.pid"


def launcher_jar(app: Path) -> Path:
    """quarkus-run.jar (fast-jar layout of 3.1+) or *-runner.jar (3.0.x uber layout)."""
    found = [app / LAUNCHER] if (app / LAUNCHER).is_file() else sorted(app.glob("*-runner.jar"))
    if not found:
        raise StackError(f"registry: no {LAUNCHER} in {app}; run `python -m stack fetch`")
    return found[0]


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    process.check_ports_free(
        NAME,
        {
            "PARITY_STACK_REGISTRY_PORT": cfg.registry_port,
            "PARITY_STACK_REGISTRY_MANAGEMENT_PORT": cfg.registry_management_port,
        },
        cfg.host,
    )
    arts = load()
    try:
        java = process.java(arts.registry_java, search_jvm_dir=True)
    except StackError as exc:
        raise StackError(
            f"registry: {exc}; or pin io.apicurio:apicurio-registry-app:3.0.9:tar.gz:all "
            "with java = 17 in stack/artifacts.toml"
        ) from None
    launcher = launcher_jar(registry_dir(cfg, arts))
    work = cfg.service_dir(NAME)
    work.mkdir(parents=True, exist_ok=True)
    proc = process.spawn(
        [java, *jvm_options(cfg), "-jar", str(launcher)],
        log_file=log_file(cfg),
        pid_file=pid_file(cfg),
        cwd=work,
    )
    process.wait_until(
        lambda: is_up(cfg), service=NAME, log_file=log_file(cfg), timeout_s=cfg.start_timeout_s, proc=proc
    )


def stop(cfg: StackConfig) -> None:
    process.stop_by_pid_file(pid_file(cfg), MARKER)


def get(cfg: StackConfig, path: str, timeout_s: float = 2.0) -> object:
    with urllib.request.urlopen(url(cfg) + path, timeout=timeout_s) as resp:  # noqa: S310 - local http URL
        return json.loads(resp.read())


def is_up(cfg: StackConfig) -> bool:
    try:
        return isinstance(get(cfg, "/subjects"), list)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def info(cfg: StackConfig) -> Info:
    return Info(NAME, url(cfg), process.read_pid(pid_file(cfg), MARKER), log_file(cfg), is_up(cfg))
