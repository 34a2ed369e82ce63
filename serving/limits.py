"""Limits that keep one caller from taking the feature server from everyone else.

Two ASGI middleware layers, outermost first, and a budget the endpoint keeps:

1. ``BodyLimit`` reads the request body itself, counting bytes as they
   arrive, and answers 413 as soon as the count passes the limit: a chunked
   body (no Content-Length) is refused as promptly as a declared one and is
   never held beyond the limit. The app then reads the body from memory, so a
   slow upload holds a connection, never a read slot.
2. ``Admission`` runs at most ``limit`` requests to one path at once and
   answers the next one 429 with ``Retry-After`` at once, never queueing it.
   An admitted request has ``timeout_s`` to answer; past that the caller gets
   504 while the work finishes in the background, still holding its slot, so
   the limit bounds the work actually running, not only the answers pending.
3. ``Budget`` counts the entities being read, across requests. Requests are
   not alike: one of a thousand entities as of a past time merges each
   entity's tiles inside Redis, a tenth of a second of Redis that every other
   read waits behind, and a few at once outlast one Redis call's timeout, so
   every caller gets defaults. The budget keeps those few to one while small
   reads still get in.

The middleware's refusals carry ``{"detail": ...}`` like the app's own, and
each is reported to ``rejected`` with its reason, for the metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# What a refused caller should wait before trying again, in seconds.
RETRY_AFTER_S = 1


async def refuse(send: Send, status: int, detail: str, *, close: bool = False, retry: bool = False) -> None:
    """Answer ``{"detail": detail}`` with ``status``.

    ``close`` ends the connection after the answer, so the server stops
    reading a body it refused; ``retry`` adds ``Retry-After``.
    """
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if retry:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over ``limit`` bytes, counted as read, however it is sent."""

    def __init__(self, app: ASGIApp, *, limit: int, rejected: Callable[[str], None]) -> None:
        self.app = app
        self.limit = limit
        self.rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, f"request body of {declared} bytes exceeds the limit of {self.limit}")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the caller left: nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"request body exceeds the limit of {self.limit}")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body only http.disconnect comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, detail: str) -> None:
        self.rejected("body_too_large")
        await refuse(send, 413, f"{detail} bytes (PARITY_SERVING_MAX_BODY_BYTES)", close=True)


class Admission:
    """At most ``limit`` requests to ``path`` at once (429 beyond), each answered in ``timeout_s`` (504)."""

    def __init__(
        self, app: ASGIApp, *, path: str, limit: int, timeout_s: float, rejected: Callable[[str], None]
    ) -> None:
        self.app = app
        self.path = path
        self.limit = limit
        self.timeout_s = timeout_s
        self.rejected = rejected
        # Only the event loop's thread touches it: no lock.
        self.running = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if self.running >= self.limit:
            self.rejected("concurrency")
            await refuse(
                send,
                429,
                f"{self.running} requests are being served, the most PARITY_SERVING_MAX_CONCURRENT "
                f"allows: retry after {RETRY_AFTER_S} s",
                retry=True,
            )
            return
        self.running += 1
        started = False
        timed_out = False  # the caller has its 504: whatever the app sends later is dropped

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        def finished(work: asyncio.Future[None]) -> None:
            self.running -= 1
            if timed_out and not work.cancelled() and (exc := work.exception()) is not None:
                log.error("a feature request failed after it was answered 504", exc_info=exc)

        work = asyncio.ensure_future(self.app(scope, receive, send_unless_timed_out))
        work.add_done_callback(finished)
        try:
            await asyncio.wait({work}, timeout=self.timeout_s)
        except asyncio.CancelledError:
            work.cancel()
            raise
        if work.done() or started:
            await work  # its answer, or the error it raised
            return
        timed_out = True
        self.rejected("timeout")
        await refuse(
            send,
            504,
            f"no answer within {self.timeout_s} s (PARITY_SERVING_REQUEST_TIMEOUT_S): the server is "
            f"overloaded; retry after {RETRY_AFTER_S} s",
            retry=True,
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class Budget:
    """Units of work in flight, at most ``total``: taking more than is left fails at once.

    A request larger than the whole budget still runs, alone. Only the event
    loop's thread takes and gives: no lock.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, units: int) -> bool:
        if self.used and self.used + units > self.total:
            return False
        self.used += units
        return True

    def give(self, units: int) -> None:
        self.used -= units
