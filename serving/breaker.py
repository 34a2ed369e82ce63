"""A circuit breaker, so a dead Redis costs callers nothing but the default.

Protocol:
1. **closed**: calls go through; each failure counts, each success resets the count.
2. After ``failures`` consecutive failures it **opens**: calls are refused at
   once, without touching the network, for ``cooldown_s``.
3. Then it is **half-open**: exactly one caller gets to probe. Success closes
   the breaker; failure opens it for another cool-down. Every other caller is
   refused while the probe is in flight, so a thundering herd never reaches a
   Redis that is still down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def allow(self) -> bool:
        """May this call go to the network? Call ``success``/``failure`` after it when True."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            self._state = BreakerState.CLOSED

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self._threshold:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
            self._probing = False

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self._state = BreakerState.HALF_OPEN
        return self._state
