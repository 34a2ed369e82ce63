"""Retrying Redis writes through a short outage: what is retried, how long, and what is raised."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import pytest
import redis

from parity.config import RedisConfig
from parity.errors import SinkError
from sinks.retry import Backoff, is_transient, retrying


class _Clock:
    """Time that moves only when the code under test sleeps or a write takes time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _failing(times: int, error: Exception, clock: _Clock, takes_s: float = 0.0) -> Callable[[], str]:
    calls = {"n": 0}

    def write() -> str:
        calls["n"] += 1
        clock.now += takes_s
        if calls["n"] <= times:
            raise error
        return "done"

    return write


def _wrapped(exc: redis.RedisError) -> SinkError:
    """As RedisTileSink raises it: the library error wrapped in the project's own."""
    try:
        raise SinkError("Redis did not take the tiles") from exc
    except SinkError as wrapped:
        return wrapped


def test_delays_double_from_first_up_to_max():
    assert list(islice(Backoff().delays(), 7)) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


@pytest.mark.parametrize(
    "error",
    [redis.TimeoutError("Timeout reading from socket"), redis.ConnectionError("Connection refused")],
)
def test_a_blip_is_ridden_out_and_each_retry_counted(error):
    clock, retries = _Clock(), []
    write = _failing(4, _wrapped(error), clock, takes_s=0.5)
    result = retrying(
        write,
        Backoff(),
        what="t",
        on_retry=lambda: retries.append(1),
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert result == "done"
    assert clock.slept == [0.1, 0.2, 0.4, 0.8]
    assert len(retries) == 4


def test_the_budget_bounds_the_whole_outage_then_the_last_error_is_raised():
    clock = _Clock()
    error = _wrapped(redis.TimeoutError("Timeout reading from socket"))
    write = _failing(10_000, error, clock, takes_s=0.5)
    with pytest.raises(SinkError) as raised:
        retrying(write, Backoff(budget_s=30), what="t", sleep=clock.sleep, clock=lambda: clock.now)
    assert raised.value is error
    # The budget counts from the first failure, attempts included; no wait outlasts it.
    assert 28 <= clock.now - 0.5 <= 30 + 0.5
    assert max(clock.slept) == 2.0


def test_a_script_error_is_not_retried():
    clock = _Clock()
    error = _wrapped(redis.ResponseError("ERR Error running script"))
    with pytest.raises(SinkError):
        retrying(_failing(1, error, clock), Backoff(), what="t", sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.slept == []


def test_a_zero_budget_fails_on_the_first_error():
    clock = _Clock()
    error = _wrapped(redis.ConnectionError("Connection refused"))
    with pytest.raises(SinkError):
        retrying(
            _failing(1, error, clock),
            Backoff(budget_s=0),
            what="t",
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert clock.slept == []


def test_transient_means_unreachable_or_slow_whether_wrapped_or_not():
    assert is_transient(redis.TimeoutError())
    assert is_transient(redis.ConnectionError())
    assert is_transient(_wrapped(redis.ConnectionError()))
    assert not is_transient(_wrapped(redis.ResponseError()))
    assert not is_transient(SinkError("RedisTileSink used before open()"))
    assert not is_transient(ValueError())


def test_a_refused_login_is_not_retried():
    assert issubclass(redis.AuthenticationError, redis.ConnectionError)  # why it needs its own rule
    assert not is_transient(redis.AuthenticationError())
    assert not is_transient(_wrapped(redis.AuthenticationError()))


def test_backoff_refuses_nonsense():
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s=0)
    with pytest.raises(ValueError, match="max_s"):
        Backoff(first_s=3, max_s=2)


def test_the_budget_is_a_redis_setting(monkeypatch):
    assert RedisConfig().write_retry_s == 30.0
    monkeypatch.setenv("PARITY_REDIS_WRITE_RETRY_S", "5")
    assert RedisConfig().write_retry_s == 5.0
