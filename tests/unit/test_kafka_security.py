"""Kafka SASL and TLS settings: checks that name the setting, the two client builders, a hidden password."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from pydantic import ValidationError

from features.user_stats import view as user_stats
from jobs.compiler import compile_view, kafka_source_ddl
from jobs.decode import decoded_source_statements
from parity.config import KafkaConfig, RegistryConfig
from parity.errors import ConfigError
from parity.kafka_security import explain, flink_properties, librdkafka_config

SECRET = 'hunter2 "not" for\\logs'
SCRAM = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"


@pytest.fixture(autouse=True)
def no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BOOTSTRAP_SERVERS",
        "SECURITY_PROTOCOL",
        "SASL_MECHANISM",
        "SASL_USERNAME",
        "SASL_PASSWORD",
        "SASL_PASSWORD_FILE",
        "SSL_CA_FILE",
        "SSL_CERT_FILE",
        "SSL_KEY_FILE",
    ):
        monkeypatch.delenv(f"PARITY_KAFKA_{name}", raising=False)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("not read until a client connects\n")
    return path


def secured(ca: Path, **changes: object) -> KafkaConfig:
    settings: dict[str, object] = {
        "bootstrap_servers": "kafka-1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_username": "parity",
        "sasl_password": SECRET,
        "ssl_ca_file": ca,
    }
    return KafkaConfig(**(settings | changes))


def test_plain_by_default() -> None:
    cfg = KafkaConfig()
    assert librdkafka_config(cfg) == {"bootstrap.servers": "127.0.0.1:19092"}
    assert flink_properties(cfg) == {"properties.bootstrap.servers": "127.0.0.1:19092"}


def test_sasl_ssl_from_the_environment(monkeypatch: pytest.MonkeyPatch, ca: Path) -> None:
    monkeypatch.setenv("PARITY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PARITY_KAFKA_SASL_USERNAME", "parity")
    monkeypatch.setenv("PARITY_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("PARITY_KAFKA_SSL_CA_FILE", str(ca))
    cfg = KafkaConfig()
    assert (cfg.sasl_mechanism, cfg.uses_sasl, cfg.uses_tls) == ("SCRAM-SHA-512", True, True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "SECURITY_PROTOCOL=SASL_SSL needs PARITY_KAFKA_SASL_USERNAME"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "parity"},
            "needs PARITY_KAFKA_SASL_PASSWORD or PARITY_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "parity",
                "sasl_password": SECRET,
                "sasl_password_file": "/etc/hostname",
            },
            "set one of PARITY_KAFKA_SASL_PASSWORD and PARITY_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {"sasl_username": "parity", "sasl_password": SECRET},
            "PARITY_KAFKA_SASL_USERNAME is set but PARITY_KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {"security_protocol": "SSL", "sasl_mechanism": "PLAIN"},
            "PARITY_KAFKA_SASL_MECHANISM is set but PARITY_KAFKA_SECURITY_PROTOCOL=SSL",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "p",
                "sasl_password": SECRET,
                "ssl_ca_file": "/etc/hostname",
            },
            "PARITY_KAFKA_SSL_CA_FILE is set but PARITY_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not",
        ),
        (
            {"security_protocol": "SSL", "ssl_key_file": "/etc/hostname"},
            "PARITY_KAFKA_SSL_KEY_FILE needs PARITY_KAFKA_SSL_CERT_FILE",
        ),
        (
            {"security_protocol": "SSL", "ssl_ca_file": "/nonexistent/ca.pem"},
            "PARITY_KAFKA_SSL_CA_FILE: no file at /nonexistent/ca.pem",
        ),
        ({"security_protocol": "SASL_TLS"}, "security_protocol"),
        ({"security_protocol": "SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_checks_name_the_setting_to_fix(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        KafkaConfig(**settings)
    assert SECRET not in str(info.value)


def test_password_never_shows(ca: Path) -> None:
    cfg = secured(ca)
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), str(pickle.loads(pickle.dumps(cfg)))):
        assert "hunter2" not in text
    with pytest.raises(ValidationError) as info:
        KafkaConfig(security_protocol="SASL_SSL", sasl_password=SECRET)
    assert "hunter2" not in str(info.value)


def test_librdkafka_settings(ca: Path) -> None:
    conf = librdkafka_config(secured(ca))
    assert callable(conf.pop("error_cb"))
    assert conf == {
        "bootstrap.servers": "kafka-1:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "parity",
        "sasl.password": SECRET,
        "ssl.ca.location": str(ca),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_librdkafka_tls_alone_with_a_client_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("certificate and key\n")
    conf = librdkafka_config(KafkaConfig(security_protocol="SSL", ssl_cert_file=cert))
    assert "sasl.mechanism" not in conf
    assert conf["ssl.ca.location"] == "probe"
    assert conf["ssl.certificate.location"] == conf["ssl.key.location"] == str(cert)


def test_password_file_is_read_when_a_client_is_built(ca: Path, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    cfg = secured(ca, sasl_password=None, sasl_password_file=secret)
    assert librdkafka_config(cfg)["sasl.password"] == "from-a-file"
    secret.write_text("")
    with pytest.raises(ConfigError, match=f"PARITY_KAFKA_SASL_PASSWORD_FILE: {secret} is empty"):
        flink_properties(cfg)


@pytest.mark.parametrize(
    ("mechanism", "module"), [("SCRAM-SHA-512", SCRAM), ("SCRAM-SHA-256", SCRAM), ("PLAIN", PLAIN)]
)
def test_flink_options(ca: Path, mechanism: str, module: str) -> None:
    assert flink_properties(secured(ca, sasl_mechanism=mechanism)) == {
        "properties.bootstrap.servers": "kafka-1:9093",
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": mechanism,
        "properties.sasl.jaas.config": (
            f'{module} required username="parity" password="hunter2 \\"not\\" for\\\\logs";'
        ),
        "properties.ssl.truststore.type": "PEM",
        "properties.ssl.truststore.location": str(ca.resolve()),
    }


def test_flink_client_certificate_must_hold_its_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("certificate\n")
    key.write_text("key\n")
    props = flink_properties(KafkaConfig(security_protocol="SSL", ssl_cert_file=cert))
    assert props["properties.ssl.keystore.type"] == "PEM"
    assert props["properties.ssl.keystore.location"] == str(cert.resolve())
    with pytest.raises(ConfigError, match="put the key into PARITY_KAFKA_SSL_CERT_FILE"):
        flink_properties(KafkaConfig(security_protocol="SSL", ssl_cert_file=cert, ssl_key_file=key))


def test_every_kafka_table_of_the_job_carries_the_options(ca: Path) -> None:
    cfg = secured(ca)
    pipeline = compile_view(user_stats)
    source = kafka_source_ddl(pipeline, cfg, RegistryConfig(), group_id="g", bounded=True)
    decoded = decoded_source_statements(
        pipeline, cfg, RegistryConfig(), group_id="g", bounded=True, dead_letter_topic="dlq"
    )
    raw_ddl, _, dead_letter_ddl = decoded.statements
    for ddl in (source, raw_ddl, dead_letter_ddl):
        assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
        assert "'properties.sasl.mechanism' = 'SCRAM-SHA-512'" in ddl
        # The SQL literal doubles no quote here: the JAAS value holds none of its own.
        assert f"'properties.sasl.jaas.config' = '{SCRAM} required username=\"parity\"" in ddl
        assert f"'properties.ssl.truststore.location' = '{ca.resolve()}'" in ddl


def test_plain_job_tables_are_unchanged() -> None:
    ddl = kafka_source_ddl(
        compile_view(user_stats), KafkaConfig(), RegistryConfig(), group_id="g", bounded=True
    )
    assert "'properties.bootstrap.servers' = '127.0.0.1:19092',\n  'properties.group.id' = 'g'" in ddl
    assert "security.protocol" not in ddl


@pytest.mark.parametrize(
    ("code", "settings", "message"),
    [
        (
            KafkaError._AUTHENTICATION,
            {},
            "Kafka refused the SASL login of user 'parity' (SCRAM-SHA-512); check "
            "PARITY_KAFKA_SASL_USERNAME / PARITY_KAFKA_SASL_PASSWORD",
        ),
        (
            KafkaError._SSL,
            {},
            "the TLS handshake with Kafka at kafka-1:9093 failed; check PARITY_KAFKA_SSL_CA_FILE",
        ),
        (KafkaError._TRANSPORT, {}, "Local: Broker transport failure"),
    ],
)
def test_errors_name_the_setting(ca: Path, code: int, settings: dict[str, object], message: str) -> None:
    text = explain(secured(ca, **settings), KafkaError(code))
    assert message in text
    assert "hunter2" not in text


def test_a_plain_client_is_told_about_tls() -> None:
    text = explain(KafkaConfig(), KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert "set PARITY_KAFKA_SECURITY_PROTOCOL to SASL_SSL or SSL" in text
    text = explain(KafkaConfig(), KafkaError(KafkaError._AUTHENTICATION))
    assert "wants a login; set PARITY_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in text


def test_a_refused_login_raises_from_the_error_callback(ca: Path) -> None:
    error_cb = librdkafka_config(secured(ca))["error_cb"]
    with pytest.raises(ConfigError, match="Kafka refused the SASL login of user 'parity'"):
        error_cb(KafkaError(KafkaError._AUTHENTICATION))
    error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN))  # retried by librdkafka, not raised
