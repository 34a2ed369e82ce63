"""python -m stack {fetch,up,down,status} [--only kafka,registry,redis,flink,...] [--json]

Without --only, a command acts on the default services. Optional services
(s3, iceberg-rest, registry-tls, redis-cluster) run only when named, and a plain
`down` leaves them running: `python -m stack up --only s3,iceberg-rest`, then
`python -m stack down --only s3,iceberg-rest`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parity.errors import StackError, run_command
from stack import flink, iceberg_rest, kafka, prometheus, redis, redis_cluster, registry, registry_tls, s3
from stack.config import StackConfig
from stack.fetch import fetch
from stack.status import Info


@dataclass(frozen=True)
class Service:
    name: str
    start: Callable[[StackConfig], None]
    stop: Callable[[StackConfig], None]
    is_up: Callable[[StackConfig], bool]
    info: Callable[[StackConfig], Info]


# Start order; stopped in reverse (Flink jobs and the registry's clients first).
SERVICES: tuple[Service, ...] = tuple(
    Service(m.NAME, m.start, m.stop, m.is_up, m.info) for m in (kafka, registry, redis, flink, prometheus)
)
# Run only when named with --only (the S3 server before the catalog that writes to it; the
# registry's TLS proxy in front of the default registry; a Redis Cluster beside the single Redis).
OPTIONAL: tuple[Service, ...] = tuple(
    Service(m.NAME, m.start, m.stop, m.is_up, m.info) for m in (s3, iceberg_rest, registry_tls, redis_cluster)
)
NAMES = tuple(s.name for s in SERVICES + OPTIONAL)
# Of the name column: the longest name and a space.
WIDTH = max(len(n) for n in NAMES) + 1


def selected(only: str | None) -> list[Service]:
    """The services --only names, in start order; the default ones without it."""
    if not only:
        return list(SERVICES)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)} in --only; choose from {', '.join(NAMES)}")
    return [s for s in SERVICES + OPTIONAL if s.name in wanted]


def line(info: Info, note: str = "") -> str:
    state = "up" if info.up else "DOWN"
    pid = str(info.pid) if info.pid else "-"
    return f"{info.name:<{WIDTH}}{state:<6}{info.address:<48}pid {pid:<8}log {info.log}{note}"


def up(cfg: StackConfig, services: list[Service]) -> None:
    fetch(cfg, [s.name for s in services])
    for service in services:
        began = time.monotonic()
        if service.is_up(cfg):
            note = "  (already up)"
        else:
            try:
                service.start(cfg)
            except StackError:
                # Leave nothing half-started that would hold the ports on the next try.
                with contextlib.suppress(StackError):
                    service.stop(cfg)
                raise
            note = f"  (started in {time.monotonic() - began:.1f} s)"
        print(line(service.info(cfg), note), flush=True)


def down(cfg: StackConfig, services: list[Service]) -> None:
    for service in reversed(services):
        service.stop(cfg)
        print(f"{service.name:<{WIDTH}}stopped", flush=True)


def status(cfg: StackConfig, services: list[Service], as_json: bool) -> int:
    infos = [s.info(cfg) for s in services]
    if as_json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
    else:
        for info in infos:
            print(line(info))
    return 0 if all(i.up for i in infos) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack", description="Run the local services without Docker."
    )
    parser.add_argument("command", choices=["fetch", "up", "down", "status"])
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of: {','.join(NAMES)} "
        f"(default: {','.join(s.name for s in SERVICES)}; the others run only when named)",
    )
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    return run_command("parity stack", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    cfg = StackConfig()
    services = selected(args.only)
    if args.command == "fetch":
        fetch(cfg, [s.name for s in services])
    elif args.command == "up":
        up(cfg, services)
    elif args.command == "down":
        down(cfg, services)
    else:
        return status(cfg, services, args.json)
    return 0
