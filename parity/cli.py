"""The ``parity`` command: one entry point, one subcommand per noun.

Every failure exits 1 with a one-line cause; ``--json`` output is for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity.errors import InputError, run_command

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

EPILOG = """\
quick start:
  parity stack up                       start Kafka, the registry, Redis and Flink locally
  parity produce --generate --events 5000
  parity job run --view user_stats --bounded
  parity show --view user_stats         online and offline values side by side
  parity features user_stats:click_rate_7d --entity user_id=u000001
"""


# Subcommands owned by another module's ``main(argv)``: (module, leading argv, help).
_DELEGATED: dict[str, tuple[str, list[str], str]] = {
    "stack": ("stack.cli", [], "start, stop and inspect the local services (Kafka, registry, Redis, Flink)"),
    "produce": ("producer.cli", [], "send Avro events to Kafka from a JSON-lines file or the generator"),
    "schemas": ("schemas.cli", [], "check, register and compare the versioned Avro schemas under schemas/"),
    "serve": ("serving.cli", ["serve"], "HTTP feature server (POST /features, GET /metrics, GET /healthz)"),
    "skew": ("serving.cli", ["skew"], "compare what Redis serves with Iceberg for sampled entities"),
}


def _add_delegated(sub: _Subparsers) -> None:
    # Listed for --help only: main() hands these to their module before argparse runs.
    for name, (_, _, help_text) in _DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)


def _add_job(sub: _Subparsers) -> None:
    job = sub.add_parser("job", help="run the streaming feature job of a view")
    jobs = job.add_subparsers(dest="job_command", required=True)
    run = jobs.add_parser(
        "run",
        help="run locally (a Flink mini-cluster) in the foreground",
        description="Run a view's streaming job in a local Flink mini-cluster.\n"
        "Ctrl-C stops it with a savepoint.",
    )
    run.add_argument("--view", required=True, help="feature view name (see `parity views`)")
    run.add_argument(
        "--bounded",
        action="store_true",
        help="read to the topic's end as of the start, then stop with a savepoint "
        "(open tiles stay open; the next run continues them)",
    )
    run.add_argument(
        "--drain",
        action="store_true",
        help="on Ctrl-C, first read to the topic's end as of that moment, then stop with a savepoint",
    )
    _add_state_options(run)
    run.add_argument(
        "--parallelism", type=int, help="operator parallelism (default PARITY_FLINK_PARALLELISM)"
    )
    run.set_defaults(func=_cmd_job_run)

    submit = jobs.add_parser(
        "submit",
        help="submit to the standalone Flink cluster, detached",
        description="Submit a view's streaming job to the local standalone cluster (make up). "
        "It keeps running after this command returns; see `parity job list`.",
    )
    submit.add_argument("--view", required=True, help="feature view name (see `parity views`)")
    _add_state_options(submit)
    submit.add_argument("--parallelism", type=int)
    submit.set_defaults(func=_cmd_job_submit)

    listing = jobs.add_parser("list", help="jobs on the standalone cluster")
    listing.set_defaults(func=lambda args: _flink(["list"]))
    cancel = jobs.add_parser("cancel", help="cancel a job (no savepoint; its last checkpoint is retained)")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=lambda args: _flink(["cancel", args.job_id]))
    stop = jobs.add_parser(
        "stop",
        help="stop a job with a savepoint (never draining: open tiles stay in the savepoint)",
        description="Stop a job on the standalone cluster with a savepoint in the view's checkpoint "
        "folder; `parity job submit` resumes from it.",
    )
    stop.add_argument("--view", required=True, help="the job's feature view")
    stop.add_argument("job_id")
    stop.set_defaults(func=_cmd_job_stop)


def _add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from-checkpoint",
        type=Path,
        help="resume from this checkpoint or savepoint folder (default: the view's newest retained one)",
    )
    p.add_argument(
        "--without-state",
        action="store_true",
        help="start without state although the view has progress: events before its completeness "
        "count as late, and the periods whose state was lost are named with the replay that heals them",
    )


def _cmd_job_run(args: argparse.Namespace) -> int:
    from parity import jobctl

    cmd = jobctl.stream_command(
        args.view,
        bounded=args.bounded,
        drain=args.drain,
        from_checkpoint=args.from_checkpoint,
        without_state=args.without_state,
        parallelism=args.parallelism,
    )
    return jobctl.run_local(cmd, jobctl.job_log(args.view))


def _cmd_job_submit(args: argparse.Namespace) -> int:
    from parity import jobctl

    return jobctl.submit(
        args.view,
        from_checkpoint=args.from_checkpoint,
        without_state=args.without_state,
        parallelism=args.parallelism,
    )


def _cmd_job_stop(args: argparse.Namespace) -> int:
    from features.registry import get_view
    from parity.config import FlinkJobConfig

    view = get_view(args.view)
    savepoints = (FlinkJobConfig().checkpoint_dir / view.qualified_name / "savepoints").resolve().as_uri()
    return _flink(["stop", "--savepointPath", savepoints, args.job_id])


def _flink(args: list[str]) -> int:
    from parity import jobctl

    return jobctl.flink_cli(args)


def _add_views(sub: _Subparsers) -> None:
    p = sub.add_parser("views", help="list feature views, or show one's compiled SQL")
    p.add_argument("name", nargs="?", help="a view to show in full")
    p.add_argument("--sql", action="store_true", help="print the compiled Flink SQL of the view")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_views)


def _cmd_views(args: argparse.Namespace) -> int:
    from features.definition import duration_label
    from features.registry import get_view, load_views
    from jobs.compiler import compile_view

    views = [get_view(args.name)] if args.name else list(load_views().values())
    if args.sql and args.name:
        pipeline = compile_view(views[0])
        print(f"-- {pipeline.tiles_view}\n{pipeline.tile_query};\n\n-- progress\n{pipeline.progress_query};")
        return 0
    rows: list[dict[str, Any]] = [
        {
            "name": v.name,
            "version": v.version,
            "entity": v.entity.join_key,
            "topic": v.source.topic,
            "tile": duration_label(v.tile),
            "windows": [duration_label(w) for w in v.windows],
            "features": list(v.feature_names),
            "owner": v.owner,
        }
        for v in views
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['name']} v{row['version']}  entity={row['entity']}  topic={row['topic']}  "
                f"tile={row['tile']}  windows={','.join(row['windows'])}  owner={row['owner']}"
            )
            print(f"  features: {', '.join(row['features'])}")
    return 0


def _add_replay(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        help="recompute a time range of a view's offline tiles (backfill, late-data correction)",
        description="Run the view's compiled tile pipeline in Flink batch mode over [start, end) and\n"
        "replace exactly those tiles in the offline table, in one Iceberg commit.\n"
        "Redis is untouched unless --to-online.",
        epilog="example:\n"
        "  parity replay user_stats --start 2026-01-03T00:00Z --end 2026-01-04T00:00Z --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("view", help="feature view name (see `parity views`)")
    p.add_argument("--start", type=_parse_time, required=True, help="range start, ISO-8601, tile-aligned")
    p.add_argument(
        "--end", type=_parse_time, required=True, help="range end (excluded), ISO-8601, tile-aligned"
    )
    p.add_argument(
        "--source",
        choices=("iceberg", "kafka"),
        default="iceberg",
        help="the raw archive (default; outlives Kafka retention) or the topic itself",
    )
    p.add_argument("--dry-run", action="store_true", help="report rows to delete and add; write nothing")
    p.add_argument("--yes", action="store_true", help="replace without asking")
    p.add_argument(
        "--to-online", action="store_true", help="also set replayed tiles inside the online horizon"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from features.registry import get_view
    from replay.backfill import check_range, replay

    view = get_view(args.view)
    check_range(view, args.start, args.end)
    if not (args.dry_run or args.yes):
        if not sys.stdin.isatty():
            raise InputError("replay replaces offline tiles: pass --yes to confirm, or --dry-run to preview")
        answer = input(f"replace the tiles of {view.qualified_name} in [{args.start}, {args.end})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing replaced")
            return 1
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    summary = replay(
        view,
        args.start,
        args.end,
        source=args.source,
        dry_run=args.dry_run,
        to_online=args.to_online,
        say=say,
    )
    if args.json:
        print(json.dumps(asdict(summary), default=str, indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0


def _add_reset(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "reset",
        help="list, then remove, all of a view version's state (keys, tables, group, checkpoints)",
        description="Start a view version again from scratch. Lists, then removes: its Redis keys; its "
        "Iceberg tiles, progress and raw archive tables and any replay staging tables; its Kafka "
        "consumer group; its checkpoints and savepoints. Stop the view's job first. "
        "For production corrections use replay, which replaces a range.",
    )
    p.add_argument("--view", required=True, help="feature view name (see `parity views`)")
    p.add_argument(
        "--topic",
        action="store_true",
        help="also delete the view's source topic and every event in it; the topic is shared, "
        "so this empties it for every view that reads it",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--yes", action="store_true", help="remove without asking after the list")
    p.set_defaults(func=_cmd_reset)


def _cmd_reset(args: argparse.Namespace) -> int:
    from features.registry import get_view
    from parity.reset import ViewReset

    reset = ViewReset(get_view(args.view), topic=args.topic)
    state = reset.find()
    print("\n".join(state.lines()))
    if state.empty or args.dry_run:
        print("dry run: nothing removed" if args.dry_run else "nothing to remove")
        return 0
    if not args.yes:
        try:
            answer = input("remove all of the above? [y/N] ")
        except EOFError:  # no terminal to answer from
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    reset.remove(state)
    print("removed all of the above")
    return 0


def _add_repair(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "repair-online",
        help="rebuild a view's Redis from Iceberg after it was flushed, evicted or replaced",
        description="Rebuild the online store of a view version from Iceberg: the tiles inside the\n"
        "online horizon (longest window + prune margin before the offline completeness), set under\n"
        "the usual version guard; then the window values and the completeness watermark; then the\n"
        "view's epoch key, last. Until then reads of a lost Redis answer status `error`.\n"
        "Safe to re-run, and to run while the job writes. A job's start runs it by itself.",
        epilog="examples:\n"
        "  parity repair-online user_stats --dry-run   what would be rebuilt\n"
        "  parity repair-online user_stats",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("view", help="feature view name (see `parity views`)")
    p.add_argument("--dry-run", action="store_true", help="report what would be rebuilt; write nothing")
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait up to this long for Iceberg to commit up to the completeness the running job "
        "wrote to Redis since the loss (default 60)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_repair)


def _cmd_repair(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from features.registry import get_view
    from jobs.lineage import repair_run
    from parity.config import IcebergConfig, RedisConfig
    from sinks.repair import repair_online

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    view, iceberg_cfg, redis_cfg = get_view(args.view), IcebergConfig(), RedisConfig()
    with repair_run(view, iceberg_cfg, redis_cfg, dry_run=args.dry_run):
        summary = repair_online(view, iceberg_cfg, redis_cfg, dry_run=args.dry_run, wait_s=args.wait, say=say)
    print(json.dumps(asdict(summary), indent=2) if args.json else "\n".join(summary.lines()))
    return 0


def _add_features(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "features",
        help="read feature values online (Redis) or offline (Iceberg) and print JSON",
        description="Read features for entities. Values come with a status: present, missing "
        "(default served), stale, error, or beyond_horizon (default served: the window reaches "
        "before the tiles Redis keeps; read it with --offline).",
    )
    p.add_argument("features", nargs="+", help="<view>:<feature>, e.g. user_stats:click_rate_7d")
    p.add_argument(
        "--entity",
        action="append",
        required=True,
        help="join key and value, e.g. user_id=u000001 (repeatable)",
    )
    p.add_argument("--as-of", type=_parse_time, help="ISO-8601 time with zone (default: now)")
    p.add_argument("--offline", action="store_true", help="read the offline store (Iceberg) instead")
    p.set_defaults(func=_cmd_features)


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time, e.g. 2026-01-10T12:00:00Z"
        ) from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return value.astimezone(UTC)


def _cmd_features(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from parity.errors import InputError
    from serving.assembly import FeatureValue, Status
    from serving.offline import get_historical_features
    from serving.online import OnlineStore, entity_of, parse_refs

    rows = []
    for item in args.entity:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--entity {item!r} must be <join_key>=<value>, e.g. user_id=u000001")
        rows.append({key: value})
    when = args.as_of or datetime.now(UTC)
    if args.offline:
        from features.registry import load_views
        from parity.config import IcebergConfig

        refs = parse_refs(args.features, load_views())
        # The training-set read, so a time inside a tile takes the head from the raw archive.
        results: list[dict[str, FeatureValue]] = [{} for _ in rows]
        for ref in refs:
            keys = [entity_of(ref.view, row) for row in rows]
            frame = pa.table(
                {
                    ref.view.entity.join_key: pa.array(keys, pa.string()),
                    "event_timestamp": pa.array([when] * len(rows), pa.timestamp("us", tz="UTC")),
                }
            )
            table = get_historical_features(frame, [ref.qualified], cfg=IcebergConfig()).table
            ends = table.column(f"{ref.view.name}:window_end").to_pylist()
            for index, out in enumerate(results):
                status = Status(table.column(f"{ref.qualified}:status")[index].as_py())
                out[ref.qualified] = FeatureValue(
                    table.column(ref.qualified)[index].as_py(), status, ends[index]
                )
    else:
        from serving.config import ServingConfig
        from serving.progress import OfflineProgress

        # A one-off read never saw the epoch key: ask Iceberg, as `parity serve` does.
        check = OfflineProgress() if ServingConfig().offline_check else None
        store = OnlineStore(offline=check)
        try:
            results = store.get_online_features(args.features, rows, as_of=when)
        finally:
            store.close()
    payload = [
        {
            "entity": row,
            "features": {
                name: {"value": v.value, "status": v.status.value, "window_end": v.window_end.isoformat()}
                for name, v in result.items()
            },
        }
        for row, result in zip(rows, results, strict=True)
    ]
    print(json.dumps(payload, indent=2))
    if any(v.status is Status.BEYOND_HORIZON for result in results for v in result.values()):
        print(
            "beyond_horizon: Redis no longer holds the tiles these windows need; read them with --offline",
            file=sys.stderr,
        )
    return 0


def _add_show(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "show",
        help="a few entities' window features from Redis and from Iceberg, side by side",
        description="Reads the same entities from the online and the offline store as of the view's "
        "completeness watermark (its last complete tile) and prints them side by side.",
    )
    p.add_argument("--view", default="user_stats")
    p.add_argument("--limit", type=int, default=5, help="how many entities to show")
    p.add_argument("--as-of", type=_parse_time, help="default: the online completeness watermark")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from features.registry import get_view
    from parity.config import IcebergConfig
    from parity.errors import ReadError
    from serving.assembly import from_ms
    from serving.offline import load_tiles
    from serving.online import OnlineStore

    view = get_view(args.view)
    store = OnlineStore()
    try:
        head = (store.head_watermarks() or {}).get(view.name)
        completeness = store.completeness(view)
        if completeness is None and args.as_of is None:
            raise ReadError(
                f"Redis has no tiles of {view.qualified_name} yet; run `parity job run --view {view.name}`"
            )
        when = args.as_of or from_ms(completeness or 0)
        offline = load_tiles(IcebergConfig(), view)
        entities = sorted(offline.by_entity)[: args.limit]
        refs = [f"{view.name}:{f}" for f in view.feature_names if f.endswith("_7d")]
        online = store.get_online_features(refs, [{view.entity.join_key: e} for e in entities], as_of=when)
    finally:
        store.close()
    print(f"{view.qualified_name} as of {when.isoformat()} (Iceberg snapshot {offline.snapshot_id})")
    if head is not None:
        lag = max(0.0, time.time() - head / 1000)
        print(f"online reads at now reflect events up to {from_ms(head).isoformat()} ({lag:.1f} s ago)")
    elif view.freshness is not None:
        print("no live tile written yet: online reads at now are tile-aligned")
    width = max(len(ref.split(":", 1)[1]) for ref in refs) + 2
    header = f"{'entity':<12} {'feature':<{width}} {'online (Redis)':>18} {'offline (Iceberg)':>18}"
    print(header)
    print("-" * len(header))
    mismatches = 0
    for entity, values in zip(entities, online, strict=True):
        offline_values = offline.features(entity, when)
        for ref in refs:
            feature = ref.split(":", 1)[1]
            on, off = values[ref], offline_values[feature]
            same = on.value == off.value and on.status == off.status
            mismatches += not same
            print(
                f"{entity:<12} {feature:<{width}} {_fmt(on.value):>10} {on.status.value:<7} "
                f"{_fmt(off.value):>10} {off.status.value:<7}{'' if same else '  <- differs'}"
            )
    print(f"\n{len(entities)} entities, {len(entities) * len(refs)} values, {mismatches} differ")
    return 1 if mismatches else 0


def _fmt(value: float | int) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _add_drift(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "drift",
        help="each feature's distribution in the last day against the days before (PSI, KS test)",
        description="Compare each feature of a view between a current cohort (the last --current before\n"
        "--end) and a reference cohort (the --reference before it), read point-in-time from the\n"
        "offline store: every entity seen in a --step, as of that step's end. A feature drifted\n"
        "when its PSI is at least --threshold and a two-sample KS test rejects at 0.05\n"
        "(serving/drift.py says why). Exits 1 when a feature drifted.",
        epilog="examples:\n"
        "  parity drift user_stats                       the last day against the 7 before\n"
        "  parity drift user_stats --html drift.html     also an HTML report\n"
        "  parity drift user_stats --textfile /var/lib/node_exporter/textfile/parity_drift_user_stats.prom\n"
        "      gauges for node-exporter's textfile collector (run hourly; alert FeatureDriftSustained)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("view", help="feature view name (see `parity views`)")
    p.add_argument("--reference", default="7d", help="length of the reference cohort (default 7d)")
    p.add_argument("--current", default="1d", help="length of the current cohort (default 1d)")
    p.add_argument(
        "--step", default="1d", help="values are read at the end of every step of a cohort (default 1d)"
    )
    p.add_argument(
        "--end",
        type=_parse_time,
        help="end of the current cohort, ISO-8601 (default: the view's offline completeness watermark)",
    )
    p.add_argument(
        "--threshold", type=float, default=0.2, help="PSI at or above which a feature drifted (default 0.2)"
    )
    p.add_argument(
        "--snapshot-id", type=int, help="Iceberg tiles snapshot to read (default: the current one)"
    )
    p.add_argument("--html", type=Path, metavar="PATH", help="also write a self-contained HTML report here")
    p.add_argument(
        "--textfile",
        type=Path,
        metavar="PATH",
        help="also write the feature_drift_* gauges here, in Prometheus text format (node-exporter "
        "textfile collector: a *.prom file in its --collector.textfile.directory)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_drift)


def _cmd_drift(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, write_to_textfile

    from features.registry import get_view
    from parity.config import IcebergConfig
    from parity.errors import ConfigError
    from serving.metrics import DriftMetrics
    from serving.offline import load_tiles

    try:
        from serving.drift import DriftConfig, check_drift, export, render_html
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"parity drift needs the drift extra ({exc.name} is not installed): pip install -e '.[drift]'"
        ) from exc

    cfg = DriftConfig.of(
        reference=args.reference,
        current=args.current,
        step=args.step,
        end=args.end,
        psi_threshold=args.threshold,
    )
    view = get_view(args.view)
    report = check_drift(view, load_tiles(IcebergConfig(), view, args.snapshot_id), cfg)
    for note in report.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if args.html is not None:
        args.html.write_text(render_html(report), encoding="utf-8")
    if args.textfile is not None:
        registry = CollectorRegistry()
        export(report, DriftMetrics(registry))
        write_to_textfile(str(args.textfile), registry)
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 1 if report.drifted else 0


def _add_shadow(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "shadow",
        help="compare a candidate version of a view with the live one, online, entity by entity",
        description="Read the same entities from the live version of a view and from a candidate\n"
        "version (features/<view>_v<N>.py, whose job writes its own keys) in Redis, at the same\n"
        "instant, and count per feature the entities whose values or statuses differ. Each\n"
        "divergent read is logged with its trace id. Exits 1 when a feature's share of divergent\n"
        "entities is above --threshold (serving/shadow.py says more).",
        epilog="examples:\n"
        "  parity shadow user_stats --candidate 3                 200 entities of the live version\n"
        "  parity shadow user_stats --candidate 3 --entities ids.txt --threshold 0.01 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("view", help="feature view name (see `parity views`)")
    p.add_argument(
        "--candidate", type=int, required=True, metavar="VERSION", help="the candidate's version N"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--entities", type=Path, metavar="FILE", help="entity ids to compare, one a line")
    which.add_argument(
        "--sample",
        type=int,
        default=200,
        metavar="N",
        help="compare up to N entities found in the live version's Redis (default 200)",
    )
    p.add_argument(
        "--as-of",
        type=_parse_time,
        metavar="T",
        help="the instant compared, ISO-8601 (default: the older completeness watermark of the two)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        metavar="R",
        help="largest acceptable share of divergent entities per feature, 0..1 (default 0)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_shadow)


def _cmd_shadow(args: argparse.Namespace) -> int:
    from serving.shadow import load_pair, read_entities, run_shadow

    if not 0 <= args.threshold <= 1:
        raise InputError(f"--threshold {args.threshold} must be between 0 and 1")
    if args.sample < 1:
        raise InputError("--sample must be at least 1")
    entities = read_entities(args.entities) if args.entities is not None else None
    live, candidate = load_pair(args.view, args.candidate)
    report = run_shadow(live, candidate, entities=entities, sample=args.sample, as_of=args.as_of)
    print(
        json.dumps(report.as_dict(args.threshold), indent=2)
        if args.json
        else "\n".join(report.lines(args.threshold))
    )
    return 1 if report.above(args.threshold) else 0


def _tracing_if_configured() -> None:
    """Export the CLI's spans (produce, replay) only when an exporter is configured explicitly."""
    import os

    if os.environ.get("PARITY_SERVING_TRACE_EXPORTER"):
        from serving.config import ServingConfig
        from serving.telemetry import setup_tracing

        setup_tracing(ServingConfig(), service_name="parity-cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parity",
        description="parity: one feature definition, one Flink pipeline,\n"
        "online and offline reads that agree.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: Sequence[Callable[[_Subparsers], None]] = (
        _add_delegated,
        _add_job,
        _add_views,
        _add_features,
        _add_show,
        _add_replay,
        _add_reset,
        _add_repair,
        _add_drift,
        _add_shadow,
        _add_log_archive,
    )
    for add in adders:
        add(sub)
    return parser


