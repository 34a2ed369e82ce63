"""Redis login and TLS settings: checks that name the setting, a password that never shows."""

from __future__ import annotations

import pickle

import pytest
import redis
from pydantic import ValidationError

from parity.config import RedisConfig
from parity.errors import SinkError
from serving.online import failure_reason
from sinks.redis import RedisTileSink, client_kwargs, connect, explain
from tests.unit.views import user_stats

SECRET = "hunter2-not-for-logs"


@pytest.fixture(autouse=True)
def no_redis_env(monkeypatch):
    for name in (
        "USERNAME",
        "PASSWORD",
        "PASSWORD_FILE",
        "TLS",
        "TLS_CA_FILE",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "MODE",
        "CLUSTER_NODES",
        "DB",
    ):
        monkeypatch.delenv(f"PARITY_REDIS_{name}", raising=False)


@pytest.fixture
def pem(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("not checked until a connection opens\n")
    return path


def test_plain_by_default():
    kwargs = client_kwargs(RedisConfig())
    assert "ssl" not in kwargs
    assert "credential_provider" not in kwargs
    assert "password" not in kwargs


def test_password_and_password_file_together_are_refused(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    with pytest.raises(ValidationError, match="PARITY_REDIS_PASSWORD and PARITY_REDIS_PASSWORD_FILE") as info:
        RedisConfig(password=SECRET, password_file=secret)
    assert SECRET not in str(info.value)


def test_username_needs_a_password():
    with pytest.raises(ValidationError, match="PARITY_REDIS_USERNAME needs PARITY_REDIS_PASSWORD"):
        RedisConfig(username="parity")


def test_tls_files_need_tls(pem):
    with pytest.raises(ValidationError, match="PARITY_REDIS_TLS_CA_FILE is set but PARITY_REDIS_TLS"):
        RedisConfig(tls_ca_file=pem)


def test_a_missing_ca_file_is_named(tmp_path):
    with pytest.raises(ValidationError, match="PARITY_REDIS_TLS_CA_FILE: no file at"):
        RedisConfig(tls=True, tls_ca_file=tmp_path / "absent.pem")


def test_a_key_needs_its_certificate(pem):
    with pytest.raises(ValidationError, match="PARITY_REDIS_TLS_KEY_FILE needs PARITY_REDIS_TLS_CERT_FILE"):
        RedisConfig(tls=True, tls_key_file=pem)


def test_settings_from_the_environment(monkeypatch, pem):
    monkeypatch.setenv("PARITY_REDIS_USERNAME", "parity")
    monkeypatch.setenv("PARITY_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("PARITY_REDIS_TLS", "true")
    monkeypatch.setenv("PARITY_REDIS_TLS_CA_FILE", str(pem))
    kwargs = client_kwargs(RedisConfig())
    assert kwargs["ssl"] is True
    assert kwargs["ssl_ca_certs"] == str(pem)
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["credential_provider"].get_credentials() == ("parity", SECRET)


def test_an_invalid_setting_does_not_echo_the_password(monkeypatch):
    monkeypatch.setenv("PARITY_REDIS_PASSWORD", SECRET)
    with pytest.raises(ValidationError) as info:
        RedisConfig(tls_ca_file="/nowhere")
    assert SECRET not in str(info.value)


def test_password_is_masked_everywhere_but_the_connection(tmp_path):
    cfg = RedisConfig(username="parity", password=SECRET)
    kwargs = client_kwargs(cfg)
    settings = cfg.model_dump()  # what sinks.flink_udf pickles for the job's functions
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(kwargs), repr(settings)):
        assert SECRET not in text
    # The job's functions get the settings pickled; they come back whole.
    assert RedisConfig(**pickle.loads(pickle.dumps(settings))).password_value() == SECRET


def test_password_file_is_read_when_a_connection_opens(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("first\n")
    provider = client_kwargs(RedisConfig(password_file=secret))["credential_provider"]
    assert provider.get_credentials() == ("first",)
    secret.write_text("rotated\n")
    assert provider.get_credentials() == ("rotated",)


def test_an_unreadable_password_file_is_a_refused_login(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("")
    cfg = RedisConfig(password_file=secret)
    with pytest.raises(redis.AuthenticationError, match=r"PARITY_REDIS_PASSWORD_FILE: .* is empty") as info:
        client_kwargs(cfg)["credential_provider"].get_credentials()
    assert failure_reason(info.value) == "auth"


def test_errors_name_the_settings_to_fix():
    cfg = RedisConfig(username="parity", password=SECRET)
    refused = explain(cfg, redis.AuthenticationError("invalid username-password pair or user is disabled."))
    assert "PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD" in refused
    assert SECRET not in refused
    handshake = explain(
        RedisConfig(username="parity", password=SECRET, tls=True),
        redis.ConnectionError("Error 1 connecting to 127.0.0.1:6380. [SSL: CERTIFICATE_VERIFY_FAILED]"),
    )
    assert "PARITY_REDIS_TLS_CA_FILE" in handshake
    plain = explain(cfg, redis.ConnectionError("Error while reading: Connection reset by peer"))
    assert "PARITY_REDIS_TLS=true" in plain
    assert explain(cfg, redis.ConnectionError("Connection refused.")) == "Connection refused"


def test_failure_reasons():
    assert failure_reason(redis.AuthenticationError("WRONGPASS")) == "auth"
    assert failure_reason(redis.exceptions.NoPermissionError("NOPERM")) == "auth"
    assert failure_reason(redis.TimeoutError()) == "timeout"
    assert failure_reason(redis.ConnectionError()) == "unavailable"


def test_cluster_mode_takes_seed_nodes_and_refuses_what_a_cluster_cannot_do():
    cfg = RedisConfig(mode="cluster", cluster_nodes="10.0.0.1:7001,[::1]:7002, r3:7003")
    assert cfg.seed_nodes() == [("10.0.0.1", 7001), ("[::1]", 7002), ("r3", 7003)]
    assert RedisConfig(mode="cluster", host="r1", port=7000).seed_nodes() == [("r1", 7000)]
    with pytest.raises(ValidationError, match="'r1' is not host:port"):
        RedisConfig(mode="cluster", cluster_nodes="r1,r2:7002")
    with pytest.raises(ValidationError, match="'r1:0' is not host:port"):
        RedisConfig(mode="cluster", cluster_nodes="r1:0")
    with pytest.raises(ValidationError, match="PARITY_REDIS_DB must be 0"):
        RedisConfig(mode="cluster", db=2)
    with pytest.raises(ValidationError, match="PARITY_REDIS_MODE is not cluster"):
        RedisConfig(cluster_nodes="r1:7001")


def test_messages_name_the_store_by_its_address():
    assert RedisConfig(host="r1", port=7000).address == "r1:7000"
    cluster = RedisConfig(mode="cluster", cluster_nodes="r1:7001,r2:7002")
    assert cluster.address == "r1:7001,r2:7002 (cluster seeds)"


def test_a_cluster_without_an_answering_seed_is_an_unreachable_redis():
    # Unlike redis.Redis, a cluster client asks a seed for the slot map when it is built.
    cfg = RedisConfig(mode="cluster", cluster_nodes="127.0.0.1:1", socket_timeout_s=0.2)
    with pytest.raises(
        redis.ConnectionError, match=r"no seed .* answered \(PARITY_REDIS_CLUSTER_NODES=127.0.0.1:1\)"
    ):
        connect(cfg)
    # The sink says so as a SinkError, as for any Redis that does not answer.
    with pytest.raises(SinkError, match="Redis did not answer for user_stats_v1: no seed"):
        RedisTileSink(user_stats, cfg).open()
