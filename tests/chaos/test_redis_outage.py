"""A Redis that answers slowly, or not at all, while the job runs: the job rides it out.

The job reaches Redis through a TCP proxy in this process, which can delay
every reply past the socket timeout or drop every connection. Events flow
during the fault, so tiles close and completeness advances while Redis is
unusable. Afterwards both stores equal the reference. A fault shorter than the
sink's retry budget leaves the job running (Flink's restart count for it is 0)
with its sink having retried; a longer one restarts it from its checkpoint.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import RedisConfig
from serving.online import OnlineStore
from tests.chaos.test_continuity import START, _check_stores, _events, _send
from tests.integration import reference
from tests.integration.conftest import Isolated, local_job_metric, wait_for

pytestmark = pytest.mark.integration


class _Proxy:
    """Forwards TCP connections to Redis; can delay every reply, or drop every connection."""

    def __init__(self, host: str, port: int) -> None:
        self.delay_s = 0.0
        # Requests the job sent while the fault was on (connections refused, or commands
        # whose replies were held back): proof that the fault reached the job.
        self.faulted_requests = 0
        self._down = False
        self._target = (host, port)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every open connection, and every new one, until ``restore``."""
        self._down = True
        self._drop_all()

    def restore(self) -> None:
        self._down = False
        self.delay_s = 0.0

    def faulty(self) -> bool:
        return self._down or bool(self.delay_s)

    def close(self) -> None:
        self._server.close()
        self._drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if self._down:
                self.faulted_requests += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if not replies and self.faulty():
                    self.faulted_requests += 1
                if replies and self.delay_s:
                    time.sleep(self.delay_s)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _drop(source)
            _drop(sink)

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            _drop(s)


def _drop(s: socket.socket) -> None:
    # shutdown, not just close: it wakes the thread blocked in recv on it.
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    cfg = RedisConfig()
    p = _Proxy(cfg.host, cfg.port)
    yield p
    p.close()


@pytest.mark.parametrize(
    ("fault", "seconds"),
    [("slow", 10), ("down", 20), ("down", 60)],
    ids=[
        "replies-slower-than-the-socket-timeout",
        "connections-dropped-within-the-retry-budget",
        "connections-dropped-past-the-retry-budget",
    ],
)
def test_the_job_rides_out_a_redis_fault(isolated, proxy, fault, seconds):
    """Within the sink's retry budget the job does not restart; past it, it restarts from its
    checkpoint (as often as the outage lasts) and catches up. Either way nothing is lost."""
    restarts_expected = seconds > RedisConfig().write_retry_s
    events = _events(11, START, 30, 3000)
    half, tail = len(events) // 2, len(events) * 9 // 10
    _send(events[:half], isolated.topic)
    cmd = jobctl.stream_command(
        "user_stats",
        bounded=False,
        drain=True,
        group_id=f"it-{isolated.suffix}-user_stats",
        topic=isolated.topic,
    )
    job = jobctl.start_local(cmd, isolated.log, env=isolated.env() | {"PARITY_REDIS_PORT": str(proxy.port)})
    isolated.jobs.append(job)
    job_id = wait_for(lambda: _job_id(isolated), timeout=300, what="the job to start")
    wait_for(lambda: _completeness(isolated), timeout=300, what="the first completeness in Redis")

    # The rest of the events arrive while Redis is unusable: tiles close, completeness advances.
    if fault == "slow":
        proxy.delay_s = 2 * RedisConfig().socket_timeout_s
    else:
        proxy.cut()
    _send(events[half:tail], isolated.topic)
    time.sleep(seconds)
    # A busy machine may reach the new events late: hold the fault until the job has
    # retried through it (a second request during the fault is a retry of the first).
    wait_for(lambda: proxy.faulted_requests >= 2, timeout=180, what="the job to write during the fault")
    proxy.restore()
    assert job.poll() is None, f"the job exited during the fault:\n{isolated.log_tail()}"
    # Events go on arriving, in every partition. A restarted job's source starts each
    # partition's watermark afresh, and one with no new event holds the view's
    # completeness (see the README's "Not yet covered").
    _send(events[tail:], isolated.topic)

    last_event = max(reference.ms(e["event_time"]) for e in events)
    target = last_event - last_event % reference.HOUR_MS - reference.HOUR_MS
    wait_for(
        lambda: (_completeness(isolated) or 0) >= target,
        timeout=300,
        what="the job to catch up",
        detail=isolated.log_tail,
    )
    restarts = local_job_metric("flink_jobmanager_job_numRestarts", job_id)
    if restarts_expected:
        assert restarts and restarts >= 1, f"the job never restarted:\n{isolated.log_tail()}"
    else:
        assert _sink_retries(job_id) >= 1
        assert restarts == 0, isolated.log_tail()
    job.send_signal(signal.SIGTERM)  # reads to the topic's end, then stops with a savepoint
    isolated.wait(job, timeout=180)
    _check_stores(isolated, events)


def _sink_retries(job_id: str) -> float:
    """The Redis sink's retried writes, once the job's metrics show any."""
    # Metrics reach the reporter when it is next scraped, so after the fault and not at once.
    return wait_for(
        lambda: local_job_metric(
            "flink_taskmanager_job_task_operator_parity_view_redis_write_retries", job_id
        ),
        timeout=60,
        what="the sink's retries to show in the job's metrics",
    )


def _job_id(iso: Isolated) -> str | None:
    found = re.search(r"^parity: job ([0-9a-f]{32}) running", iso.log.read_text(errors="replace"), re.M)
    return found.group(1) if found else None


def _completeness(iso: Isolated) -> int | None:
    store = OnlineStore(iso.redis)  # Redis itself, not the proxy
    try:
        return store.completeness(user_stats)
    finally:
        store.close()
