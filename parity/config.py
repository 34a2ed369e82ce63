"""Typed, narrow settings: one model per component, read from PARITY_<COMPONENT>_* variables.

Each component receives only its own settings. Unknown keys are rejected and
secrets are ``SecretStr`` so they never show up in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parity.errors import ConfigError

# Everything the local stack writes lives under one gitignored folder.
DEFAULT_HOME = Path(".parity")


def _settings(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="forbid", frozen=True)


class KafkaConfig(BaseSettings):
    """Where the event topics live, and how to reach them: plain by default, or SASL over TLS.

    Clients are built from these settings in one place, ``parity.kafka_security``:
    ``librdkafka_config`` for the Python clients, ``flink_properties`` for the job's
    Kafka tables.
    """

    # A failed check would otherwise print every input value, the password among them.
    model_config = _settings("PARITY_KAFKA_") | SettingsConfigDict(hide_input_in_errors=True)

    bootstrap_servers: str = "127.0.0.1:19092"
    dead_letter_topic: str = "parity.dead-letter"
    # SASL_SSL: a SASL login over TLS; SSL: TLS alone (a client certificate, if any, is
    # the identity); SASL_PLAINTEXT sends a PLAIN password in the clear: only on a
    # trusted network.
    security_protocol: Literal["PLAINTEXT", "SASL_SSL", "SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = None
    # A file holding the password (a mounted secret), read when a client is built.
    sasl_password_file: Path | None = None
    # The CA that signed the brokers' certificates; the system's CAs when unset.
    ssl_ca_file: Path | None = None
    # A client certificate, for brokers that ask for one (ssl.client.auth); the key may
    # sit in the certificate's file, and must for the Flink job.
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None

    @property
    def uses_sasl(self) -> bool:
        """Whether clients log in with a SASL username and password."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """Whether connections to the brokers are encrypted."""
        return self.security_protocol in ("SASL_SSL", "SSL")

    @model_validator(mode="after")
    def _login_and_files_match_the_protocol(self) -> KafkaConfig:
        protocol = f"PARITY_KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
        login = {
            "SASL_MECHANISM": "sasl_mechanism" in self.model_fields_set,
            "SASL_USERNAME": self.sasl_username is not None,
            "SASL_PASSWORD": self.sasl_password is not None,
            "SASL_PASSWORD_FILE": self.sasl_password_file is not None,
        }
        if self.uses_sasl:
            if self.sasl_username is None:
                raise ValueError(f"{protocol} needs PARITY_KAFKA_SASL_USERNAME")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError(
                    f"{protocol} needs PARITY_KAFKA_SASL_PASSWORD or PARITY_KAFKA_SASL_PASSWORD_FILE"
                )
            if self.sasl_password is not None and self.sasl_password_file is not None:
                raise ValueError(
                    "set one of PARITY_KAFKA_SASL_PASSWORD and PARITY_KAFKA_SASL_PASSWORD_FILE, not both"
                )
        elif given := [name for name, set_ in login.items() if set_]:
            raise ValueError(
                f"PARITY_KAFKA_{given[0]} is set but {protocol} logs in with no one; "
                "set PARITY_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            )
        files = {
            "SSL_CA_FILE": self.ssl_ca_file,
            "SSL_CERT_FILE": self.ssl_cert_file,
            "SSL_KEY_FILE": self.ssl_key_file,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and not self.uses_tls:
            raise ValueError(
                f"PARITY_KAFKA_{given[0]} is set but {protocol} does not use TLS; "
                "set PARITY_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SSL"
            )
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise ValueError("PARITY_KAFKA_SSL_KEY_FILE needs PARITY_KAFKA_SSL_CERT_FILE")
        # Checked here so a wrong path fails the command that reads the settings, not a
        # client's first connection.
        files["SASL_PASSWORD_FILE"] = self.sasl_password_file
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"PARITY_KAFKA_{name}: no file at {path}")
        return self


class RegistryConfig(BaseSettings):
    """A Confluent-compatible Schema Registry (Apicurio's ccompat API by default), plain or
    behind TLS with an HTTP basic-auth login.

    Every registry client takes these settings: ``schemas.registry`` (the tooling's client and
    the confluent-kafka client's settings, used by the producer and the served-feature log)
    and the job's decoder (``jobs.decode``, options of the JVM 'parity-avro' format).
    """

    # A failed check would otherwise print every input value, the password among them.
    model_config = _settings("PARITY_REGISTRY_") | SettingsConfigDict(hide_input_in_errors=True)

    url: str = "http://127.0.0.1:18081/apis/ccompat/v7"
    timeout_s: float = Field(default=5.0, gt=0)
    # "user:password", sent as HTTP basic auth (Confluent's basic.auth.user.info); only over https,
    # where nobody on the way can read it.
    basic_auth_user_info: SecretStr | None = None
    # The same from a file (a mounted secret), read once when the settings are: a rotated
    # login reaches a process when it restarts.
    basic_auth_user_info_file: Path | None = None
    # The CA that signed the registry's (or its proxy's) certificate; the system's CAs when unset.
    ca_file: Path | None = None
    # A client certificate, for a proxy that asks for one; the key may sit in the certificate's file.
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def uses_tls(self) -> bool:
        """Whether the registry is reached over https."""
        return self.url.lower().startswith("https://")

    @model_validator(mode="before")
    @classmethod
    def _login_from_its_file(cls, data: Any) -> Any:
        """The file's login in place of the variable, so every later check covers both."""
        if not isinstance(data, dict) or data.get("basic_auth_user_info_file") is None:
            return data
        if data.get("basic_auth_user_info") is not None:
            raise ValueError(
                "set one of PARITY_REGISTRY_BASIC_AUTH_USER_INFO and "
                "PARITY_REGISTRY_BASIC_AUTH_USER_INFO_FILE, not both"
            )
        path = Path(data["basic_auth_user_info_file"])
        if not path.is_file():
            raise ValueError(f"PARITY_REGISTRY_BASIC_AUTH_USER_INFO_FILE: no file at {path}")
        return {**data, "basic_auth_user_info": path.read_text().strip()}

    @model_validator(mode="after")
    def _login_and_files_need_https(self) -> RegistryConfig:
        if not self.url.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"PARITY_REGISTRY_URL={self.url!r} is not an http(s) URL; "
                "e.g. https://registry.example:8443/apis/ccompat/v7"
            )
        if self.basic_auth_user_info is not None:
            user, colon, password = self.basic_auth_user_info.get_secret_value().partition(":")
            if not (user and colon and password):
                raise ValueError(
                    "PARITY_REGISTRY_BASIC_AUTH_USER_INFO must be <user>:<password>, both non-empty"
                )
        given = {
            "BASIC_AUTH_USER_INFO": self.basic_auth_user_info is not None,
            "CA_FILE": self.ca_file is not None,
            "CERT_FILE": self.cert_file is not None,
            "KEY_FILE": self.key_file is not None,
        }
        if not self.uses_tls and (named := [name for name, set_ in given.items() if set_]):
            # A password over plain http would cross the network readable by anyone on the way.
            raise ValueError(
                f"PARITY_REGISTRY_{named[0]} is set but PARITY_REGISTRY_URL is not https; "
                "reach the registry over TLS (https://...)"
            )
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("PARITY_REGISTRY_KEY_FILE needs PARITY_REGISTRY_CERT_FILE")
        # Checked here so a wrong path fails the command that reads the settings, not the
        # first record a running job decodes.
        files = {"CA_FILE": self.ca_file, "CERT_FILE": self.cert_file, "KEY_FILE": self.key_file}
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"PARITY_REGISTRY_{name}: no file at {path}")
        return self

    @property
    def basic_auth_user(self) -> str | None:
        """The login's user name (never the password), for messages."""
        if self.basic_auth_user_info is None:
            return None
        return self.basic_auth_user_info.get_secret_value().partition(":")[0]


