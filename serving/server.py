"""The HTTP face of the online store, for callers that are not Python.

``POST /features`` takes ``{"features": ["user_stats:clicks_7d"], "entities":
[{"user_id": "u1"}], "as_of": null}`` and answers one result per entity, in
order, each feature with its value, status and window end. ``GET /metrics`` is
Prometheus' text format; ``GET /healthz`` is 200 while Redis answers and 503
when not, names the circuit breaker's state, lists the views whose Redis
was lost (``lost_views``; status ``degraded``) until they are repaired, and
each view's head watermark (``head_watermarks``): the newest event time reads
at now reflect.

One caller cannot take reads from everyone else; each refusal names what to
change and is counted in ``feature_requests_rejected_total{reason}``:

- 422: an unknown field, a join key that is not a string, an unknown feature,
  or a join key or id that cannot be a Redis key (a lone surrogate, NUL, more
  than ``online.MAX_ID_BYTES`` bytes). All are refused before Redis is
  touched, so they never count toward the circuit breaker.
- 413: more entities than ``PARITY_SERVING_MAX_ENTITIES``, more features than
  ``PARITY_SERVING_MAX_FEATURES``, more entities x features than
  ``PARITY_SERVING_MAX_VALUES``, or a body over
  ``PARITY_SERVING_MAX_BODY_BYTES``, counted as it arrives, chunked or not.
- 429 with ``Retry-After``: ``PARITY_SERVING_MAX_CONCURRENT`` requests are
  already being served, or the request's entities (x views) would take the
  entities being read past ``PARITY_SERVING_MAX_ENTITIES_IN_FLIGHT``. A read
  as of a past time merges each entity's tiles inside Redis while every other
  read waits; without the budget a few of them at once outlast one Redis
  call's timeout, and every caller gets defaults. Refused at once, never
  queued.
- 504 with ``Retry-After``: no answer within
  ``PARITY_SERVING_REQUEST_TIMEOUT_S`` of admission. The read finishes in the
  background and holds its slot until then (``serving.limits``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictStr

from parity.errors import ReadError
from serving.assembly import from_ms
from serving.config import ServingConfig
from serving.limits import RETRY_AFTER_S, Admission, BodyLimit, Budget
from serving.online import OnlineStore, id_problem


def _usable_as_key(text: str) -> str:
    problem = id_problem(text)
    if problem is not None:
        raise ValueError(f"the text {problem}")
    return text


# Join keys and their values end up in Redis keys and in the answer: text UTF-8 can encode.
KeyText = Annotated[StrictStr, AfterValidator(_usable_as_key)]


class FeaturesRequest(BaseModel):
    """Strict: unknown fields and non-string join keys are refused, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    features: list[StrictStr] = Field(min_length=1, description="<view>:<feature> names")
    entities: list[dict[KeyText, KeyText]] = Field(
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
    rejected = store.metrics.rejected

    def reject(reason: str) -> None:
        rejected.labels(reason).inc()

    # Added innermost first: the body is read (and limited) before a request takes a slot.
    app.add_middleware(
        Admission,
        path="/features",
        limit=cfg.max_concurrent,
        timeout_s=cfg.request_timeout_s,
        rejected=reject,
    )
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, rejected=reject)
    # Reads run on threads of their own, as many as Admission lets in: never queued behind
    # /healthz or /metrics, never more than the limit.
    threads = anyio.CapacityLimiter(cfg.max_concurrent)
    in_flight = Budget(cfg.max_entities_in_flight)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reject("invalid")
        # The offending input is not echoed: it may be text JSON can carry but UTF-8 cannot.
        return JSONResponse({"detail": [_error(e) for e in exc.errors()]}, status_code=422)

    def too_large(detail: str) -> JSONResponse:
        reject("too_large")
        return JSONResponse({"detail": detail}, status_code=413)

    def answer(request: FeaturesRequest) -> Response:
        try:
            rows = store.get_online_features(request.features, request.entities, as_of=request.as_of)
        except ReadError as exc:
            reject("invalid")
            return JSONResponse({"detail": str(exc)}, status_code=422)
        body = FeaturesResponse(
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
        return Response(body.model_dump_json(), media_type="application/json")

    @app.post("/features")
    async def features(request: FeaturesRequest) -> Any:
        entities, features = len(request.entities), len(request.features)
        if entities > cfg.max_entities:
            return too_large(
                f"{entities} entities in one request; the limit is {cfg.max_entities}: split the request"
            )
        if features > cfg.max_features:
            return too_large(f"{features} features in one request; the limit is {cfg.max_features}")
        if entities * features > cfg.max_values:
            return too_large(
                f"{entities} entities x {features} features = {entities * features} values in one "
                f"request; the limit is {cfg.max_values} (PARITY_SERVING_MAX_VALUES): split the request"
            )
        # An entity costs Redis the same whichever features of its view are asked for.
        cost = entities * len({name.partition(":")[0] for name in request.features})
        if not in_flight.take(cost):
            reject("entities_in_flight")
            return JSONResponse(
                {
                    "detail": f"{in_flight.used} entities are being read and {cost} more would pass "
                    f"PARITY_SERVING_MAX_ENTITIES_IN_FLIGHT ({cfg.max_entities_in_flight}): retry after "
                    f"{RETRY_AFTER_S} s"
                },
                status_code=429,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            # Reading and rendering the answer hold the GIL for milliseconds: off the event loop.
            return await anyio.to_thread.run_sync(answer, request, limiter=threads)
        finally:
            in_flight.give(cost)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok = store.ping()
        # A lost view is answered with defaults (status error) until repaired: the server
        # still serves, so 200, but it says which views need `parity repair-online`.
        lost = store.lost_views() if ok else None
        status = "ok" if ok and not lost else "degraded"
        body = {
            "status": status,
            "redis": ok,
            "circuit": store.breaker_state.value,
            "lost_views": lost or [],
            "head_watermarks": _heads(store.head_watermarks() if ok else None),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _error(error: Any) -> dict[str, Any]:
    """One pydantic error as the answer shows it: where, what and why, in printable text."""
    message = error["msg"]
    reason = error.get("ctx", {}).get("error")
    if isinstance(reason, str):  # e.g. where the JSON does not parse
        message = f"{message}: {reason}"
    where = [_printable(part) for part in error["loc"]]
    return {"type": error["type"], "loc": where, "msg": _printable(message)}


def _printable(part: Any) -> Any:
    """Text with lone surrogates written as ``\\udxxx``: JSON answers are UTF-8."""
    return part.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(part, str) else part


def _heads(heads: dict[str, int | None] | None) -> dict[str, str | None]:
    """Each view's head watermark as ISO-8601 UTC: how fresh its reads at now are."""
    return {name: from_ms(ms).isoformat() if ms is not None else None for name, ms in (heads or {}).items()}
