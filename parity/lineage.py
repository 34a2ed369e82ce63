"""OpenLineage run events of the streaming job, replay and repair-online.

Off by default (``PARITY_LINEAGE_TRANSPORT=none``): then no event is built or
sent and ``openlineage`` is never imported, so readers and users who never turn
lineage on do not need the optional ``lineage`` extra. Emission never fails or
holds up the operation it describes: an error building or sending an event is
logged and dropped, and HTTP has a short timeout and no retries.

Dataset names follow https://openlineage.io/docs/spec/naming:

- a Kafka topic: namespace ``kafka://<host>:<port>`` of the first bootstrap
  server, name the topic;
- an Iceberg table: by its location, as the spec names files (and the
  OpenLineage Spark integration names Iceberg tables): the JDBC
  catalog puts a table at ``<warehouse>/<namespace>/<table>``. A ``file://``
  warehouse gives namespace ``file`` and the absolute path as name (the
  client's ``LocalFileSystem`` naming); an object store gives
  ``<scheme>://<bucket>`` and the key. A ``symlinks`` facet adds the
  catalog's own name for it: namespace the catalog URI without credentials,
  name ``<namespace>.<table>``, type ``TABLE``;
- Redis, which the spec does not name: namespace ``redis://<host>:<port>``,
  name ``<key prefix>:<view qualified name>``.

The runs of the streaming job, replay and repair are described from a view
in ``jobs.lineage``; this module knows no view, so every layer may use it.

A job is ``<view qualified name>.<command>`` (``user_stats_v2.stream``,
``.replay``, ``.repair-online``) in ``PARITY_LINEAGE_NAMESPACE``. Facets:
``jobType`` and, for the jobs that run the compiled pipeline, ``sql``; the
custom job facet ``parity_view`` (view, version, SHA-256 of the text that
``parity views <view> --sql`` prints); the custom run facet ``parity_run``
(the replayed range, its source, the Flink job id, the savepoint), with the
range also as the standard ``nominalTime``; ``errorMessage`` on FAIL and
ABORT; ``schema`` on every dataset but Redis. Dry runs change no dataset and
emit nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parity.config import DEFAULT_HOME, IcebergConfig, KafkaConfig, RedisConfig

log = logging.getLogger(__name__)

# parity has no public address: a URN names it and its two custom facets (the spec asks for URIs).
PRODUCER = "urn:parity:lineage:1"
VIEW_FACET_SCHEMA = "urn:parity:lineage:facets:ParityViewJobFacet:1"
RUN_FACET_SCHEMA = "urn:parity:lineage:facets:ParityRunFacet:1"

State = Literal["START", "RUNNING", "COMPLETE", "FAIL", "ABORT"]


class LineageConfig(BaseSettings):
    """Where run events go; ``none`` turns lineage off."""

    model_config = SettingsConfigDict(env_prefix="PARITY_LINEAGE_", extra="forbid", frozen=True)

    transport: Literal["none", "console", "file", "http"] = "none"
    # One JSON event a line, appended; resolved against the working directory when sent.
    file_path: Path = DEFAULT_HOME / "lineage" / "events.jsonl"
    # An OpenLineage HTTP endpoint, e.g. Marquez at http://127.0.0.1:5000.
    http_url: str | None = None
    http_endpoint: str = "api/v1/lineage"
    http_timeout_s: float = Field(default=2.0, gt=0)
    http_api_key: SecretStr | None = None
    namespace: str = "parity"

    @model_validator(mode="after")
    def _url_for_http(self) -> LineageConfig:
        if self.transport == "http" and not self.http_url:
            raise ValueError("PARITY_LINEAGE_TRANSPORT=http needs PARITY_LINEAGE_HTTP_URL")
        return self


def load_config() -> LineageConfig:
    """The environment's settings; invalid ones turn lineage off with a warning, never fail a command."""
    try:
        return LineageConfig()
    except ValidationError as exc:
        log.warning("lineage is off: invalid PARITY_LINEAGE_ settings: %s", exc)
        return off()