class RedisConfig(BaseSettings):
    """The online store, and how to reach it: plain by default, or as an ACL user, over TLS.

    Clients are built from these settings in one place, ``sinks.redis.client_kwargs``.
    """

    # A failed check would otherwise print every input value, the password among them.
    model_config = _settings("PARITY_REDIS_") | SettingsConfigDict(hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(default=16379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    # An ACL user (Redis 6+); without one, a password authenticates the ``default`` user.
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    # A file holding the password, e.g. a mounted secret: read each time a client connects,
    # so a rotated password reaches new connections without a restart.
    password_file: Path | None = None
    tls: bool = False
    # The CA that signed the server's certificate; the system's CAs when unset.
    tls_ca_file: Path | None = None
    # A client certificate, for a server that asks for one (tls-auth-clients); the key may
    # sit in the certificate's file.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # "cluster": a Redis Cluster, found through seed nodes ("host:port,host:port"; host and
    # port when unset). Every key of a view shares one hash tag (sinks.redis_layout), so
    # each view lives on one master and every script and read stays on one node.
    mode: Literal["single", "cluster"] = "single"
    cluster_nodes: str | None = Field(default=None, min_length=1)
    key_prefix: str = "parity"
    socket_timeout_s: float = Field(default=0.5, gt=0)
    # How long the job's writes retry an unreachable or slow Redis (backoff 0.1 s
    # doubling to 2 s) before failing the job; 0 fails on the first error.
    write_retry_s: float = Field(default=30.0, ge=0)
    # Replicas that must acknowledge each of the job's writes (WAIT) before its sink counts
    # it done: a failover then cannot lose a write the sink moved past. 0 (no WAIT) for a
    # Redis without replicas; a write too few acknowledged is retried like a failed one.
    wait_replicas: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _cluster_seeds(self) -> RedisConfig:
        if self.mode == "cluster":
            if self.db != 0:
                raise ValueError("PARITY_REDIS_DB must be 0 with PARITY_REDIS_MODE=cluster (one database)")
            self.seed_nodes()  # a malformed list fails here, naming the entry
        elif self.cluster_nodes is not None:
            raise ValueError("PARITY_REDIS_CLUSTER_NODES is set but PARITY_REDIS_MODE is not cluster")
        return self

    @property
    def address(self) -> str:
        """Where the online store is, for messages: host:port, or a cluster's seeds."""
        if self.mode == "single":
            return f"{self.host}:{self.port}"
        return ",".join(f"{host}:{port}" for host, port in self.seed_nodes()) + " (cluster seeds)"

    def seed_nodes(self) -> list[tuple[str, int]]:
        """The cluster's seed nodes as (host, port): ``cluster_nodes``, else host and port."""
        if self.cluster_nodes is None:
            return [(self.host, self.port)]
        seeds = []
        for entry in self.cluster_nodes.split(","):
            host, _, port = entry.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"PARITY_REDIS_CLUSTER_NODES: {entry.strip()!r} is not host:port "
                    "(give seeds as host:port,host:port)"
                )
            seeds.append((host, int(port)))
        return seeds

    @model_validator(mode="after")
    def _one_password_and_tls_files_with_tls(self) -> RedisConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set one of PARITY_REDIS_PASSWORD and PARITY_REDIS_PASSWORD_FILE, not both")
        if self.username is not None and self.password is None and self.password_file is None:
            raise ValueError(
                "PARITY_REDIS_USERNAME needs PARITY_REDIS_PASSWORD or PARITY_REDIS_PASSWORD_FILE"
            )
        files = {
            "TLS_CA_FILE": self.tls_ca_file,
            "TLS_CERT_FILE": self.tls_cert_file,
            "TLS_KEY_FILE": self.tls_key_file,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and not self.tls:
            raise ValueError(f"PARITY_REDIS_{given[0]} is set but PARITY_REDIS_TLS is not true")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("PARITY_REDIS_TLS_KEY_FILE needs PARITY_REDIS_TLS_CERT_FILE")
        # Checked here so a wrong path fails the command that reads the settings, not the
        # first write of a running job.
        files["PASSWORD_FILE"] = self.password_file
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"PARITY_REDIS_{name}: no file at {path}")
        return self

    def password_value(self) -> str | None:
        """The password, read from ``password_file`` now if that is where it is.

        Raises:
            ConfigError: the password file cannot be read or is empty.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            # One trailing newline is how files are written, never part of a password.
            text = self.password_file.read_text().removesuffix("\n")
        except OSError as exc:
            raise ConfigError(
                f"PARITY_REDIS_PASSWORD_FILE: cannot read {self.password_file}: {exc.strerror}"
            ) from exc
        if not text:
            raise ConfigError(f"PARITY_REDIS_PASSWORD_FILE: {self.password_file} is empty")
        return text


class IcebergConfig(BaseSettings):
    """The offline store: one Iceberg catalog shared by Flink (Java) and pyiceberg.

    ``jdbc`` (the default): both sides open the catalog database themselves and
    write a local ``file://`` warehouse. The catalog name is a column in the
    catalog tables, so it must be the same on both sides.

    ``rest``: both sides talk to an Iceberg REST catalog at ``rest_uri``, which
    owns the catalog database; data and metadata files live in object storage
    (``s3://`` warehouse), read and written with the ``s3_*`` settings.
    Catalogs are built from these settings in one place per side:
    ``sinks.iceberg.open_catalog`` and ``jobs.compiler.iceberg_catalog_ddl``.
    """

    # A failed check would otherwise print every input value, the S3 secret among them.
    model_config = _settings("PARITY_ICEBERG_") | SettingsConfigDict(hide_input_in_errors=True)

    catalog_type: Literal["jdbc", "rest"] = "jdbc"
    catalog_name: str = "parity"
    # SQLAlchemy URI for pyiceberg; the Java side gets the matching JDBC URI.
    # Defaults resolve against the working directory when the settings are read, not at import.
    catalog_uri: str = Field(
        default_factory=lambda: f"sqlite:///{(DEFAULT_HOME / 'iceberg' / 'catalog.db').resolve()}"
    )
    warehouse: str = Field(
        default_factory=lambda: f"file://{(DEFAULT_HOME / 'iceberg' / 'warehouse').resolve()}"
    )
    namespace: str = "features"
    catalog_user: str | None = None
    catalog_password: SecretStr | None = None
    # The REST catalog (catalog_type "rest"); the local stack's is `python -m stack up --only
    # s3,iceberg-rest`. The warehouse is then an s3:// location the server writes to.
    rest_uri: str = "http://127.0.0.1:18181"
    # Object storage for the data files: an S3-compatible endpoint (unset: AWS S3 itself),
    # its region and credentials. Path-style access (http://host/bucket/key) is what most
    # S3-compatible servers on one host need.
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_path_style_access: bool = False

    @model_validator(mode="after")
    def _rest_catalogs_write_object_storage(self) -> IcebergConfig:
        if self.catalog_type == "rest" and not self.warehouse.startswith(("s3://", "s3a://")):
            raise ValueError(
                "PARITY_ICEBERG_CATALOG_TYPE=rest needs PARITY_ICEBERG_WAREHOUSE=s3://<bucket>/<path>"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both PARITY_ICEBERG_S3_ACCESS_KEY_ID and PARITY_ICEBERG_S3_SECRET_ACCESS_KEY"
            )
        return self

    def jdbc_uri(self) -> str:
        """The same catalog database as a JDBC URI for Iceberg's Java JdbcCatalog."""
        uri = self.catalog_uri
        if uri.startswith("sqlite:///"):
            return "jdbc:sqlite:" + uri.removeprefix("sqlite://")
        if uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://")):
            return "jdbc:postgresql://" + uri.split("://", 1)[1].split("@")[-1]
        return uri


class FlinkJobConfig(BaseSettings):
    """How a compiled pipeline runs."""

    model_config = _settings("PARITY_FLINK_")

    parallelism: int = Field(default=2, ge=1)
    checkpoint_interval_s: float = Field(default=5.0, gt=0)
    checkpoint_dir: Path = DEFAULT_HOME / "checkpoints"
    # Records a Python function receives are handed over in bundles; smaller
    # bundles mean Redis sees tiles sooner, larger ones mean fewer round trips.
    python_bundle_size: int = Field(default=1000, ge=1)
    python_bundle_time_ms: int = Field(default=200, ge=1)
    # A Kafka partition with no new record for this long stops holding the watermark back
    # (0: never). Without it one quiet partition holds the view's completeness, as does every
    # partition with no new record after a restart or resume; with it, a partition's records
    # that arrive behind the others' watermark after its idle spell are late (counted,
    # archived, healed by a replay).
    source_idle_timeout_s: float = Field(default=0.0, ge=0)
    # Which operator writes tiles, completeness and late counts to Redis: "jvm", the
    # 'parity-redis' sink of jobs/jvm (no Python worker in the data path), or "python",
    # the vectorized Python functions of sinks.flink_udf. Both run the same Lua scripts.
    redis_sink: Literal["jvm", "python"] = "jvm"
    # Live totals also for a backlog's tiles, those that started more than the live state's
    # TTL (2 tiles + lateness) before the wall clock: off, a catch-up writes them closed
    # only, and the live state stays as small as a stream read as it happens needs
    # (jobs.compiler.CompiledPipeline.live_query).
    live_backlog: bool = False
    # Heap of the JVM that runs a local job's mini-cluster (`parity job run`; JVM_ARGS, when
    # set, wins). Unset, Java takes a quarter of the machine's memory and keeps what it grew
    # to. A standalone or Kubernetes cluster sizes its TaskManagers itself.
    local_heap: str = Field(default="768m", pattern=r"^\d+[mg]$")
    # Managed (off-heap) memory of that mini-cluster, which Flink SQL's window buffers use.
    # 768m and 64m keep a local job's process tree near 1.5 GB at the same rate; 512m of
    # heap cost it about a fifth of its rate in one run (bench/job_bench.py, README).
    local_managed_memory: str = Field(default="64m", pattern=r"^\d+[mg]$")
    # The JVM sink's batches: written when this many tiles wait, after this long, and
    # always before a checkpoint or on a watermark.
    redis_batch_size: int = Field(default=2000, ge=1)
    redis_batch_interval_ms: int = Field(default=200, ge=1)
    # Flink's Prometheus reporter for a streaming job in the local mini-cluster
    # (`parity job run`): a port or a range, one port per running job; "" turns it
    # off. Jobs on the standalone cluster use the cluster's reporter instead.
    metrics_ports: str = Field(default="19254-19257", pattern=r"^(\d{1,5}(-\d{1,5})?)?$")
