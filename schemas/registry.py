"""The few calls of a Confluent-compatible Schema Registry API that schema tooling needs.

Works against Confluent Schema Registry and Apicurio's ccompat API
(``.../apis/ccompat/v7``), plain or over TLS with a basic-auth login
(``PARITY_REGISTRY_*``). Timeouts are short: tooling must fail fast, not hang.
``confluent_settings`` turns the same settings into confluent-kafka's registry
client settings, so that both clients log in the same way.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from parity.config import RegistryConfig
from parity.errors import ConfigError, SchemaError

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class Compatibility:
    """The registry's answer to "could this schema be registered next?"."""

    compatible: bool
    messages: tuple[str, ...]
    subject_exists: bool


def confluent_settings(cfg: RegistryConfig) -> dict[str, Any]:
    """The login and TLS settings of confluent-kafka's ``SchemaRegistryClient`` (no URL, no timeouts)."""
    settings: dict[str, Any] = {}
    if cfg.basic_auth_user_info is not None:
        settings["basic.auth.user.info"] = cfg.basic_auth_user_info.get_secret_value()
    if cfg.ca_file is not None:
        settings["ssl.ca.location"] = str(cfg.ca_file)
    if cfg.cert_file is not None:
        settings["ssl.certificate.location"] = str(cfg.cert_file)
    if cfg.key_file is not None:
        settings["ssl.key.location"] = str(cfg.key_file)
    return settings


def tls_context(cfg: RegistryConfig) -> ssl.SSLContext:
    """Verifies the registry's certificate (and its name) against ``ca_file`` or the system's CAs.

    Raises:
        ConfigError: a CA, certificate or key file cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"PARITY_REGISTRY_CA_FILE: cannot read {cfg.ca_file} as PEM: {exc}") from exc
    if cfg.cert_file is not None:
        try:
            context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"PARITY_REGISTRY_CERT_FILE / PARITY_REGISTRY_KEY_FILE: cannot load the client certificate "
                f"{cfg.cert_file}: {exc}"
            ) from exc
    return context


def refused_login(cfg: RegistryConfig, status: int) -> ConfigError:
    """The error for a 401 or 403 from the registry: which login, and which setting to fix."""
    if cfg.basic_auth_user_info is None:
        return ConfigError(
            f"the schema registry at {cfg.url} answered {status}: it wants a login; "
            "set PARITY_REGISTRY_BASIC_AUTH_USER_INFO=<user>:<password>"
        )
    return ConfigError(
        f"the schema registry at {cfg.url} refused the login of user {cfg.basic_auth_user!r} "
        f"(HTTP {status}); check PARITY_REGISTRY_BASIC_AUTH_USER_INFO"
    )


def connection_error(cfg: RegistryConfig, exc: httpx.HTTPError) -> ConfigError | SchemaError:
    """The error for a request that got no answer: an untrusted certificate names the CA setting."""
    if _certificate_refused(exc):
        return ConfigError(
            f"the TLS handshake with the schema registry at {cfg.url} failed: {exc}; "
            "check PARITY_REGISTRY_CA_FILE (the CA that signed its certificate)"
        )
    return SchemaError(
        f"schema registry unreachable at {cfg.url}: {exc}; start it with `make up` "
        "or set PARITY_REGISTRY_URL."
    )


class RegistryClient:
    """A small, synchronous client; use as a context manager so its connections close."""

    def __init__(self, cfg: RegistryConfig, timeout_s: float | None = None) -> None:
        self.url = cfg.url.rstrip("/")
        self._cfg = cfg
        auth = None
        if cfg.basic_auth_user_info is not None:
            user, _, password = cfg.basic_auth_user_info.get_secret_value().partition(":")
            auth = httpx.BasicAuth(user, password)
        self._http = httpx.Client(
            timeout=timeout_s if timeout_s is not None else cfg.timeout_s,
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
            auth=auth,
            verify=tls_context(cfg) if cfg.uses_tls else True,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def reachable(self) -> bool:
        """Whether the registry answers ``GET /subjects``.

        Raises:
            ConfigError: it answers, but refuses the login (a wrong or missing
                PARITY_REGISTRY_BASIC_AUTH_USER_INFO), or its certificate is not trusted.
        """
        try:
            status = self._http.get(f"{self.url}/subjects").status_code
        except httpx.HTTPError as exc:
            if _certificate_refused(exc):
                raise connection_error(self._cfg, exc) from exc
            return False
        if status in (401, 403):
            raise refused_login(self._cfg, status)
        return status == 200

    def set_compatibility(self, subject: str, level: str) -> None:
        """``PUT /config/<subject>``.

        Raises:
            SchemaError: the registry refused or did not answer.
        """
        self._call("PUT", f"/config/{_path(subject)}", {"compatibility": level})

    def compatibility(self, subject: str) -> str | None:
        """The subject's own compatibility level, or None when it inherits the global one."""
        response = self._send("GET", f"/config/{_path(subject)}", None)
        if response.status_code == 404:
            return None
        body = self._json(response, f"the compatibility of {subject!r}")
        level = body.get("compatibilityLevel") or body.get("compatibility")
        return str(level) if level else None

    def lookup(self, subject: str, schema: str) -> int | None:
        """The version under which ``schema`` is registered in ``subject``, or None."""
        response = self._send("POST", f"/subjects/{_path(subject)}", {"schema": schema})
        if response.status_code == 404:
            return None
        return int(self._json(response, f"a lookup in {subject!r}")["version"])

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject``; returns its schema id.

        Raises:
            SchemaError: refused (409 incompatible, 422 invalid) or no answer; the message
                carries the registry's reason.
        """
        body = self._call("POST", f"/subjects/{_path(subject)}/versions", {"schema": schema})
        return int(body["id"])

    def check_latest(self, subject: str, schema: str) -> Compatibility:
        """``POST /compatibility/subjects/<subject>/versions/latest``: could ``schema`` come next?"""
        response = self._send(
            "POST",
            f"/compatibility/subjects/{_path(subject)}/versions/latest?verbose=true",
            {"schema": schema},
        )
        if response.status_code == 404:
            return Compatibility(True, (), subject_exists=False)
        body = self._json(response, f"the compatibility check of {subject!r}")
        messages = tuple(str(m) for m in body.get("messages", []) or [])
        return Compatibility(bool(body.get("is_compatible")), messages, subject_exists=True)

    def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> httpx.Response:
        try:
            response = self._http.request(method, self.url + path, json=payload)
        except httpx.HTTPError as exc:
            raise connection_error(self._cfg, exc) from exc
        if response.status_code in (401, 403):
            raise refused_login(self._cfg, response.status_code)
        return response

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        return self._json(self._send(method, path, payload), f"{method} {path}")

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                reason = str(response.json().get("message", response.text))
            except ValueError:
                reason = response.text
            message = f"the registry answered {response.status_code} to {what}: {reason}"
            if response.status_code in (409, 422):
                raise RegistryRefusedError(message, response.status_code)
            raise SchemaError(message)
        try:
            body = response.json()
        except ValueError as exc:
            raise SchemaError(f"the registry's answer to {what} is not JSON: {response.text[:200]}") from exc
        if not isinstance(body, dict):
            raise SchemaError(f"the registry's answer to {what} is not a JSON object: {body!r}")
        return body


class RegistryRefusedError(SchemaError):
    """The registry refused a schema; ``status`` is 409 (incompatible) or 422 (invalid)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate was not trusted.

    httpx wraps httpcore's error, which wraps the ``ssl`` one: look down the chain.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _path(subject: str) -> str:
    return quote(subject, safe="")
