"""``parity produce``: send ad events from a JSON-lines file or the generator to Kafka."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from parity.config import KafkaConfig, RegistryConfig
from parity.errors import InputError, run_command
from producer.config import ProducerConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import (
    DEFAULT_SCHEMA,
    ProduceSummary,
    ProgressCallback,
    produce_events,
    read_jsonl,
    resolve_schema,
    subject_for,
)
from producer.records import parse_timestamp, write_jsonl

_EPILOG = """\
examples:
  # 20,000 events of 200 users over 10 days, 5% of them late by up to 4 minutes
  parity produce --generate

  # a bigger, reproducible run starting on a given day
  parity produce --generate --users 1000 --events 500000 --days 14 --seed 7 --start 2026-02-01T00:00Z

  # write the generated events to a file only, then send that file
  parity produce --generate --seed 3 --write-jsonl events.jsonl --dry-run
  parity produce --file events.jsonl --topic ad-events

  # check a file against schema version 1 without connecting to anything
  parity produce --file events.jsonl --schema-version 1 --dry-run --json

JSON lines: one object per line with every field of schemas/ad_event; event_time
is an ISO-8601 string with a timezone (2026-01-01T00:00:00.250Z) or epoch millis.
Every line is checked, and encoded once, before anything is sent.

Kafka and the registry come from PARITY_KAFKA_BOOTSTRAP_SERVERS and
PARITY_REGISTRY_URL; producer tuning from PARITY_PRODUCER_* (e.g.
PARITY_PRODUCER_LINGER_MS). Exit status 1 if anything failed.
"""

_GENERATOR_FLAGS = ("users", "events", "days", "seed", "out_of_order", "start")


def build_parser(prog: str = "parity produce") -> argparse.ArgumentParser:
    """The argument parser of ``parity produce``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Produce ad events to Kafka as Confluent-framed Avro, keyed by user_id.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--topic", default="ad-events", help="target topic (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, metavar="PATH", help="a JSON-lines file of events")
    source.add_argument("--generate", action="store_true", help="generate synthetic events")

    gen = parser.add_argument_group("generator (with --generate)")
    defaults = GeneratorConfig()
    gen.add_argument("--users", type=int, metavar="N", help=f"distinct users (default: {defaults.users})")
    gen.add_argument("--events", type=int, metavar="N", help=f"events in total (default: {defaults.events})")
    gen.add_argument(
        "--days", type=float, metavar="N", help=f"time span in days (default: {defaults.span.days})"
    )
    gen.add_argument("--seed", type=int, metavar="S", help=f"random seed (default: {defaults.seed})")
    gen.add_argument(
        "--out-of-order",
        type=float,
        metavar="SHARE",
        help=f"share of events delivered late, 0..1 (default: {defaults.out_of_order_share})",
    )
    gen.add_argument(
        "--start",
        metavar="ISO",
        help=f"first event time, with timezone (default: {defaults.start.isoformat()})",
    )
    gen.add_argument(
        "--write-jsonl",
        type=Path,
        metavar="PATH",
        help="also write the generated events to PATH; with --dry-run, only write them",
    )

    parser.add_argument(
        "--schema-version",
        type=int,
        metavar="N",
        help=f"write with schemas/{DEFAULT_SCHEMA}/vN.avsc (default: the latest)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and report, but connect to nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``parity produce``; returns the exit status.

    Raises:
        SystemExit: on ``--help`` or unusable arguments (argparse's own exit).
    """
    args = build_parser().parse_args(argv)
    return run_command("parity produce", lambda: _run(args, sys.stdout, sys.stderr))


@dataclass(frozen=True)
class _Plan:
    events: list[dict[str, Any]]
    schema_version: int
    topic: str

    def describe(self) -> dict[str, Any]:
        times = [e["event_time"] for e in self.events]
        return {
            "topic": self.topic,
            "subject": subject_for(self.topic),
            "schema": DEFAULT_SCHEMA,
            "schema_version": self.schema_version,
            "events": len(self.events),
            "users": len({e["user_id"] for e in self.events}),
            "first_event_time": min(times).isoformat() if times else None,
            "last_event_time": max(times).isoformat() if times else None,
        }


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    schema = resolve_schema(DEFAULT_SCHEMA, args.schema_version)
    if args.generate:
        events = generate(_generator_config(args))
        if args.write_jsonl is not None:
            count = write_jsonl(events, args.write_jsonl)
            print(f"wrote {count} events to {args.write_jsonl}", file=err)
    else:
        given = [
            f"--{name.replace('_', '-')}"
            for name in (*_GENERATOR_FLAGS, "write_jsonl")
            if getattr(args, name) is not None
        ]
        if given:
            raise InputError(f"{', '.join(given)}: generator options, used only with --generate, not --file.")
        events = read_jsonl(args.file, schema)
    plan = _Plan(events, schema.version, args.topic)

    if args.dry_run:
        report = {"dry_run": True, **plan.describe()}
        if args.json:
            print(json.dumps(report), file=out)
        else:
            print(
                f"dry run: would send {report['events']} events of {report['users']} users to "
                f"{report['topic']} (subject {report['subject']}, {DEFAULT_SCHEMA} v{schema.version}), "
                f"event times {report['first_event_time']} .. {report['last_event_time']}",
                file=out,
            )
        return 0

    summary = produce_events(
        events,
        args.topic,
        KafkaConfig(),
        RegistryConfig(),
        schema.version,
        tuning=ProducerConfig(),
        on_progress=_progress_printer(err),
    )
    if args.json:
        print(json.dumps({**plan.describe(), **_summary_dict(summary)}), file=out)
    else:
        print(summary.line(), file=out)
    if summary.failed:
        print(
            f"error: {summary.failed} of {len(events)} events failed: {'; '.join(summary.errors)}", file=err
        )
        return 1
    return 0


def _generator_config(args: argparse.Namespace) -> GeneratorConfig:
    overrides: dict[str, Any] = {}
    for flag, name in (("users", "users"), ("events", "events"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            overrides[name] = getattr(args, flag)
    if args.days is not None:
        if args.days <= 0:
            raise InputError(f"--days must be positive, got {args.days}.")
        overrides["span"] = timedelta(days=args.days)
    if args.out_of_order is not None:
        overrides["out_of_order_share"] = args.out_of_order
    if args.start is not None:
        try:
            overrides["start"] = parse_timestamp(args.start)
        except InputError as exc:
            raise InputError(f"--start: {exc}") from None
    return GeneratorConfig(**overrides)


def _summary_dict(summary: ProduceSummary) -> dict[str, Any]:
    return {
        "sent": summary.sent,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 3),
        "events_per_s": round(summary.events_per_s, 1),
        "errors": summary.errors,
    }


def _progress_printer(err: TextIO) -> ProgressCallback:
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        print(f"  {done}/{total} produced, {done / elapsed:.0f} events/s", file=err, flush=True)

    return report


if __name__ == "__main__":
    raise SystemExit(main())
