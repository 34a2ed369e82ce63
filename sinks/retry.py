"""Riding out a short Redis outage: retry a whole write with bounded exponential backoff.

Retrying a whole batch is safe only for idempotent writes; each caller says
why its write is one. Only errors that say Redis could not be reached or did
not answer in time are retried: a script error (``redis.ResponseError``) would
fail the same way again. Once the budget is spent the last error is raised,
and the job fails and restarts from its checkpoint as it would without retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: ``first_s``, doubling up to ``max_s``, while ``budget_s`` lasts.

    The budget counts from the first failure and includes the attempts
    themselves (each may take up to the socket timeout); 0 turns retries off.
    """

    budget_s: float = 30.0
    first_s: float = 0.1
    max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.budget_s < 0 or self.first_s <= 0 or self.max_s < self.first_s:
            raise ValueError(
                f"Backoff needs budget_s >= 0 and 0 < first_s <= max_s, got {self.budget_s}, "
                f"{self.first_s}, {self.max_s}"
            )

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


def is_transient(exc: BaseException) -> bool:
    """Redis was unreachable or slow, for this error or the library error it wraps.

    A refused login is a ``ConnectionError`` to redis-py, but waiting will not fix
    credentials: it fails at once, naming them.
    """
    transient = (redis.ConnectionError, redis.TimeoutError)
    for error in (exc, exc.__cause__):
        if isinstance(error, redis.AuthenticationError):
            return False
        if isinstance(error, transient):
            return True
    return False


def retrying(
    write: Callable[[], T],
    backoff: Backoff,
    *,
    what: str,
    on_retry: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``write`` until it succeeds, retrying transient failures within ``backoff``.

    Args:
        what: names the write in log lines.
        on_retry: called before each retry (a metric).

    Raises:
        Exception: whatever ``write`` raised last, when it is not transient or
            the budget is spent.
    """
    delays = backoff.delays()
    began: float | None = None
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = clock()
            began = now if began is None else began
            delay = next(delays)
            if now + delay - began > backoff.budget_s:
                log.error("%s: giving up after %.1f s of retries: %s", what, now - began, exc)
                raise
            log.warning("%s: Redis unavailable (%s); retrying in %.1f s", what, exc, delay)
        on_retry()
        sleep(delay)
