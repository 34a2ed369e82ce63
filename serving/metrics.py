"""Prometheus metrics of the read path. Labels never carry entity ids.

Metrics live on a ``CollectorRegistry`` handed in by the caller, so a test (or
two stores in one process) never collides on the global registry; the process
default is created on first use, not at import.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Why the HTTP server answered a feature request with a refusal instead of values: the
# labels of feature_requests_rejected_total. ``concurrency`` and ``entities_in_flight`` are 429s
# and ``timeout`` a 504: the server's capacity, not the caller's request, decided those.
REJECTION_REASONS = ("invalid", "body_too_large", "too_large", "concurrency", "entities_in_flight", "timeout")

# Why served-feature records never reached Kafka: the labels of feature_log_dropped_total.
# queue_full: the log's queue was full when a read was sampled; registry: the schema registry
# failed or refused; kafka: Kafka refused a record or did not acknowledge it; serialize: a record
# did not fit the schema; closed: the log was closing, or closed before the record was sent.
LOG_DROP_REASONS = ("queue_full", "registry", "kafka", "serialize", "closed")

# Reads are sub-millisecond when healthy and bounded by the timeout when not.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """Latency, errors and defaults served, per source (``redis``, ``iceberg``); HTTP refusals; the
    served-feature log."""

    _default: ClassVar[ServingMetrics | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.latency = Histogram(
            "feature_fetch_latency_seconds",
            "Time to fetch features for one request, by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "feature_fetch_errors_total",
            "Fetches that failed and served defaults, by source and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.defaults = Counter(
            "feature_defaults_served_total",
            "Feature values served as their default, by view and reason (missing, stale, error, "
            "beyond_horizon).",
            ["view", "reason"],
            registry=registry,
        )
        self.entities = Counter(
            "feature_entities_read_total",
            "Entities read from the online store, by view.",
            ["view"],
            registry=registry,
        )
        self.merged = Counter(
            "feature_entities_merged_total",
            "Entities whose window values were merged from tiles at read time instead of read "
            "precomputed (a past as_of, or values waiting for the job's refresh), by view.",
            ["view"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "feature_fetch_circuit_open",
            "1 while the online store's circuit breaker fails reads fast, else 0.",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "feature_requests_rejected_total",
            "HTTP feature requests answered with a refusal instead of values, by reason (invalid: 422, "
            "body_too_large and too_large: 413, concurrency and entities_in_flight: 429, timeout: 504).",
            ["reason"],
            registry=registry,
        )
        self.log_records = Counter(
            "feature_log_records_total",
            "Served-feature records (one per entity and view of a sampled read) Kafka acknowledged.",
            registry=registry,
        )
        self.log_dropped = Counter(
            "feature_log_dropped_total",
            "Served-feature records that were not logged, by reason (queue_full, registry, kafka, "
            "serialize, closed).",
            ["reason"],
            registry=registry,
        )
        # Children exist from the start, so rates are defined before the first error.
        for source in ("redis", "iceberg"):
            self.latency.labels(source)
            self.errors.labels(source, "unavailable")
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        for reason in LOG_DROP_REASONS:
            self.log_dropped.labels(reason)
        self.breaker_open.labels("redis").set(0)

    @classmethod
    def default(cls) -> ServingMetrics:
        """The metrics on the process-wide registry, created once."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls(REGISTRY)
            return cls._default


class SkewMetrics:
    """Gauges of the last skew check of each view."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.entities = Gauge(
            "feature_skew_entities",
            "Entities of the last skew check, by outcome (sampled, equal, differing, "
            "missing_online, missing_offline).",
            ["view", "outcome"],
            registry=registry,
        )
        self.ratio = Gauge(
            "feature_skew_ratio",
            "Share of sampled entities whose online and offline values disagree.",
            ["view"],
            registry=registry,
        )
        self.threshold = Gauge(
            "feature_skew_threshold",
            "The ratio above which the skew check fails.",
            ["view"],
            registry=registry,
        )
        self.last_run = Gauge(
            "feature_skew_last_run_timestamp_seconds",
            "When the last skew check of the view finished (Unix time).",
            ["view"],
            registry=registry,
        )


class DriftMetrics:
    """Gauges of the last drift check of each view (``parity drift``; see ``serving.drift``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.score = Gauge(
            "feature_drift_score",
            "Population stability index of the feature's values in the current cohort against the "
            "reference cohort (0: same distribution; 0.2 or more: a significant shift).",
            ["view", "feature"],
            registry=registry,
        )
        self.detected = Gauge(
            "feature_drift_detected",
            "1 when the last drift check found the feature drifted (PSI at or above the threshold and a "
            "significant two-sample Kolmogorov-Smirnov test), else 0.",
            ["view", "feature"],
            registry=registry,
        )
        self.threshold = Gauge(
            "feature_drift_threshold",
            "The PSI at or above which the drift check flags a feature.",
            ["view"],
            registry=registry,
        )
        self.last_run = Gauge(
            "feature_drift_last_run_timestamp_seconds",
            "When the last drift check of the view finished (Unix time).",
            ["view"],
            registry=registry,
        )
