"""Settings of the read path, from PARITY_SERVING_* variables.

Redis and Iceberg keep their own settings (``RedisConfig``, ``IcebergConfig``);
these are the read path's own: how long a read may take, when the circuit
breaker opens, how large a request may be, how many may run at once and for
how long, where traces go, and which reads are logged (``serving.feature_log``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
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
    # Largest entities x features of one request: what one answer may cost to build and send.
    max_values: int = Field(default=20_000, ge=1)
    # Largest HTTP request body, in bytes, however it is sent (Content-Length or chunked).
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Feature requests served at once; one more is answered 429 at once, never queued. Reads
    # hold the GIL while they decode and assemble, so on two cores more only adds latency.
    max_concurrent: int = Field(default=32, ge=1)
    # Entities (x views) being read at once, over all requests; past it a request is answered 429
    # (one larger than this runs alone). A request's merges (a past as_of) run back to back in
    # Redis, ~0.15 ms an entity with eight days of hourly tiles, and other reads wait behind
    # them: 1500 let one request of max_entities merge at a time (~0.15 s) beside small reads.
    max_entities_in_flight: int = Field(default=1500, ge=1)
    # Longest a feature request may take from admission to answer; then it is answered 504.
    request_timeout_s: float = Field(default=1.0, gt=0, le=60)
    # Ask Iceberg (metadata only, at most once per view every 30 s) whether a view whose
    # Redis has no epoch key was ever written: a Redis lost before the server started then
    # reads status error, not missing (serving.progress). Off for a server with no catalog.
    offline_check: bool = True
    # Where spans go: printed to stdout, an OTLP/HTTP collector, or nowhere.
    trace_exporter: Literal["console", "otlp", "none"] = "console"
    # OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces (only with trace_exporter=otlp).
    otlp_endpoint: str | None = None
    # Share of online reads whose served values are logged to Kafka (serving.feature_log);
    # 0 turns the log off, and a read then does no logging work at all.
    log_sample_rate: float = Field(default=0.0, ge=0, le=1)
    # Topic of the served-feature log; its values go under the subject <topic>-value.
    log_topic: str = Field(default="parity.served-features", min_length=1)
    # Sampled reads waiting for the log's thread; one more is dropped and counted, never waited for.
    log_queue_size: int = Field(default=1000, ge=1)
    # Key of the HMAC-SHA256 that hashes entity ids of views whose entity has log_key="hash".
    # Required, at least 16 characters, as soon as such a view is logged; keep it secret and
    # stable: records of one entity join up only under the same key.
    log_hash_key: SecretStr | None = None
    # How long closing the log may take to send what it still holds; the rest is dropped and counted.
    log_close_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _request_outlasts_a_redis_call(self) -> ServingConfig:
        # A read answers defaults within timeout_s when Redis is slow; a request timeout below
        # it would turn every slow Redis call into a 504 instead.
        if self.request_timeout_s <= self.timeout_s:
            raise ValueError(
                f"PARITY_SERVING_REQUEST_TIMEOUT_S ({self.request_timeout_s}) must exceed "
                f"PARITY_SERVING_TIMEOUT_S ({self.timeout_s})"
            )
        return self
