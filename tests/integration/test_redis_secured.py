"""The online store behind TLS and an ACL user: a private redis-server with throwaway certificates.

The server takes TLS only (``--port 0``), its ``default`` user is off, and the
user ``parity`` may touch only ``<prefix>:*`` keys with the commands the sink's
and the reads' scripts need. The sink writes as that user, reads come back
``present``; a wrong password, a plain connection or an unknown CA fail at once
with an error naming the setting to fix, and no password ever shows.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from features.user_stats import view as user_stats
from parity.config import RedisConfig
from parity.errors import SinkError
from serving.assembly import Status
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.redis import client_kwargs
from tests.integration.test_serving_live import PrivateRedis, write_tile

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-parity-password"
WRONG = "n0t-the-parity-password"
PREFIX = "secured"
NOW = datetime.now(UTC)
# Commands the sink's and the reads' scripts run, by ACL category; nothing administrative.
COMMANDS = ["+@read", "+@write", "+@scripting", "+@connection", "+@keyspace", "-@dangerous"]


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """This test brings its own Redis."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None
) -> x509.Certificate:
    """A certificate for ``key``, self-signed (a CA) without ``issuer``, else for 127.0.0.1."""
    issuer_name, signer = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate it signed, and a second CA nobody uses."""
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    return {
        "ca": _write(tmp_path / "ca.pem", _issue("parity test CA", ca_key, None)),
        "other_ca": _write(tmp_path / "other-ca.pem", _issue("someone else's CA", other_key, None)),
        "server": _write(
            tmp_path / "server.pem", _issue("redis", server_key, ("parity test CA", ca_key)), server_key
        ),
        "client": _write(
            tmp_path / "client.pem", _issue("parity", client_key, ("parity test CA", ca_key)), client_key
        ),
    }


@pytest.fixture
def secured(tmp_path: Path, certs: dict[str, Path]):
    """The TLS-only server with the ``parity`` user, and the settings that reach it."""
    server = PrivateRedis(
        tmp_path,
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
            f">{PASSWORD}",
            f"~{PREFIX}:*",
            *COMMANDS,
        ],
        port_option="--tls-port",
    )
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
