"""An S3-compatible object store: s3proxy on a local folder (optional service).

Not started by a plain `python -m stack up`; `--only s3,iceberg-rest` starts it
with the REST catalog that keeps Iceberg tables in it. s3proxy serves the S3
protocol (SigV2/SigV4, multipart uploads) over jclouds' ``filesystem-nio2``
backend: a bucket is a folder under ``.parity/s3/data``, so objects outlive a
restart. Its bucket for the warehouse is created (as that folder) before the
server starts.

Settings are read from PARITY_STACK_S3_* variables; the credentials are the
local server's own, not an AWS account's.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack import process
from stack.artifacts import load
from stack.config import StackConfig
from stack.fetch import s3_jar
from stack.status import Info

NAME = "s3"
# In the server's command line (its jar's name).
MARKER = "s3proxy"


class S3Settings(BaseSettings):
    """The local S3 server: its port, bucket and the one identity it accepts."""

    model_config = SettingsConfigDict(env_prefix="PARITY_STACK_S3_", extra="forbid", frozen=True)

    port: int = Field(default=19000, ge=1, le=65535)
    bucket: str = Field(default="parity", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    access_key_id: str = "parity"
    secret_access_key: SecretStr = SecretStr("parity-local-secret")
    region: str = "us-east-1"
    heap: str = "256m"


def endpoint(cfg: StackConfig, s3: S3Settings | None = None) -> str:
    """The S3 endpoint URL clients use (path-style access)."""
    return f"http://{cfg.host}:{(s3 or S3Settings()).port}"


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "data": base / "data",
        "conf": base / "s3proxy.properties",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def config_text(cfg: StackConfig, s3: S3Settings, data_dir: Path) -> str:
    return (
        f"s3proxy.endpoint={endpoint(cfg, s3)}\n"
        "s3proxy.authorization=aws-v2-or-v4\n"
        f"s3proxy.identity={s3.access_key_id}\n"
        f"s3proxy.credential={s3.secret_access_key.get_secret_value()}\n"
        "jclouds.provider=filesystem-nio2\n"
        f"jclouds.filesystem.basedir={data_dir}\n"
    )


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    s3 = S3Settings()
    process.check_ports_free(NAME, {"PARITY_STACK_S3_PORT": s3.port}, cfg.host)
    java = process.java(17)
    jar = s3_jar(cfg, load())
    p = paths(cfg)
    # A bucket of the filesystem backend is a folder: create the warehouse's before serving.
    (p["data"] / s3.bucket).mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(config_text(cfg, s3, p["data"]))
    p["conf"].chmod(0o600)  # it holds the secret key
    proc = process.spawn(
        [java, f"-Xmx{s3.heap}", "-jar", str(jar), "--properties", str(p["conf"])],
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
    """The server answers S3 requests: an unsigned one gets S3's 403 AccessDenied."""
    try:
        with urllib.request.urlopen(endpoint(cfg) + "/", timeout=2.0):  # noqa: S310 - local http URL
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 403 and exc.headers.get("x-amz-request-id") is not None
    except (OSError, ValueError):
        return False


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    return Info(NAME, endpoint(cfg), process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg))
