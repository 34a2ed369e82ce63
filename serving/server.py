"""The HTTP face of the online store, for callers that are not Python.

``POST /features`` takes ``{"features": ["user_stats:clicks_7d"], "entities":
[{"user_id": "u1"}], "as_of": null}`` and answers one result per entity, in
order, each feature with its value, status and window end. Requests are
validated strictly: an unknown field, a join key that is not a string or an
unknown feature is a 422 with the reason; more entities than
``PARITY_SERVING_MAX_ENTITIES`` or a body larger than
``PARITY_SERVING_MAX_BODY_BYTES`` is a 413. ``GET /metrics`` is Prometheus'
text format; ``GET /healthz`` is 200 while Redis answers and 503 when not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr

from parity.errors import ReadError
from serving.config import ServingConfig
from serving.online import OnlineStore


class FeaturesRequest(BaseModel):
    """Strict: unknown fields and non-string join keys are refused, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    features: list[StrictStr] = Field(min_length=1, description="<view>:<feature> names")
    entities: list[dict[StrictStr, StrictStr]] = Field(
        min_length=1, description="one object per entity: join key → value"
    )
    # JSON has no datetime type: the one field parsed from a string, and it must carry a zone.
    as_of: AwareDatetime | None = Field(
        default=None,
        strict=False,
        description="the time the values describe (ISO-8601 with zone); now by default",
    )


class FeatureOut(BaseModel):
    value: float | int
    status: str
    window_end: datetime


class EntityResult(BaseModel):
    entity: dict[str, str]
    features: dict[str, FeatureOut]


class FeaturesResponse(BaseModel):
    results: list[EntityResult]


def create_app(store: OnlineStore, cfg: ServingConfig) -> FastAPI:
    """The ASGI app over one open store. The caller closes the store."""
    app = FastAPI(title="parity features", version="1", docs_url=None, redoc_url=None)
    metrics_registry = store.metrics.registry

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            return JSONResponse(
                {"detail": f"request body of {length} bytes exceeds the limit of {cfg.max_body_bytes}"},
                status_code=413,
            )
        return await call_next(request)

    @app.post("/features")
    def features(request: FeaturesRequest) -> Any:
        if len(request.entities) > cfg.max_entities:
            return JSONResponse(
                {
                    "detail": f"{len(request.entities)} entities in one request; the limit is "
                    f"{cfg.max_entities}: split the request"
                },
                status_code=413,
            )
        if len(request.features) > cfg.max_features:
            return JSONResponse(
                {
                    "detail": f"{len(request.features)} features in one request; the limit is "
                    f"{cfg.max_features}"
                },
                status_code=413,
            )
        try:
            rows = store.get_online_features(request.features, request.entities, as_of=request.as_of)
        except ReadError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return FeaturesResponse(
            results=[
                EntityResult(
                    entity=entity,
                    features={
                        name: FeatureOut(value=v.value, status=v.status.value, window_end=v.window_end)
                        for name, v in row.items()
                    },
                )
                for entity, row in zip(request.entities, rows, strict=True)
            ]
        )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok = store.ping()
        body = {"status": "ok" if ok else "degraded", "redis": ok, "circuit": store.breaker_state.value}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
