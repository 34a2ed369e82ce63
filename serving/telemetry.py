"""Tracing setup for the read path, and the trace id in log lines.

Library code only asks for a tracer (``trace.get_tracer``); without a
configured provider its spans cost next to nothing and go nowhere. A process
that serves (``python -m serving serve``) calls ``setup_tracing`` once.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from parity.errors import ConfigError
from serving.config import ServingConfig

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s %(message)s"


def setup_tracing(cfg: ServingConfig, service_name: str = "parity-serving") -> TracerProvider | None:
    """Install the global tracer provider with the configured exporter; None for ``none``.

    Raises:
        ConfigError: ``otlp`` was chosen but its exporter package is not installed.
    """
    if cfg.trace_exporter == "none":
        return None
    exporter: SpanExporter
    if cfg.trace_exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "PARITY_SERVING_TRACE_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http; "
                "install it or choose console or none."
            ) from exc
        exporter = OTLPSpanExporter(endpoint=cfg.otlp_endpoint) if cfg.otlp_endpoint else OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or ``-`` outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"


class TraceIdFilter(logging.Filter):
    """Adds ``trace_id`` to every record, so log lines join up with their spans."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with the trace id on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
