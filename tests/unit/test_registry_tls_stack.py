"""The registry's TLS proxy (stack.registry_tls): nginx bound to 127.0.0.1, asking for the login."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from stack import cli, registry_tls
from stack.certs import Certs
from stack.config import StackConfig


def test_the_proxy_binds_loopback_over_tls_and_asks_every_request_for_the_login(tmp_path: Path) -> None:
    certs = Certs(tmp_path / "certs")
    text = registry_tls.proxy_config(
        folder=tmp_path,
        host="127.0.0.1",
        port=18443,
        upstream="127.0.0.1:18081",
        certs=certs,
        htpasswd=tmp_path / "htpasswd",
    )
    assert "listen 127.0.0.1:18443 ssl;" in text
    assert f"ssl_certificate {certs.server};" in text and f"ssl_certificate_key {certs.server_key};" in text
    assert f'auth_basic "{registry_tls.REALM}";' in text
    assert f"auth_basic_user_file {tmp_path / 'htpasswd'};" in text
    assert "proxy_pass http://127.0.0.1:18081;" in text
    # Every file nginx writes stays in the service's folder.
    assert f"pid {tmp_path / 'nginx.pid'};" in text
    assert "daemon off;" in text


def test_the_login_file_holds_a_hash_never_the_password() -> None:
    line = registry_tls.htpasswd_line("parity", SecretStr("s3cret-registry"))
    user, _, hashed = line.strip().partition(":")
    assert user == "parity" and hashed.startswith("$6$")
    assert "s3cret-registry" not in line


def test_an_optional_service_the_defaults_leave_alone() -> None:
    assert "registry-tls" in cli.NAMES
    assert [s.name for s in cli.selected("registry-tls")] == ["registry-tls"]
    assert "registry-tls" not in [s.name for s in cli.selected(None)]
    cfg = StackConfig()
    assert registry_tls.url(cfg) == "https://127.0.0.1:18443/apis/ccompat/v7"
    assert repr(registry_tls.RegistryTlsSettings()).count("parity-local-registry-secret") == 0