def _add_log_archive(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "log-archive",
        help="append the served-feature log's new records to the Iceberg table <namespace>.served_features",
        description="Append the records of the served-feature log topic that are not archived yet, up\n"
        "to the topic's end as it stands at the start, to the Iceberg table served_features in\n"
        "the namespace PARITY_ICEBERG_NAMESPACE (default features) of the offline store's catalog\n"
        "(PARITY_ICEBERG_*; locally .parity/iceberg), created when missing, partitioned by day of\n"
        "request_time: the log outlives Kafka's retention and can be queried. Each append stores\n"
        "how far it got in its own Iceberg snapshot, so every record is archived exactly once:\n"
        "safe to re-run, to interrupt and to run on a schedule (serving/log_archive.py).\n"
        "Undecodable records are counted and named by partition:offset, once.",
        epilog="examples:\n"
        "  parity log-archive                          the default topic, up to 100000 records\n"
        "  */5 * * * * parity log-archive --json       every five minutes (cron); run it more\n"
        "      often than the topic's retention, or records expire unarchived (reported)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--topic", help="the log topic (default: PARITY_SERVING_LOG_TOPIC)")
    p.add_argument(
        "--max-records", type=int, default=100_000, metavar="N", help="records read per run (default 100000)"
    )
    p.add_argument("--dry-run", action="store_true", help="count the records not archived yet; write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_log_archive)


def _cmd_log_archive(args: argparse.Namespace) -> int:
    from parity.config import IcebergConfig, KafkaConfig, RegistryConfig
    from serving.config import ServingConfig
    from serving.log_archive import archive_log

    if args.max_records < 1:
        raise InputError("--max-records must be at least 1")
    summary = archive_log(
        KafkaConfig(),
        RegistryConfig(),
        IcebergConfig(),
        topic=args.topic or ServingConfig().log_topic,
        max_records=args.max_records,
        dry_run=args.dry_run,
        say=lambda line: print(line, file=sys.stderr),
    )
    print(json.dumps(summary.as_dict(), indent=2) if args.json else "\n".join(summary.lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # confluent-kafka's registry client imports authlib's deprecated httpx module; users cannot act on it.
    # authlib, when first imported, puts an "always" filter for its warnings in front of every
    # earlier one, so it is imported before the "ignore" goes in front of it.
    with contextlib.suppress(ImportError):
        import authlib.deprecate  # noqa: F401
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    _tracing_if_configured()
    if argv and argv[0] in _DELEGATED:
        module, lead, _ = _DELEGATED[argv[0]]
        delegated: Callable[[list[str]], int] = importlib.import_module(module).main
        return delegated([*lead, *argv[1:]])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    return run_command("parity", lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
