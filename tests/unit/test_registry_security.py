"""A secured schema registry's settings: checked at start, passed the same way to every client."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from jobs.compiler import compile_view
from jobs.decode import decoded_source_statements
from parity.config import KafkaConfig, RegistryConfig
from schemas.registry import RegistryClient, confluent_settings, refused_login
from tests.unit.views import user_stats

SECRET = "s3cret-registry-password"
HTTPS = "https://127.0.0.1:18443/apis/ccompat/v7"


def failure(**settings: object) -> str:
    with pytest.raises(ValidationError) as info:
        RegistryConfig(**settings)  # type: ignore[arg-type]
    return str(info.value)


def test_a_login_or_tls_files_over_plain_http_are_refused_naming_the_url(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    message = failure(basic_auth_user_info=f"parity:{SECRET}")
    assert "PARITY_REGISTRY_BASIC_AUTH_USER_INFO is set but PARITY_REGISTRY_URL is not https" in message
    assert SECRET not in message
    assert "PARITY_REGISTRY_CA_FILE is set but PARITY_REGISTRY_URL is not https" in failure(ca_file=ca)


def test_the_login_must_be_user_colon_password_and_is_never_shown():
    for bad in (SECRET, f":{SECRET}", "parity:"):
        message = failure(url=HTTPS, basic_auth_user_info=bad)
        assert "PARITY_REGISTRY_BASIC_AUTH_USER_INFO must be <user>:<password>" in message
        assert SECRET not in message
    cfg = RegistryConfig(url=HTTPS, basic_auth_user_info=f"parity:{SECRET}")
    assert cfg.basic_auth_user == "parity"
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)


def test_the_login_may_come_from_a_file_and_is_checked_the_same(tmp_path):
    login = tmp_path / "login"
    login.write_text(f"parity:{SECRET}\n")  # a mounted secret often ends with a newline
    cfg = RegistryConfig(url=HTTPS, basic_auth_user_info_file=login)
    assert cfg.basic_auth_user_info is not None
    assert cfg.basic_auth_user_info.get_secret_value() == f"parity:{SECRET}"
    assert "not both" in failure(url=HTTPS, basic_auth_user_info_file=login, basic_auth_user_info="a:b")
    assert "BASIC_AUTH_USER_INFO_FILE: no file at" in failure(
        url=HTTPS, basic_auth_user_info_file=tmp_path / "x"
    )
    login.write_text(SECRET)
    message = failure(url=HTTPS, basic_auth_user_info_file=login)
    assert "must be <user>:<password>" in message and SECRET not in message
    login.write_text(f"parity:{SECRET}")
    assert "is not https" in failure(basic_auth_user_info_file=login)


def test_files_must_exist_and_a_key_needs_its_certificate(tmp_path):
    assert f"PARITY_REGISTRY_CA_FILE: no file at {tmp_path / 'nope.pem'}" in failure(
        url=HTTPS, ca_file=tmp_path / "nope.pem"
    )
    key = tmp_path / "client.key"
    key.write_text("-")
    assert "PARITY_REGISTRY_KEY_FILE needs PARITY_REGISTRY_CERT_FILE" in failure(url=HTTPS, key_file=key)
    assert "is not an http(s) URL" in failure(url="127.0.0.1:18081")


def test_confluent_clients_get_the_login_and_the_files(tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-")
    cfg = RegistryConfig(
        url=HTTPS,
        basic_auth_user_info=f"parity:{SECRET}",
        ca_file=files["ca"],
        cert_file=files["cert"],
        key_file=files["key"],
    )
    assert confluent_settings(cfg) == {
        "basic.auth.user.info": f"parity:{SECRET}",
        "ssl.ca.location": str(files["ca"]),
        "ssl.certificate.location": str(files["cert"]),
        "ssl.key.location": str(files["key"]),
    }
    assert confluent_settings(RegistryConfig()) == {}


def test_a_refused_login_names_the_user_and_the_setting_not_the_password():
    cfg = RegistryConfig(url=HTTPS, basic_auth_user_info=f"parity:{SECRET}")
    message = str(refused_login(cfg, 401))
    assert message == (
        f"the schema registry at {HTTPS} refused the login of user 'parity' (HTTP 401); "
        "check PARITY_REGISTRY_BASIC_AUTH_USER_INFO"
    )
    assert "set PARITY_REGISTRY_BASIC_AUTH_USER_INFO=<user>:<password>" in str(
        refused_login(RegistryConfig(url=HTTPS), 401)
    )


def test_an_unreadable_ca_file_names_the_setting(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    from parity.errors import ConfigError

    with pytest.raises(ConfigError, match="PARITY_REGISTRY_CA_FILE: cannot read"):
        RegistryClient(RegistryConfig(url=HTTPS, ca_file=ca))


def _decoder_options(registry: RegistryConfig) -> dict[str, str]:
    source = decoded_source_statements(
        compile_view(user_stats), KafkaConfig(), registry, group_id="g", bounded=True, dead_letter_topic="dlq"
    )
    return dict(re.findall(r"'([^']+)' = '([^']*)'", source.statements[0]))


def test_the_jvm_decoder_gets_the_login_and_absolute_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("-")
    cfg = RegistryConfig(url=HTTPS, basic_auth_user_info=f"parity:{SECRET}", ca_file="ca.pem")
    made = _decoder_options(cfg)
    assert made["parity-avro.url"] == HTTPS
    assert made["parity-avro.basic-auth.user-info"] == f"parity:{SECRET}"
    assert made["parity-avro.ssl.ca-file"] == str(tmp_path / "ca.pem")
    assert "parity-avro.ssl.cert-file" not in made
    plain = _decoder_options(RegistryConfig())
    assert not any("basic-auth" in key or "ssl." in key for key in plain)


def test_flinks_own_avro_confluent_binding_refuses_a_secured_registry():
    from jobs.compiler import kafka_source_ddl
    from parity.errors import ConfigError

    secured = RegistryConfig(url=HTTPS, basic_auth_user_info=f"parity:{SECRET}")
    with pytest.raises(ConfigError, match="parity-avro format") as info:
        kafka_source_ddl(compile_view(user_stats), KafkaConfig(), secured, group_id="g", bounded=True)
    assert SECRET not in str(info.value)
