"""The few calls of a Confluent-compatible Schema Registry API that schema tooling needs.

Works against Confluent Schema Registry and Apicurio's ccompat API
(``.../apis/ccompat/v7``). Timeouts are short: tooling must fail fast, not hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from parity.config import RegistryConfig
from parity.errors import SchemaError

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class Compatibility:
    """The registry's answer to "could this schema be registered next?"."""

    compatible: bool
    messages: tuple[str, ...]
    subject_exists: bool


class RegistryClient:
    """A small, synchronous client; use as a context manager so its connections close."""

    def __init__(self, cfg: RegistryConfig, timeout_s: float | None = None) -> None:
        self.url = cfg.url.rstrip("/")
        self._http = httpx.Client(
            timeout=timeout_s if timeout_s is not None else cfg.timeout_s,
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def reachable(self) -> bool:
        """Whether the registry answers ``GET /subjects``."""
        try:
            return self._http.get(f"{self.url}/subjects").status_code == 200
        except httpx.HTTPError:
            return False

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
            return self._http.request(method, self.url + path, json=payload)
        except httpx.HTTPError as exc:
            raise SchemaError(
                f"schema registry unreachable at {self.url}: {exc}; start it with `make up` "
                "or set PARITY_REGISTRY_URL."
            ) from exc

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


def _path(subject: str) -> str:
    return quote(subject, safe="")
