"""The streaming feature job: Kafka → tiles → Redis and Iceberg, from one compiled pipeline.

Run locally (a Flink mini-cluster inside this process):

    python -m jobs.stream --view user_stats

or on the standalone cluster with ``parity job submit``, which hands this
same file to ``flink run``.

Protocol of one run:
1. compile the view (jobs.compiler) and make sure its Iceberg tables exist;
2. bind the source table to the Kafka topic (up to the current end offsets
   with ``--bounded``);
3. one statement set writes the same tile rows to Iceberg (committed on
   checkpoints) and Redis (synchronous Python writes), plus the completeness
   rows to both;
4. wait for the job; on SIGTERM/SIGINT, or once a ``--bounded`` run has
   read to the end offsets it started with, stop it with a savepoint. No stop
   closes an open tile: it travels in the savepoint (see jobs.continuity for
   where the next run starts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import KafkaException
from pyflink.table import EnvironmentSettings, StatementSet, TableEnvironment

from features.definition import FeatureView
from features.registry import get_view
from jobs import continuity, lineage, redis_sink
from jobs.compiler import CompiledPipeline, compile_view, iceberg_catalog_ddl, quote
from jobs.console import say
from jobs.decode import decoded_source_statements
from jobs.offsets import TopicOffsets
from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig
from parity.errors import JobError
from parity.lineage import LineageRun
from sinks import iceberg, repair
from sinks.redis import connect
from sinks.redis_layout import completeness_key

log = logging.getLogger("parity.job")

PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"

# Writers a benchmark may leave out, to measure what each one costs (``--skip``).
SKIPPABLE = ("archive", "iceberg-tiles", "iceberg-progress", "redis", "live")


def table_environment(view: FeatureView, flink: FlinkJobConfig, *, streaming: bool) -> TableEnvironment:
    if streaming:
        # Before anything starts PyFlink's JVM, which runs a local job's mini-cluster.
        os.environ.setdefault("JVM_ARGS", f"-Xmx{flink.local_heap}")
        # glibc gives the JVM's threads malloc arenas of their own (up to 8 per core), and
        # native allocations (zstd, Netty) spread over them; two arenas bound that growth.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    if streaming and flink.metrics_ports:
        _reporter_on_classpath()  # before anything starts PyFlink's JVM
    settings = EnvironmentSettings.in_streaming_mode() if streaming else EnvironmentSettings.in_batch_mode()
    env = TableEnvironment.create(settings)
    conf = env.get_config()
    if streaming and flink.metrics_ports:
        # Loaded by a local mini-cluster only; a cluster keeps its own reporters.
        conf.set("metrics.reporter.prom.factory.class", PROMETHEUS_REPORTER)
        conf.set("metrics.reporter.prom.host", "127.0.0.1")
        conf.set("metrics.reporter.prom.port", flink.metrics_ports)
        # A chained task's name lists every operator in it, up to ~900 characters on each of
        # its metrics: dropping it cut a scrape's page by 30 %. operator_name stays.
        conf.set("metrics.reporter.prom.scope.variables.excludes", "task_name")
    if streaming:
        # A local job's mini-cluster only (a cluster sizes its TaskManagers itself): the
        # window operators' buffers need far less than the default 128 MB, which they hold
        # off-heap for the whole run.
        conf.set("taskmanager.memory.managed.size", flink.local_managed_memory)
    # Tiles align to UTC; TIMESTAMP_LTZ values are rendered in UTC too.
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(flink.parallelism))
    # Chained operators pass rows without copying them. Flink SQL's operators copy what
    # they keep, and parity's JVM sinks turn each row into strings as it arrives; the
    # source's six outputs otherwise copied every event six times.
    conf.set("pipeline.object-reuse", "true")
    conf.set("pipeline.name", f"parity-{view.qualified_name}{'' if streaming else '-replay'}")
    conf.set("python.executable", sys.executable)
    conf.set("python.client.executable", sys.executable)
    conf.set("python.fn-execution.bundle.size", str(flink.python_bundle_size))
    conf.set("python.fn-execution.bundle.time", str(flink.python_bundle_time_ms))
    conf.set("python.fn-execution.arrow.batch.size", str(flink.python_bundle_size))
    # Iceberg's SinkV2 sink commits through Flink's own committer operator, which also
    # takes the files flushed at the end of a bounded input into the final commit. With
    # the older sink a bounded run once lost the archive's last files (1 run in 5 at 1M events).
    conf.set("table.exec.iceberg.use-v2-sink", "true")
    if flink.source_idle_timeout_s > 0:
        conf.set("table.exec.source.idle-timeout", f"{int(flink.source_idle_timeout_s * 1000)} ms")
    if streaming:
        checkpoints = (flink.checkpoint_dir / view.qualified_name).resolve()
        conf.set("execution.checkpointing.interval", f"{int(flink.checkpoint_interval_s * 1000)} ms")
        conf.set("execution.checkpointing.dir", checkpoints.as_uri())
        conf.set("execution.checkpointing.savepoint-dir", (checkpoints / "savepoints").as_uri())
        conf.set("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        conf.set("execution.checkpointing.mode", "EXACTLY_ONCE")
        # A failure restarts from the newest checkpoint after 1 s, doubling to 1 min while
        # failures continue (the Redis sink has already retried for PARITY_REDIS_WRITE_RETRY_S);
        # after 20 restarts with less than 10 min of running between them, it fails for good.
        conf.set("restart-strategy.type", "exponential-delay")
        conf.set("restart-strategy.exponential-delay.initial-backoff", "1 s")
        conf.set("restart-strategy.exponential-delay.max-backoff", "1 min")
        conf.set("restart-strategy.exponential-delay.backoff-multiplier", "2.0")
        conf.set("restart-strategy.exponential-delay.reset-backoff-threshold", "10 min")
        conf.set("restart-strategy.exponential-delay.jitter-factor", "0.1")
        conf.set("restart-strategy.exponential-delay.attempts-before-reset-backoff", "20")
    return env


def _reporter_on_classpath() -> None:
    """Put Flink's Prometheus reporter on the classpath of the JVM PyFlink is about to start.

    A mini-cluster finds reporters on its classpath only, not in Flink's
    plugins folder, where the wheel ships this one. PyFlink appends
    HADOOP_CLASSPATH to the classpath of the JVM it launches.
    """
    import pyflink

    jars = sorted((Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("*.jar"))
    if not jars:
        log.warning("Flink's Prometheus reporter is not in the pyflink wheel; the job exports no metrics")
        return
    current = os.environ.get("HADOOP_CLASSPATH", "")
    os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(filter(None, [current, str(jars[-1])]))


def bind_sinks(
    env: TableEnvironment,
    pipeline: CompiledPipeline,
    iceberg_cfg: IcebergConfig,
    redis_cfg: RedisConfig,
    *,
    archive_from: str,
    closed_before_ms: int,
    flink: FlinkJobConfig | None = None,
    skip: frozenset[str] = frozenset(),
) -> StatementSet:
    """The job's inserts: the same tile and progress rows to Iceberg and to Redis, the raw
    archive, and the count of late rows.

    ``archive_from`` is the table of every decoded row; the tile query reads only
    those at or after ``closed_before_ms``, and the rest are counted late. Redis is
    written by the JVM sink of ``jobs.redis_sink``, or with
    ``PARITY_FLINK_REDIS_SINK=python`` by the Python functions of ``sinks.flink_udf``.
    ``skip`` leaves writers out, for benchmarks only (``SKIPPABLE``).
    """
    flink = flink or FlinkJobConfig()
    view = pipeline.view
    iceberg.ensure_tables(iceberg_cfg, view)
    env.execute_sql(iceberg_catalog_ddl(iceberg_cfg))
    for statement in pipeline.statements():
        env.execute_sql(statement)
    progress_view = f"{view.qualified_name}_progress"
    env.execute_sql(f"CREATE TEMPORARY VIEW {quote(progress_view)} AS\n{pipeline.progress_query}")
    key = quote(view.entity.join_key)
    aggs = ", ".join(quote(a.name) for a in view.aggregations)
    tiles = quote(pipeline.tiles_view)
    event_time = quote(view.source.event_time_field)
    statements = env.create_statement_set()
    if "iceberg-tiles" not in skip:
        statements.add_insert_sql(
            f"INSERT INTO {iceberg.sql_table(iceberg_cfg, iceberg.tiles_table(view))}\n"
            f"SELECT {key}, tile_start, tile_end, events, {aggs} FROM {tiles}"
        )
    if "iceberg-progress" not in skip:
        statements.add_insert_sql(
            f"INSERT INTO {iceberg.sql_table(iceberg_cfg, iceberg.progress_table(view))}\n"
            f"SELECT tile_start, tile_end, entities, events FROM {quote(progress_view)}"
        )
    if "archive" not in skip:
        add_archive(statements, pipeline, iceberg_cfg, archive_from)
    late_s = f"CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', {event_time}) AS BIGINT)"
    late_columns = f"{late_s}, `kafka_partition`, `kafka_offset`"
    late_from = (
        f"FROM {quote(archive_from)}\n"
        f"WHERE {pipeline.late_condition} OR {event_time} < {_timestamp_literal(closed_before_ms)}"
    )
    if "redis" in skip:
        return statements
    if flink.redis_sink == "jvm":
        for ddl in redis_sink.sink_ddl(view, redis_cfg, flink):
            env.execute_sql(ddl)
        statements.add_insert_sql(
            f"INSERT INTO {quote(redis_sink.TILES)}\nSELECT {key}, tile_start_ms, events, {aggs} FROM {tiles}"
        )
        statements.add_insert_sql(
            f"INSERT INTO {quote(redis_sink.COMPLETENESS)}\nSELECT tile_end_ms FROM {quote(progress_view)}"
        )
        statements.add_insert_sql(f"INSERT INTO {quote(redis_sink.LATE)}\nSELECT {late_columns} {late_from}")
        if view.freshness is not None and "live" not in skip:
            statements.add_insert_sql(f"INSERT INTO {quote(redis_sink.LIVE)}\n{pipeline.live_query}")
        return statements
    if view.freshness is not None:
        log.warning(
            "%s: live tiles need PARITY_FLINK_REDIS_SINK=jvm; this job writes closed tiles only, so "
            "online reads at now lag by up to a tile plus the allowed lateness",
            view.qualified_name,
        )
    # Here, not at the top: the Python functions bring pandas, about 50 MB the client of a
    # JVM-sink job would hold for its whole run.
    from sinks.flink_udf import late_events_udf, redis_completeness_udf, redis_tiles_udf

    env.create_temporary_function("parity_redis_tiles", redis_tiles_udf(view.name, redis_cfg))
    env.create_temporary_function("parity_redis_completeness", redis_completeness_udf(view.name, redis_cfg))
    env.create_temporary_function("parity_late_events", late_events_udf(view.name, redis_cfg))
    env.execute_sql("CREATE TEMPORARY TABLE `parity_redis_acks` (n BIGINT) WITH ('connector' = 'blackhole')")
    statements.add_insert_sql(
        "INSERT INTO `parity_redis_acks`\n"
        f"SELECT parity_redis_tiles({key}, tile_start_ms, tile_start_ms + {view.tile_ms}, events, {aggs}) "
        f"FROM {tiles}"
    )
    statements.add_insert_sql(
        "INSERT INTO `parity_redis_acks`\n"
        f"SELECT parity_redis_completeness(tile_end_ms) FROM {quote(progress_view)}"
    )
    statements.add_insert_sql(
        f"INSERT INTO `parity_redis_acks`\nSELECT parity_late_events({late_columns}) {late_from}"
    )
    return statements


def add_archive(
    statements: StatementSet, pipeline: CompiledPipeline, iceberg_cfg: IcebergConfig, source: str
) -> None:
    """Every source row, late ones included, appended to the raw archive (committed on checkpoints)."""
    view = pipeline.view
    columns = []
    for name in iceberg.raw_columns(view):
        if name == view.source.event_time_field:
            columns.append(f"CAST({quote(name)} AS TIMESTAMP_LTZ(3)) AS {quote(name)}")
        else:
            columns.append(quote(name))
    statements.add_insert_sql(
        f"INSERT INTO {iceberg.sql_table(iceberg_cfg, iceberg.raw_table(view))}\n"
        f"SELECT {', '.join(columns)} FROM {quote(source)}"
    )


def run(args: argparse.Namespace) -> int:
    view = get_view(args.view)
    if args.topic:
        view = replace(view, source=replace(view.source, topic=args.topic, subject=f"{args.topic}-value"))
    flink = FlinkJobConfig()
    if args.parallelism:
        flink = flink.model_copy(update={"parallelism": args.parallelism})
    iceberg_cfg, redis_cfg, kafka = IcebergConfig(), RedisConfig(), KafkaConfig()
    track = lineage.stream_run(view, kafka, iceberg_cfg, redis_cfg)
    track.start()
    try:
        return _run(args, view, flink, iceberg_cfg, redis_cfg, kafka, track)
    except BaseException as exc:
        track.fail(exc)
        raise


def _run(
    args: argparse.Namespace,
    view: FeatureView,
    flink: FlinkJobConfig,
    iceberg_cfg: IcebergConfig,
    redis_cfg: RedisConfig,
    kafka: KafkaConfig,
    track: LineageRun,
) -> int:
    state_root = (flink.checkpoint_dir / view.qualified_name).resolve()
    plan = continuity.plan_start(
        view,
        state_root,
        continuity.read_progress(view, iceberg_cfg, redis_cfg),
        from_state=Path(args.from_checkpoint).resolve() if args.from_checkpoint else None,
        without_state=args.without_state,
    )
    repair.ensure_online(view, iceberg_cfg, redis_cfg, say)
    for line in plan.describe(view):
        say(line)
    env = table_environment(view, flink, streaming=True)
    if plan.state is not None:
        env.get_config().set("execution.state-recovery.path", plan.state.as_uri())
    pipeline = compile_view(view, live_backlog=flink.live_backlog)
    group_id = args.group_id or f"parity-{view.qualified_name}"
    # Undecodable or invalid records go to the dead-letter topic instead of failing the job.
    # The source never ends by itself: a bounded run stops with a savepoint once caught up,
    # so that no stop closes a tile whose period the watermark has not passed.
    decoded = f"{pipeline.source_table}_decoded"
    start_offsets = None
    if plan.start_offsets is not None:
        offsets = TopicOffsets(kafka, view.source.topic, group_id)
        try:
            start_offsets = plan.offsets_for(sorted(offsets.ends()))
        finally:
            offsets.close()
        say(f"reading {view.source.topic} from offsets {start_offsets}, right after the archive's newest")
    source = decoded_source_statements(
        pipeline,
        kafka,
        RegistryConfig(),
        group_id=group_id,
        bounded=False,
        dead_letter_topic=kafka.dead_letter_topic,
        good_table=decoded,
        start_offsets=start_offsets,
    )
    for statement in source.statements:
        env.execute_sql(statement)
    env.execute_sql(closed_boundary_view(pipeline, decoded, plan.closed_before_ms))
    statements = bind_sinks(
        env,
        pipeline,
        iceberg_cfg,
        redis_cfg,
        archive_from=decoded,
        closed_before_ms=plan.closed_before_ms,
        flink=flink,
        skip=frozenset(args.skip),
    )
    for insert in source.inserts:
        statements.add_insert_sql(insert)
    result = statements.execute()
    client = result.get_job_client()
    if client is None:
        raise JobError("Flink returned no job client; the job did not start")
    job_id = str(client.get_job_id())
    log.info("job %s started for view %s (bounded=%s)", job_id, view.qualified_name, args.bounded)
    say(f"job {job_id} running: view {view.qualified_name}")
    track.running(job_id)
    if args.detached:
        return 0

    try:
        finished = _watch(result, view, args, kafka, group_id, state_root / job_id)
    except BaseException:
        # Do not leave the job running in this process's mini-cluster with nobody watching it.
        with contextlib.suppress(Exception):
            client.cancel().get()
        raise
    if finished:
        say(f"job {job_id} finished")
        track.complete()
        return 0
    log.info("stopping job %s with a savepoint", job_id)
    savepoint = _stop_with_savepoint(client, directory=(state_root / "savepoints").as_uri())
    say(f"job {job_id} stopped with savepoint {savepoint}; the next run resumes from it")
    track.complete(savepoint)
    return 0


def _watch(
    result: Any,
    view: FeatureView,
    args: argparse.Namespace,
    kafka: KafkaConfig,
    group_id: str,
    job_checkpoints: Path,
) -> bool:
    """Wait until the job ends (True), or until it should stop with a savepoint (False).

    It should stop on SIGTERM or SIGINT, and once it has caught up with the end
    offsets it was asked to read to (``--bounded`` from the start, ``--drain``
    from the signal).
    """
    stop = {"requested": False}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    progress = _Progress(view, RedisConfig())
    offsets = TopicOffsets(kafka, view.source.topic, group_id)
    target: dict[int, int] | None = None
    try:
        while True:
            try:
                result.wait(500)
                return True
            except Exception as exc:  # py4j wraps Java's TimeoutException; anything else is the job failing
                if "TimeoutException" not in str(exc):
                    raise JobError(f"the job of {view.qualified_name} failed: {_first_line(exc)}") from exc
            progress.report()
            if stop["requested"] and not args.drain:
                return False
            try:
                # Kafka may be briefly away (the job rides that out too): ask again next time.
                if target is None and (args.bounded or stop["requested"]):
                    target = offsets.ends()
                    say(f"reading {view.source.topic} up to offsets {target}, then stopping")
                if target is not None and _caught_up(offsets, target, job_checkpoints):
                    return False
            except KafkaException as exc:
                log.warning("the topic's offsets are unavailable for now: %s", exc)
    finally:
        offsets.close()


def closed_boundary_view(pipeline: CompiledPipeline, decoded: str, closed_before_ms: int) -> str:
    """The tile query's source: decoded rows of periods that are still open (see jobs.continuity).

    The filter is there on every start, with the epoch as its bound when nothing
    is closed, so the job graph, and with it the state's operator ids, is the
    same whichever way a run starts.
    """
    event_time = quote(pipeline.view.source.event_time_field)
    return (
        f"CREATE TEMPORARY VIEW {quote(pipeline.source_table)} AS\n"
        f"SELECT * FROM {quote(decoded)}\nWHERE {event_time} >= {_timestamp_literal(closed_before_ms)}"
    )


def _timestamp_literal(ms: int) -> str:
    # Event times are TIMESTAMP(3) in UTC wall time; the session time zone is UTC.
    when = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"TIMESTAMP '{when}'"


def _caught_up(offsets: TopicOffsets, target: dict[int, int], job_checkpoints: Path) -> bool:
    """True once a checkpoint of this job has completed and the group has committed up to target."""
    if not any(job_checkpoints.glob("chk-*/_metadata")):
        return False
    return offsets.behind(target) == 0


class _Progress:
    """Prints how far the view's tiles are complete, read back from Redis, every few seconds."""

    def __init__(self, view: FeatureView, cfg: RedisConfig, every_s: float = 5.0) -> None:
        self._view, self._cfg, self._every_s = view, cfg, every_s
        self._next = time.monotonic() + every_s
        self._last: int | None = None

    def report(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every_s
        try:
            client = connect(self._cfg)
            try:
                raw = client.get(completeness_key(self._cfg.key_prefix, self._view))
            finally:
                client.close()
        except Exception as exc:  # progress is informational; the job's health is Flink's
            log.debug("progress unavailable: %s", exc)
            return
        if raw is not None and int(raw) != self._last:
            self._last = int(raw)
            when = datetime.fromtimestamp(self._last / 1000, tz=UTC).isoformat()
            say(f"progress: tiles complete up to {when}")


def _stop_with_savepoint(client: Any, *, directory: str) -> str:
    """Stop the job with a savepoint, never draining: open tiles stay open, in the savepoint.

    PyFlink 2.2's ``JobClient.stop_with_savepoint`` still calls the two-argument
    Java method, which Flink 2 replaced, so the Java client is called directly.
    """
    from pyflink.java_gateway import get_gateway

    canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(client._j_job_client.stopWithSavepoint(False, directory, canonical).get())


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if "Exception" in line or "Error" in line]
    return lines[-1].strip() if lines else str(exc).splitlines()[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.stream",
        description="Run the streaming tile job of one feature view (Kafka → Redis + Iceberg).",
    )
    p.add_argument("--view", required=True, help="feature view name, e.g. user_stats")
    p.add_argument(
        "--bounded",
        action="store_true",
        help="read to the topic's end offsets as of the start, then stop with a savepoint; "
        "open tiles stay open and the next run continues them",
    )
    p.add_argument(
        "--drain",
        action="store_true",
        help="on SIGTERM, first read to the topic's end offsets as of the signal, then stop",
    )
    p.add_argument(
        "--from-checkpoint",
        help="resume from this checkpoint or savepoint folder (default: the newest retained one)",
    )
    p.add_argument(
        "--without-state",
        action="store_true",
        help="start without state on a view that has progress: older events count as late, "
        "and the lost periods are named with the replay that heals them",
    )
    p.add_argument("--group-id", help="Kafka consumer group (default parity-<view>_v<version>)")
    p.add_argument("--parallelism", type=int, help="override PARITY_FLINK_PARALLELISM")
    p.add_argument("--detached", action="store_true", help="return once the job is submitted (flink run -d)")
    p.add_argument("--topic", help="read this topic instead of the view's own (a test or a blue/green run)")
    p.add_argument(
        "--skip",
        action="append",
        choices=SKIPPABLE,
        default=[],
        help="for benchmarks only: leave out this writer (repeatable). A job without one of its "
        "stores breaks the contracts that store keeps: replay, skew and reads will disagree",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # apache-beam (under PyFlink) logs optional-module notices at INFO on import.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
