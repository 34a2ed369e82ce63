"""Producer tuning, read from PARITY_PRODUCER_* variables.

Where Kafka and the registry live stays in ``KafkaConfig`` and
``RegistryConfig``; this model only holds how the producer behaves.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProducerConfig(BaseSettings):
    """How events are batched, delivered and awaited."""

    model_config = SettingsConfigDict(env_prefix="PARITY_PRODUCER_", extra="forbid", frozen=True)

    # A short linger fills batches without making a small run feel slow.
    linger_ms: int = Field(default=20, ge=0)
    compression_type: str = "lz4"
    # A delivery that has not succeeded by then is reported as failed rather than retried forever.
    message_timeout_s: float = Field(default=30.0, gt=0)
    flush_timeout_s: float = Field(default=60.0, gt=0)
    # Bounds the broker reachability check done before anything is produced.
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Roughly how often a long run reports progress.
    progress_interval_s: float = Field(default=1.0, gt=0)
