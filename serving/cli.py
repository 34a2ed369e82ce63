"""``python -m serving``: the HTTP feature server and the skew check.

    python -m serving serve [--host 127.0.0.1] [--port 8000]
    python -m serving skew user_stats [--sample 200] [--threshold 0.01] [--every 60s] [--at now]
                                      [--metrics-port 9464 | --textfile PATH] [--json]
    python -m serving skew user_stats --from-log [--log-topic T] [--max-records 10000]
                                      [--since ISO] [--threshold 0.01] [--json]

Every failure exits 1 with a one-line cause; the skew check exits 1 when the
share of differing entities is above the threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parity.errors import InputError, run_command

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``60s``, ``5m``, ``1h``, ``500ms`` or plain seconds → seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration such as 60s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _utc_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time such as 2026-01-01T00:00Z") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; write e.g. 2026-01-01T00:00Z")
    return when.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description="parity feature serving")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="HTTP server: POST /features, GET /metrics, GET /healthz",
        description="Serve online features over HTTP. Limits, timeouts and tracing come from "
        "PARITY_SERVING_*; Redis from PARITY_REDIS_*.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_cmd_serve)

    skew = sub.add_parser(
        "skew",
        help="compare what Redis serves with Iceberg, at the completeness watermark or at now",
        description="Sample entities of a view, read them online and offline at the same instant "
        "(the online completeness watermark, or now with --at now), print a summary with the "
        "largest difference per feature and export Prometheus gauges. Exits 1 when the share of "
        "entities that differ (or are missing on one side) is above --threshold.",
    )
    skew.add_argument("view", help="feature view name")
    skew.add_argument("--sample", type=int, default=200, help="entities to compare (default 200)")
    skew.add_argument("--threshold", type=float, default=0.0, help="largest acceptable skew ratio (0..1)")
    skew.add_argument("--seed", type=int, help="sampling seed (default: random)")
    skew.add_argument("--snapshot-id", type=int, help="Iceberg tiles snapshot to compare with")
    skew.add_argument(
        "--at",
        choices=("watermark", "now"),
        default="watermark",
        help="when to compare: the completeness watermark, a tile boundary both stores have "
        "committed (default); or now, heads included (online's live tiles against the raw "
        "archive; Iceberg may trail Redis by one checkpoint while events arrive)",
    )
    skew.add_argument("--every", type=parse_duration, help="run periodically, e.g. 60s; until Ctrl-C")
    skew.add_argument("--runs", type=int, default=0, help="with --every: stop after N runs (0: never)")
    target = skew.add_mutually_exclusive_group()
    target.add_argument("--metrics-port", type=int, help="serve the skew gauges on this port")
    target.add_argument("--textfile", type=Path, help="write the gauges here (node-exporter textfile)")
    skew.add_argument("--json", action="store_true", help="machine-readable summary")
    logged = skew.add_argument_group("served-feature log", "compare what reads served, as logged, instead")
    logged.add_argument("--from-log", action="store_true", help="compare logged reads with Iceberg")
    logged.add_argument("--log-topic", help="the log topic (default: PARITY_SERVING_LOG_TOPIC)")
    logged.add_argument("--max-records", type=int, default=10_000, help="records to compare (default 10000)")
    logged.add_argument("--since", type=_utc_time, help="only reads served at or after this ISO time")
    skew.set_defaults(func=_cmd_skew)
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from features.registry import load_views
    from serving.config import ServingConfig
    from serving.online import OnlineStore
    from serving.progress import OfflineProgress
    from serving.server import create_app
    from serving.telemetry import setup_tracing

    cfg = ServingConfig()
    views = load_views()
    feature_log = None
    if cfg.log_sample_rate > 0:
        from serving.feature_log import FeatureLogger

        # Before the server starts: a missing hash key stops it with the setting to fix.
        feature_log = FeatureLogger(views, cfg)
        log.info("logging %g of reads to Kafka topic %s", cfg.log_sample_rate, feature_log.topic)
    provider = setup_tracing(cfg)
    store = OnlineStore(
        views=views,
        serving=cfg,
        offline=OfflineProgress() if cfg.offline_check else None,
        feature_log=feature_log,
    )
    # uvicorn stops gracefully on SIGTERM, then raises it again; by default that ends the process
    # before the finally below, and the log's queued records and the last spans would be lost.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(create_app(store, cfg), host=args.host, port=args.port, log_config=None)
    finally:
        store.close()
        if feature_log is not None:
            feature_log.close()
        if provider is not None:
            provider.shutdown()
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # The status a shell gives a process SIGTERM ended, for whatever supervises the server.
    raise SystemExit(128 + signum)


def _cmd_skew(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile

    from features.registry import get_view
    from parity.config import IcebergConfig
    from serving.metrics import SkewMetrics
    from serving.offline import load_tiles
    from serving.online import OnlineStore
    from serving.skew import check_skew, export

    if not 0 <= args.threshold <= 1:
        raise InputError(f"--threshold {args.threshold} must be between 0 and 1")
    if args.from_log:
        return _cmd_log_skew(args)
    if args.sample < 1:
        raise InputError("--sample must be at least 1")
    view = get_view(args.view)
    registry = CollectorRegistry()
    metrics = SkewMetrics(registry)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
    store = OnlineStore(views={view.name: view})
    code = 0
    runs = 0
    try:
        while True:
            try:
                offline = load_tiles(IcebergConfig(), view, args.snapshot_id)
                report = check_skew(
                    view, store, offline, sample=args.sample, seed=args.seed, at_now=args.at == "now"
                )
            except Exception as exc:
                if args.every is None:
                    raise
                # A repeating check outlives a store's blip. The failed run exports nothing, so
                # the last-run gauge ages and FeatureSkewCheckNotRunning fires if it lasts.
                log.warning("the skew check of %s failed; next run in %g s: %s", view.name, args.every, exc)
                time.sleep(args.every)
                continue
            export(report, metrics, args.threshold)
            if args.textfile is not None:
                write_to_textfile(str(args.textfile), registry)
            examples = [f"{e['entity']}: {json.dumps(e['features'])}" for e in report.examples]
            code = _verdict(report.ratio, report.as_dict(), report.line(), examples, args)
            sys.stdout.flush()
            runs += 1
            if args.every is None or (args.runs and runs >= args.runs):
                return code
            time.sleep(args.every)
    finally:
        store.close()


def _cmd_log_skew(args: argparse.Namespace) -> int:
    from features.registry import get_view
    from parity.config import IcebergConfig
    from serving.config import ServingConfig
    from serving.log_skew import check_log_skew
    from serving.offline import load_tiles

    if args.every is not None or args.metrics_port is not None or args.textfile is not None:
        raise InputError(
            "--from-log runs once and exports no gauges: drop --every, --metrics-port, --textfile"
        )
    if args.max_records < 1:
        raise InputError("--max-records must be at least 1")
    view = get_view(args.view)
    cfg = ServingConfig()
    report = check_log_skew(
        view,
        load_tiles(IcebergConfig(), view, args.snapshot_id),
        topic=args.log_topic or cfg.log_topic,
        hash_key=cfg.log_hash_key,
        max_records=args.max_records,
        since=args.since,
    )
    examples = [
        f"trace {e['trace_id']} ({e['entity_key']}): {json.dumps(e['features'])}" for e in report.examples
    ]
    return _verdict(report.ratio, report.as_dict(), report.line(), examples, args)


def _verdict(
    ratio: float, summary: dict[str, Any], line: str, examples: list[str], args: argparse.Namespace
) -> int:
    """Print a skew report as --json asks; 1 when its ratio is above --threshold."""
    code = 1 if ratio > args.threshold else 0
    if args.json:
        print(json.dumps({**summary, "threshold": args.threshold, "ok": code == 0}))
    else:
        verdict = "ok" if code == 0 else f"above the threshold {args.threshold:.2%}"
        print(f"{line}: {verdict}")
        for example in examples:
            print(f"  {example}")
    return code


def main(argv: list[str] | None = None) -> int:
    from serving.telemetry import configure_logging

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    return run_command("parity", lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
