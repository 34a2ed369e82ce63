"""The online store behind TLS and an ACL user: a private redis-server with throwaway certificates.

The server takes TLS only (``--port 0``), its ``default`` user is off, and the
user ``parity`` may touch only ``<prefix>:*`` keys with the commands the sink's
and the reads' scripts need. The sink writes as that user, reads come back
``present``; a wrong password, a plain connection or an unknown CA fail at once
with an error naming the setting to fix, and no password ever shows.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from parity.errors import SinkError
from serving.assembly import Status
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.redis import client_kwargs
from stack.certs import make_certs
from tests.integration.test_serving_live import PrivateRedis, write_tile

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-parity-password"
WRONG = "n0t-the-parity-password"
PREFIX = "secured"
# Commands the sink's and the reads' scripts run, by ACL category; nothing administrative.
COMMANDS = ["+@read", "+@write", "+@scripting", "+@connection", "+@keyspace", "-@dangerous"]


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """This test brings its own Redis."""


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate it signed, and a second CA nobody uses."""
    made = make_certs(tmp_path / "certs")
    return {"ca": made.ca, "other_ca": made.other_ca, "server": made.server, "client": made.client}


def tls_acl_server(workdir: Path, certs: dict[str, Path], password: str, prefix: str) -> PrivateRedis:
    """A TLS-only redis-server whose one user, ``parity``, may touch ``<prefix>:*`` keys only."""
    return PrivateRedis(
        workdir,
        args=[
            "--port",
            "0",
            "--tls-cert-file",
            str(certs["server"]),
            "--tls-key-file",
            str(certs["server"].with_suffix(".key")),
            "--tls-ca-cert-file",
            str(certs["ca"]),
            "--tls-auth-clients",
            "optional",
            "--user",
            "default",
            "off",
            "--user",
            "parity",
            "on",
            f">{password}",
            f"~{prefix}:*",
            *COMMANDS,
        ],
        port_option="--tls-port",
    )


@pytest.fixture
def secured(tmp_path: Path, certs: dict[str, Path]):
    """The TLS-only server with the ``parity`` user, and the settings that reach it."""
    server = tls_acl_server(tmp_path, certs, PASSWORD, PREFIX)
    cfg = RedisConfig(
        port=server.port,
        key_prefix=PREFIX,
        username="parity",
        password=PASSWORD,
        tls=True,
        tls_ca_file=certs["ca"],
    )
    server.client = client_kwargs(cfg)
    server.start()
    yield cfg
    server.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def changed(cfg: RedisConfig, update: dict[str, object]) -> RedisConfig:
    """``cfg`` with ``update``, checked as settings from the environment are."""
    return RedisConfig(**(cfg.model_dump() | update))


def read(cfg: RedisConfig, metrics: ServingMetrics | None = None):
    store = OnlineStore(
        cfg, {"user_stats": user_stats}, serving=ServingConfig(timeout_s=0.5), metrics=metrics
    )
    try:
        return store.get_online_features(["user_stats:clicks_1d"], [{"user_id": "u1"}])[0][
            "user_stats:clicks_1d"
        ]
    finally:
        store.close()


def sink_error(cfg: RedisConfig) -> SinkError:
    """The error opening a sink raises, which must come at once."""
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        write_tile(cfg)
    assert time.monotonic() - started < 2.0
    return info.value


def error_text(exc: BaseException) -> str:
    """Everything an operator could see of an error: its chain, reprs and traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


def no_password_shown(logs: pytest.LogCaptureFixture, *errors: BaseException) -> None:
    for text in [logs.text, *(error_text(e) for e in errors)]:
        assert PASSWORD not in text
        assert WRONG not in text


def errors_by_reason(metrics: ServingMetrics) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "feature_fetch_errors_total" and s.value
    }


def test_tiles_written_and_read_through_tls_as_the_acl_user(secured, certs, tmp_path, logs):
    write_tile(secured)
    value = read(secured)
    assert (value.value, value.status) == (1, Status.PRESENT)

    # The same, with the password from a file and a client certificate.
    password_file = tmp_path / "password"
    password_file.write_text(f"{PASSWORD}\n")
    from_file = changed(
        secured,
        {
            "password": None,
            "password_file": password_file,
            "tls_cert_file": certs["client"],
            "tls_key_file": certs["client"].with_suffix(".key"),
        },
    )
    write_tile(from_file)
    assert read(from_file).status is Status.PRESENT
    no_password_shown(logs)


def test_the_acl_user_reaches_only_its_own_keys(secured):
    client = redis.Redis(**client_kwargs(secured))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("elsewhere:key")
    finally:
        client.close()


def test_a_wrong_password_fails_the_sink_at_once_and_reads_degrade(secured, logs):
    wrong = changed(secured, {"password": WRONG})
    error = sink_error(wrong)
    assert "PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD" in str(error)
    assert isinstance(error.__cause__, redis.AuthenticationError)

    metrics = ServingMetrics(CollectorRegistry())
    started = time.monotonic()
    value = read(wrong, metrics)
    assert time.monotonic() - started < 2.0
    assert (value.value, value.status) == (0, Status.ERROR)
    assert errors_by_reason(metrics) == {"auth": 1}
    assert "PARITY_REDIS_PASSWORD" in logs.text
    no_password_shown(logs, error)


def test_an_unknown_user_is_named(secured, logs):
    error = sink_error(changed(secured, {"username": "nobody"}))
    assert "user 'nobody'" in str(error)
    assert "PARITY_REDIS_USERNAME" in str(error)
    no_password_shown(logs, error)


def test_a_plain_connection_to_the_tls_port_says_to_turn_tls_on(secured, logs):
    plain = changed(secured, {"tls": False, "tls_ca_file": None})
    error = sink_error(plain)
    assert "PARITY_REDIS_TLS=true" in str(error)
    assert read(plain).status is Status.ERROR
    no_password_shown(logs, error)


def test_a_server_certificate_from_another_ca_names_the_ca_setting(secured, certs, logs):
    error = sink_error(changed(secured, {"tls_ca_file": certs["other_ca"]}))
    assert "PARITY_REDIS_TLS_CA_FILE" in str(error)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    no_password_shown(logs, error)
