"""An Iceberg REST catalog on the local S3 server (optional service).

Not started by a plain `python -m stack up`; `--only s3,iceberg-rest` starts
it after the S3 server. Iceberg's own REST servlet and adapter (the code of
the official rest fixture image) serve a JdbcCatalog whose database is a
sqlite file under ``.parity/iceberg-rest`` (so tables outlive a restart) and
whose FileIO is S3FileIO on the ``s3`` service's bucket. Table metadata and
data files therefore live in object storage only; clients (Flink, pyiceberg)
write data files there with their own S3 settings.

stack/IcebergRestServer.java launches it as a single source file; it binds
127.0.0.1 (the official launcher binds every interface). Settings are read
from PARITY_STACK_ICEBERG_REST_* variables.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack import process, s3
from stack.artifacts import load
from stack.config import StackConfig
from stack.fetch import fetch_iceberg_rest
from stack.status import Info

NAME = "iceberg-rest"
LAUNCHER = Path(__file__).with_name("IcebergRestServer.java")
MARKER = LAUNCHER.name


class IcebergRestSettings(BaseSettings):
    """The local REST catalog: its port, warehouse folder in the bucket and heap."""

    model_config = SettingsConfigDict(env_prefix="PARITY_STACK_ICEBERG_REST_", extra="forbid", frozen=True)

    port: int = Field(default=18181, ge=1, le=65535)
    # The name the catalog database stores tables under; clients never see it.
    catalog_name: str = "parity"
    prefix: str = "warehouse"
    heap: str = "384m"


def url(cfg: StackConfig, rest: IcebergRestSettings | None = None) -> str:
    """The catalog's URI (PARITY_ICEBERG_REST_URI)."""
    return f"http://{cfg.host}:{(rest or IcebergRestSettings()).port}"


def warehouse(rest: IcebergRestSettings | None = None, store: s3.S3Settings | None = None) -> str:
    """Where the server puts tables (PARITY_ICEBERG_WAREHOUSE)."""
    return f"s3://{(store or s3.S3Settings()).bucket}/{(rest or IcebergRestSettings()).prefix}"


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "db": base / "catalog.db",
        "conf": base / "catalog.properties",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def catalog_properties(cfg: StackConfig, rest: IcebergRestSettings, store: s3.S3Settings) -> dict[str, str]:
    """The backend catalog's properties, as Iceberg's CatalogUtil takes them."""
    return {
        "catalog.name": rest.catalog_name,
        "catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        "uri": f"jdbc:sqlite:{paths(cfg)['db']}",
        "jdbc.schema-version": "V1",
        "warehouse": warehouse(rest, store),
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": s3.endpoint(cfg, store),
        "s3.path-style-access": "true",
        "s3.access-key-id": store.access_key_id,
        "s3.secret-access-key": store.secret_access_key.get_secret_value(),
        "client.region": store.region,
    }


def _properties_text(props: dict[str, str]) -> str:
    # java.util.Properties treats a backslash as an escape; none of these values has one.
    return "".join(f"{key}={value}\n" for key, value in props.items())


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    rest = IcebergRestSettings()
    process.check_ports_free(NAME, {"PARITY_STACK_ICEBERG_REST_PORT": rest.port}, cfg.host)
    java = process.java(17)
    jars = fetch_iceberg_rest(cfg, load())  # a no-op once fetched
    p = paths(cfg)
    p["base"].mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(_properties_text(catalog_properties(cfg, rest, s3.S3Settings())))
    p["conf"].chmod(0o600)  # it holds the S3 secret key
    proc = process.spawn(
        [
            java,
            f"-Xmx{rest.heap}",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            f"{jars}/*",
            str(LAUNCHER),
            cfg.host,
            str(rest.port),
            str(p["conf"]),
        ],
        log_file=p["log"],
        pid_file=p["pid"],
        cwd=p["base"],
    )
    process.wait_until(
        lambda: is_up(cfg), service=NAME, log_file=p["log"], timeout_s=cfg.start_timeout_s, proc=proc
    )


def stop(cfg: StackConfig) -> None:
    process.stop_by_pid_file(paths(cfg)["pid"], MARKER)


def is_up(cfg: StackConfig) -> bool:
    """The catalog answers GET /v1/config with its configuration."""
    try:
        with urllib.request.urlopen(url(cfg) + "/v1/config", timeout=2.0) as resp:  # noqa: S310 - local URL
            return isinstance(json.loads(resp.read()).get("defaults"), dict)
    except (OSError, urllib.error.URLError, ValueError, AttributeError):
        return False


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    return Info(NAME, url(cfg), process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg))
