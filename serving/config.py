"""Settings of the read path, from PARITY_SERVING_* variables.

Redis and Iceberg keep their own settings (``RedisConfig``, ``IcebergConfig``);
these are the read path's own: how long a read may take, when the circuit
breaker opens, how large a request may be, where traces go.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingConfig(BaseSettings):
    """How online reads behave when Redis is slow or down, and what the HTTP server accepts."""

    model_config = SettingsConfigDict(env_prefix="PARITY_SERVING_", extra="forbid", frozen=True)

    # Upper bound of one Redis call (connect and reply). A read never waits longer.
    timeout_s: float = Field(default=0.25, gt=0, le=30)
    # After this many consecutive failed reads the breaker opens and reads fail fast.
    breaker_failures: int = Field(default=5, ge=1)
    # How long an open breaker fails fast before one probe read is let through.
    breaker_cooldown_s: float = Field(default=5.0, gt=0)
    # Largest entity list one request may carry.
    max_entities: int = Field(default=1000, ge=1)
    # Largest feature list one request may carry.
    max_features: int = Field(default=200, ge=1)
    # Largest HTTP request body, in bytes.
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Where spans go: printed to stdout, an OTLP/HTTP collector, or nowhere.
    trace_exporter: Literal["console", "otlp", "none"] = "console"
    # OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces (only with trace_exporter=otlp).
    otlp_endpoint: str | None = None
