"""The schema registry behind TLS and an HTTP basic-auth login: nginx in front of Apicurio (optional service).

Apicurio's own authentication needs an OpenID Connect server; a TLS-terminating
reverse proxy that checks a basic-auth login gives clients what a secured
Confluent registry asks of them (``https://``, ``basic.auth.user.info``, a CA
file) without one. Not started by a plain `python -m stack up`; `--only
registry-tls` starts it in front of the stack's registry, which must be up.

nginx comes from Debian (``apt-get install nginx``, as root; `python -m stack
fetch --only registry-tls` does it). Its certificates are made at start by
``stack.certs`` under ``.parity/registry-tls/certs`` (kept while they are valid for
another day, so clients holding the CA file keep trusting a restarted proxy);
the login is ``PARITY_STACK_REGISTRY_TLS_USER`` / ``_PASSWORD``, stored hashed.
``proxy_config`` and ``spawn`` also run private proxies in tests.
"""

from __future__ import annotations

import getpass
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from parity.errors import StackError
from stack import process
from stack.certs import Certs, make_certs
from stack.config import StackConfig
from stack.status import Info

NAME = "registry-tls"
# In the proxy's command line (the -p prefix folder it is started with).
MARKER = "registry-tls"
PACKAGE = "nginx"
REALM = "parity schema registry"
API = "/apis/ccompat/v7"


class RegistryTlsSettings(BaseSettings):
    """The local registry proxy: its port and the one login it accepts."""

    model_config = SettingsConfigDict(
        env_prefix="PARITY_STACK_REGISTRY_TLS_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    port: int = Field(default=18443, ge=1, le=65535)
    user: str = Field(default="parity", pattern=r"^[^:\s]+$")
    password: SecretStr = SecretStr("parity-local-registry-secret")


def url(cfg: StackConfig, proxy: RegistryTlsSettings | None = None) -> str:
    """The registry URL clients take (PARITY_REGISTRY_URL)."""
    return f"https://{cfg.host}:{(proxy or RegistryTlsSettings()).port}{API}"


def paths(cfg: StackConfig) -> dict[str, Path]:
    base = cfg.service_dir(NAME)
    return {
        "base": base,
        "certs": base / "certs",
        "conf": base / "nginx.conf",
        "htpasswd": base / "htpasswd",
        "log": cfg.logs_dir / f"{NAME}.log",
        "pid": cfg.run_dir / f"{NAME}.pid",
    }


def nginx_binary() -> str:
    """nginx's path (it lives in /usr/sbin, often off a user's PATH).

    Raises:
        StackError: nginx is not installed.
    """
    found = shutil.which(PACKAGE) or shutil.which(PACKAGE, path="/usr/sbin:/sbin")
    if found is None:
        raise StackError(
            f"{NAME}: nginx is not installed; as root: apt-get install -y nginx "
            "(or `python -m stack fetch --only registry-tls`)"
        )
    return found


def htpasswd_line(user: str, password: SecretStr) -> str:
    """``user:<SHA-512 crypt hash>``: nginx checks logins with the system's crypt()."""
    try:
        done = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=password.get_secret_value(),
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise StackError(f"{NAME}: cannot hash the password with `openssl passwd -6`: {exc}") from None
    return f"{user}:{done.stdout.strip()}\n"


def proxy_config(*, folder: Path, host: str, port: int, upstream: str, certs: Certs, htpasswd: Path) -> str:
    """nginx.conf for a proxy on ``host:port`` (TLS, basic auth) in front of ``upstream`` (host:port).

    Every path nginx writes (pid, temp files, logs) is under ``folder``, so that it runs
    unprivileged, and in the foreground, so that its pid is the one ``spawn`` wrote.
    """
    temp = folder / "tmp"
    # As root nginx hands requests to workers running as "nobody", who could not read the
    # login file in a private folder; run them as the user who started the stack instead.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    # Schemas are small; a larger body is not a schema.
    client_max_body_size 8m;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {certs.server};
        ssl_certificate_key {certs.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # A client certificate is checked when one is offered, never required.
        ssl_client_certificate {certs.ca};
        ssl_verify_client optional;
        auth_basic "{REALM}";
        auth_basic_user_file {htpasswd};
        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            # The registry never sees the login: it has no users of its own.
            proxy_set_header Authorization "";
        }}
    }}
}}
"""


def spawn(
    *,
    folder: Path,
    host: str,
    port: int,
    upstream: str,
    certs: Certs,
    user: str,
    password: SecretStr,
    log_file: Path,
    pid_file: Path,
) -> subprocess.Popen[bytes]:
    """Write the login file and the config into ``folder`` and start nginx on them."""
    binary = nginx_binary()
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / temp).mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(htpasswd_line(user, password))
    conf = folder / "nginx.conf"
    conf.write_text(
        proxy_config(folder=folder, host=host, port=port, upstream=upstream, certs=certs, htpasswd=htpasswd)
    )
    # -e: the error log before the config is read, which would otherwise be /var/log/nginx's.
    argv = [binary, "-p", f"{folder}/", "-e", "stderr", "-c", str(conf)]
    return process.spawn(argv, log_file=log_file, pid_file=pid_file, cwd=folder)


def _certs_valid_for_a_day(certs: Certs) -> bool:
    if not certs.server.is_file() or not certs.ca.is_file():
        return False
    check = ["openssl", "x509", "-checkend", "86400", "-noout", "-in", str(certs.server)]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def start(cfg: StackConfig) -> None:
    if is_up(cfg):
        return
    proxy = RegistryTlsSettings()
    process.check_ports_free(NAME, {"PARITY_STACK_REGISTRY_TLS_PORT": proxy.port}, cfg.host)
    p = paths(cfg)
    p["base"].mkdir(parents=True, exist_ok=True)
    certs = Certs(p["certs"])
    if not _certs_valid_for_a_day(certs):
        certs = make_certs(p["certs"], days=30)
    proc = spawn(
        folder=p["base"],
        host=cfg.host,
        port=proxy.port,
        upstream=f"{cfg.host}:{cfg.registry_port}",
        certs=certs,
        user=proxy.user,
        password=proxy.password,
        log_file=p["log"],
        pid_file=p["pid"],
    )
    process.wait_until(
        lambda: is_up(cfg), service=NAME, log_file=p["log"], timeout_s=cfg.start_timeout_s, proc=proc
    )


def stop(cfg: StackConfig) -> None:
    process.stop_by_pid_file(paths(cfg)["pid"], MARKER)


def asks_for_login(address: str, ca_file: Path) -> bool:
    """The proxy answers TLS, trusted by ``ca_file``, and asks an anonymous request for its login."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        with urllib.request.urlopen(address + "/subjects", timeout=2.0, context=context):  # noqa: S310
            return False  # an answer without a login: not this proxy
    except urllib.error.HTTPError as exc:
        return exc.code == 401 and REALM in (exc.headers.get("WWW-Authenticate") or "")
    except (OSError, ValueError, ssl.SSLError):
        return False


def is_up(cfg: StackConfig) -> bool:
    """Up once the proxy asks for its login; whether the registry behind answers is its own status."""
    return asks_for_login(url(cfg), Certs(paths(cfg)["certs"]).ca)


def info(cfg: StackConfig) -> Info:
    p = paths(cfg)
    return Info(NAME, url(cfg), process.read_pid(p["pid"], MARKER), p["log"], is_up(cfg))