def off() -> LineageConfig:
    """Lineage turned off, whatever the environment says."""
    return LineageConfig.model_construct(transport="none")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A dataset as OpenLineage names it, with the columns of its schema facet."""

    namespace: str
    name: str
    columns: tuple[Column, ...] = ()
    # The catalog's (namespace, name) for the same table, sent as a symlinks facet.
    table: tuple[str, str] | None = None


@dataclass(frozen=True)
class RunSpec:
    """What every event of one run says about its job and datasets."""

    job: str
    processing: Literal["STREAMING", "BATCH"]
    view: str
    version: int
    sql: str | None = None
    inputs: tuple[Dataset, ...] = ()
    outputs: tuple[Dataset, ...] = ()
    nominal: tuple[datetime, datetime] | None = None
    # Fields of the parity_run facet, in every event of the run.
    run_fields: dict[str, str | bool] = field(default_factory=dict)


def kafka_dataset(kafka: KafkaConfig, topic: str, columns: tuple[Column, ...] = ()) -> Dataset:
    server = kafka.bootstrap_servers.split(",")[0].strip()
    return Dataset(f"kafka://{server}", topic, columns)


def iceberg_dataset(cfg: IcebergConfig, table: str, columns: tuple[Column, ...] = ()) -> Dataset:
    """A table, named by its location (see the module docstring); its symlink names the catalog
    (the JDBC URI, or the REST catalog's)."""
    parts = urlsplit(cfg.warehouse)
    path = f"{parts.path.rstrip('/')}/{cfg.namespace}/{table}"
    if parts.scheme in ("", "file") and parts.netloc in ("", "localhost"):
        namespace, name = "file", path
    elif parts.scheme == "hdfs":
        namespace, name = f"hdfs://{parts.netloc}", path
    else:
        namespace, name = f"{parts.scheme}://{parts.netloc}", path.lstrip("/")
    catalog = _without_credentials(cfg.rest_uri if cfg.catalog_type == "rest" else cfg.catalog_uri)
    return Dataset(namespace, name, columns, table=(catalog, f"{cfg.namespace}.{table}"))


def redis_dataset(cfg: RedisConfig, qualified_name: str) -> Dataset:
    return Dataset(f"redis://{cfg.host}:{cfg.port}", f"{cfg.key_prefix}:{qualified_name}")


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def sql_sha256(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


class LineageRun:
    """The events of one run; they share its run id. Every method returns at once when lineage is off.

    ``describe`` is called once, at the first event, so that a run whose lineage
    is off never reads a schema or compiles a view.
    """

    def __init__(self, describe: Callable[[], RunSpec], cfg: LineageConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else load_config()
        self._describe = describe
        self._spec: RunSpec | None = None
        self._run_id: str | None = None
        self._run_fields: dict[str, str | bool] = {}

    @property
    def enabled(self) -> bool:
        return self.cfg.transport != "none"

    def start(self) -> None:
        self._emit("START")

    def running(self, flink_job_id: str) -> None:
        self._run_fields["flinkJobId"] = flink_job_id
        self._emit("RUNNING")

    def complete(self, savepoint: str | None = None) -> None:
        if savepoint is not None:
            self._run_fields["savepoint"] = savepoint
        self._emit("COMPLETE")

    def fail(self, error: BaseException) -> None:
        """FAIL, or ABORT when the error is a cancellation (Ctrl-C, or Flink's cancelled job)."""
        self._emit("ABORT" if cancelled(error) else "FAIL", error)

    def abort(self, error: BaseException | None = None) -> None:
        self._emit("ABORT", error)

    def __enter__(self) -> LineageRun:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is None:
            self.complete()
        else:
            self.fail(error)

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            from openlineage.client.uuid import generate_new_uuid

            self._run_id = str(generate_new_uuid())
        return self._run_id

    @property
    def spec(self) -> RunSpec:
        if self._spec is None:
            self._spec = self._describe()
        return self._spec

    def event(self, state: State, error: BaseException | None = None) -> Any:
        """The OpenLineage RunEvent of this run in ``state``."""
        return build_event(self.spec, state, self.run_id, self.cfg.namespace, self._run_fields, error)

    def _emit(self, state: State, error: BaseException | None = None) -> None:
        if not self.enabled:
            return
        try:
            _client(self.cfg).emit(self.event(state, error))
        except ImportError:
            log.warning("lineage: the %s event was not sent: install the extra parity[lineage]", state)
        except Exception as exc:  # lineage is a side channel: the operation goes on without it
            log.warning("lineage: the %s event was not sent: %s", state, exc)


def cancelled(error: BaseException) -> bool:
    """Whether an error means the run was cancelled rather than failed."""
    if isinstance(error, KeyboardInterrupt):
        return True
    seen: BaseException | None = error
    while seen is not None:
        if "JobCancellationException" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def build_event(
    spec: RunSpec,
    state: State,
    run_id: str,
    namespace: str,
    run_fields: dict[str, str | bool] | None = None,
    error: BaseException | None = None,
) -> Any:
    """A RunEvent for ``spec`` (imports openlineage; call it only when lineage is on)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        JobFacet,
        RunFacet,
        error_message_run,
        job_type_job,
        nominal_time_run,
        sql_job,
    )

    view_facet, run_facet = _custom_facets()
    job_facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType=spec.processing,
            integration="FLINK" if spec.sql else "PARITY",
            jobType="JOB",
            producer=PRODUCER,
        ),
        "parity_view": view_facet(
            view=spec.view,
            version=spec.version,
            sqlSha256=sql_sha256(spec.sql) if spec.sql else None,
            producer=PRODUCER,
        ),
    }
    if spec.sql:
        job_facets["sql"] = sql_job.SQLJobFacet(query=spec.sql, dialect="flink", producer=PRODUCER)
    run_facets: dict[str, RunFacet] = {}
    fields = {**spec.run_fields, **(run_fields or {})}
    if fields:
        run_facets["parity_run"] = run_facet(**fields, producer=PRODUCER)
    if spec.nominal is not None:
        run_facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=iso_time(spec.nominal[0]),
            nominalEndTime=iso_time(spec.nominal[1]),
            producer=PRODUCER,
        )
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=str(error) or type(error).__name__,
            programmingLanguage="python",
            stackTrace="".join(traceback.format_exception(error)),
            producer=PRODUCER,
        )
    return RunEvent(
        eventType=RunState(state),
        eventTime=iso_time(datetime.now(UTC)),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=namespace, name=spec.job, facets=job_facets),
        inputs=[InputDataset(d.namespace, d.name, facets=_dataset_facets(d)) for d in spec.inputs],
        outputs=[OutputDataset(d.namespace, d.name, facets=_dataset_facets(d)) for d in spec.outputs],
        producer=PRODUCER,
    )


def _dataset_facets(dataset: Dataset) -> dict[str, Any]:
    from openlineage.client.facet_v2 import schema_dataset, symlinks_dataset

    facets: dict[str, Any] = {}
    if dataset.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(
                    name=c.name, type=c.type, description=c.description, ordinal_position=i
                )
                for i, c in enumerate(dataset.columns, start=1)
            ],
            producer=PRODUCER,
        )
    if dataset.table is not None:
        namespace, name = dataset.table
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[symlinks_dataset.Identifier(namespace=namespace, name=name, type="TABLE")],
            producer=PRODUCER,
        )
    return facets


@functools.cache
def _custom_facets() -> tuple[type[Any], type[Any]]:
    """parity's job and run facets, defined on first use so that nothing imports openlineage while off."""
    import attr
    from openlineage.client.facet_v2 import JobFacet, RunFacet

    @attr.define(kw_only=True)
    class ParityViewJobFacet(JobFacet):
        view: str
        version: int
        sqlSha256: str | None = None  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return VIEW_FACET_SCHEMA

    @attr.define(kw_only=True)
    class ParityRunFacet(RunFacet):
        rangeStart: str | None = None  # noqa: N815
        rangeEnd: str | None = None  # noqa: N815
        source: str | None = None
        toOnline: bool | None = None  # noqa: N815
        flinkJobId: str | None = None  # noqa: N815
        savepoint: str | None = None

        @staticmethod
        def _get_schema() -> str:
            return RUN_FACET_SCHEMA

    return ParityViewJobFacet, ParityRunFacet


@functools.cache
def _client(cfg: LineageConfig) -> Any:
    """One client per configuration and process."""
    from openlineage.client import OpenLineageClient

    return OpenLineageClient(transport=_transport(cfg))


def _transport(cfg: LineageConfig) -> Any:
    if cfg.transport == "file":
        from openlineage.client.transport.file import FileConfig, FileTransport

        path = cfg.file_path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    if cfg.transport == "http":
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        params: dict[str, Any] = {
            "url": cfg.http_url,
            "endpoint": cfg.http_endpoint,
            "timeout": cfg.http_timeout_s,
            # A lineage backend that is down must not hold up a job: one try, then the event is dropped.
            "retry": {"total": 0, "connect": 0, "read": 0},
        }
        if cfg.http_api_key is not None:
            params["auth"] = {"type": "api_key", "apiKey": cfg.http_api_key.get_secret_value()}
        return HttpTransport(HttpConfig.from_dict(params))
    from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport

    # The client logs each event at INFO; commands log at WARNING unless verbose.
    logging.getLogger("openlineage.client.transport.console").setLevel(logging.INFO)
    return ConsoleTransport(ConsoleConfig())


def iso_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
