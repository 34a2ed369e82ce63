"""Every connection secured at once: the producer, the streaming job and an online read end to end.

The test runs services of its own, all with certificates of one throwaway CA
(``stack.certs``):

- Kafka taking clients only on SASL_SSL with a SCRAM user (``PrivateKafka`` of
  test_kafka_secured);
- the schema registry (Apicurio, in memory) reachable only through the stack's
  TLS proxy with a basic-auth login (``stack.registry_tls``, nginx);
- Redis taking TLS only, its one ACL user limited to the test's keys
  (``tls_acl_server`` of test_redis_secured).

The schema is registered with the tooling's client, events are produced, and the
``user_stats`` job runs bounded in a local mini-cluster with the JVM decoder and
the JVM Redis sink, both secured. Redis' tiles and Iceberg's tiles must equal the
independent reference, and an online read through the secured Redis must equal
the reference's windows. A wrong registry password fails the producer and the
job at once, naming PARITY_REGISTRY_BASIC_AUTH_USER_INFO and never the password.
"""

from __future__ import annotations

import logging
import subprocess
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from features.user_stats import view as user_stats
from parity import jobctl
from parity.config import IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig
from parity.errors import ConfigError
from producer.config import ProducerConfig
from producer.generate import GeneratorConfig, generate
from producer.produce import produce_events, subject_for
from schemas import avro
from schemas.registry import RegistryClient
from serving.assembly import from_ms
from serving.online import OnlineStore
from stack import process, registry, registry_tls
from stack.artifacts import load
from stack.certs import Certs, make_certs
from stack.config import StackConfig
from stack.fetch import registry_dir
from tests.integration import reference
from tests.integration.conftest import assert_served_as_reference, closing_event, free_port, kill, wait_for
from tests.integration.test_kafka_secured import PASSWORD as KAFKA_PASSWORD
from tests.integration.test_kafka_secured import USER as KAFKA_USER
from tests.integration.test_kafka_secured import PrivateKafka
from tests.integration.test_pipeline import _expected_after_pruning, _iceberg_tiles, _redis_tiles
from tests.integration.test_redis_secured import PASSWORD as REDIS_PASSWORD
from tests.integration.test_redis_secured import tls_acl_server

pytestmark = pytest.mark.integration

REGISTRY_USER = "parity"
REGISTRY_PASSWORD = "s3cret-registry-password"
WRONG = "n0t-the-registry-password"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, REGISTRY_PASSWORD, WRONG)
PREFIX = "secured"
START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """This test brings every service it needs."""


class KeepingKafka(PrivateKafka):
    """The secured broker of test_kafka_secured, keeping records regardless of age, as the stack's does.

    The test's events are months old: with the default time-based retention the broker's first
    retention check (half a minute after it starts) deletes them, and a job then finds nothing to read.
    """

    def properties(self) -> str:
        return super().properties() + "log.retention.ms=-1\n"


class PrivateRegistry:
    """The stack's Apicurio on free ports, schemas in memory (gone with the test)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cfg = StackConfig(registry_port=free_port(), registry_management_port=free_port())
        self.log = folder / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        arts = load()
        app = registry_dir(StackConfig(), arts)
        if not (app / registry.LAUNCHER).is_file():
            pytest.skip(f"no Apicurio in {app}; run `python -m stack fetch`")
        java = process.java(arts.registry_java, search_jvm_dir=True)
        # The stack's settings, but storage in memory: no Kafka of its own to keep schemas in.
        options = [*registry.jvm_options(self.cfg), "-Dapicurio.storage.kind=sql"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [java, *options, "-jar", str(registry.launcher_jar(app))],
                cwd=self.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            self._answers, timeout=120, what="the private registry", detail=lambda: process.tail(self.log)
        )

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the private registry exited:\n{process.tail(self.log)}")
        return registry.is_up(self.cfg)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill(self.proc)
        self.proc = None


class Proxy:
    """The stack's registry proxy (nginx: TLS, basic auth) on a free port, in front of ``upstream``."""

    def __init__(self, folder: Path, certs: Certs, upstream: str) -> None:
        self.folder, self.certs, self.upstream = folder, certs, upstream
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{registry_tls.API}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = registry_tls.spawn(
            folder=self.folder,
            host="127.0.0.1",
            port=self.port,
            upstream=self.upstream,
            certs=self.certs,
            user=REGISTRY_USER,
            password=SecretStr(REGISTRY_PASSWORD),
            log_file=self.folder / "nginx.log",
            pid_file=self.folder / "nginx.pid.run",
        )
        wait_for(
            lambda: registry_tls.asks_for_login(self.url, self.certs.ca),
            timeout=20,
            what="the registry proxy",
            interval=0.1,
            detail=lambda: process.tail(self.folder / "nginx.log"),
        )

    def stop(self) -> None:
        if self.proc is not None:
            process.stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass(frozen=True)
class Secured:
    """Settings that reach the secured services, and the same as a job's environment."""

    kafka: KafkaConfig
    registry: RegistryConfig
    redis: RedisConfig
    iceberg: IcebergConfig
    workdir: Path

    def stores(self, topic: str) -> SimpleNamespace:
        """The Redis keys and the Iceberg namespace of one topic's job: each run is a view of its own.

        The keys stay under the ACL user's ``<PREFIX>:*``.
        """
        suffix = topic.rsplit("-", 1)[-1]
        return SimpleNamespace(
            redis=self.redis.model_copy(update={"key_prefix": f"{PREFIX}:{suffix}"}),
            iceberg=self.iceberg.model_copy(update={"namespace": f"secured{suffix}"}),
        )

    def env(self, topic: str, registry_user_info: str) -> dict[str, str]:
        """A job's settings; its state, keys and tables are its topic's, so no job resumes another's."""
        stores = self.stores(topic)
        return {
            "PARITY_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "PARITY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PARITY_KAFKA_SASL_USERNAME": KAFKA_USER,
            "PARITY_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
            "PARITY_KAFKA_SSL_CA_FILE": str(self.kafka.ssl_ca_file),
            "PARITY_REGISTRY_URL": self.registry.url,
            "PARITY_REGISTRY_BASIC_AUTH_USER_INFO": registry_user_info,
            "PARITY_REGISTRY_CA_FILE": str(self.registry.ca_file),
            "PARITY_REDIS_PORT": str(self.redis.port),
            "PARITY_REDIS_KEY_PREFIX": stores.redis.key_prefix,
            "PARITY_REDIS_USERNAME": "parity",
            "PARITY_REDIS_PASSWORD": REDIS_PASSWORD,
            "PARITY_REDIS_TLS": "true",
            "PARITY_REDIS_TLS_CA_FILE": str(self.redis.tls_ca_file),
            "PARITY_ICEBERG_CATALOG_URI": self.iceberg.catalog_uri,
            "PARITY_ICEBERG_WAREHOUSE": self.iceberg.warehouse,
            "PARITY_ICEBERG_NAMESPACE": stores.iceberg.namespace,
            "PARITY_FLINK_CHECKPOINT_DIR": str(self.workdir / topic / "checkpoints"),
            "PARITY_FLINK_CHECKPOINT_INTERVAL_S": "2",
            # One partition: one source subtask, none idle.
            "PARITY_FLINK_PARALLELISM": "1",
            "PARITY_FLINK_REDIS_SINK": "jvm",
            # The events are from March, a backlog by the wall clock: live totals for it
            # too, so the closer's open tile moves the head watermark the test checks.
            "PARITY_FLINK_LIVE_BACKLOG": "true",
            # The shared stack's jobs own the metrics ports.
            "PARITY_FLINK_METRICS_PORTS": "",
            # Flink's own log, kept with the test's files (and checked for secrets).
            "FLINK_LOG_DIR": str(self.workdir / topic / "flink-logs"),
        }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("secured-round-trip")
    certs = make_certs(workdir / "certs")
    broker = KeepingKafka({"ca": certs.ca, "other_ca": certs.other_ca, "keystore": certs.server_keystore})
    apicurio = PrivateRegistry(workdir)
    proxy = Proxy(workdir / "proxy", certs, f"127.0.0.1:{apicurio.cfg.registry_port}")
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    server = tls_acl_server(redis_dir, {"ca": certs.ca, "server": certs.server}, REDIS_PASSWORD, PREFIX)
    redis_cfg = RedisConfig(
        port=server.port,
        key_prefix=PREFIX,
        username="parity",
        password=SecretStr(REDIS_PASSWORD),
        tls=True,
        tls_ca_file=certs.ca,
    )
    server.client = {
        "ssl": True,
        "ssl_ca_certs": str(certs.ca),
        "username": "parity",
        "password": REDIS_PASSWORD,
    }
    try:
        broker.start()
        apicurio.start()
        proxy.start()
        server.start()
        yield Secured(
            kafka=broker.config(),
            registry=RegistryConfig(
                url=proxy.url,
                basic_auth_user_info=SecretStr(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"),
                ca_file=certs.ca,
            ),
            redis=redis_cfg,
            iceberg=IcebergConfig(
                catalog_uri=f"sqlite:///{workdir / 'catalog.db'}",
                warehouse=f"file://{workdir / 'warehouse'}",
            ),
            workdir=workdir,
        )
    finally:
        server.stop()
        proxy.stop()
        apicurio.stop()
        broker.stop()


def _events() -> list[dict[str, Any]]:
    cfg = GeneratorConfig(users=30, events=1500, start=START, span=timedelta(days=2), seed=5)
    return generate(cfg)


def _closer(after: datetime) -> dict[str, Any]:
    """An event three days on: it moves the watermark past every tile of the test's events."""
    return closing_event(after, "closer", "zz-closer")


def _run_job(secured: Secured, topic: str, user_info: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = jobctl.stream_command("user_stats", bounded=True, group_id=f"{topic}-job", topic=topic)
    return jobctl.start_local(cmd, log, env=secured.env(topic, user_info))


def _wait(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        pytest.fail(f"the job did not finish in {timeout} s:\n{process.tail(log, 40)}")


def _flink_logs(secured: Secured, topic: str) -> str:
    logs = sorted((secured.workdir / topic / "flink-logs").glob("*"))
    assert logs, "the job wrote no Flink log"
    return "".join(p.read_text(errors="replace") for p in logs)


def _no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_events_through_every_secured_service_equal_the_reference(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    schema = avro.latest(user_stats.source.schema)
    with RegistryClient(secured.registry) as client:
        assert client.reachable()
        schema_id = client.register(subject_for(topic), schema.text)
    events = _events()
    closer = _closer(max(e["event_time"] for e in events))
    summary = produce_events(
        [*events, closer], topic, secured.kafka, secured.registry, schema_version=schema.version
    )
    assert (summary.sent, summary.failed) == (len(events) + 1, 0)

    log = secured.workdir / f"job-{topic}.log"
    assert _wait(_run_job(secured, topic, f"{REGISTRY_USER}:{REGISTRY_PASSWORD}", log), log, 420) == 0, (
        process.tail(log, 60)
    )
    job_log = log.read_text(errors="replace")

    stores = secured.stores(topic)
    ref_tiles = reference.tiles(events)
    _, iceberg_rows = _iceberg_tiles(stores)
    assert iceberg_rows == ref_tiles
    users = sorted({user for user, _ in ref_tiles})
    redis_rows, completeness = _redis_tiles(stores, users)
    assert redis_rows == _expected_after_pruning(ref_tiles)
    assert completeness == max(start for _, start in ref_tiles) + reference.HOUR_MS

    # An online read through the secured Redis, as of the last complete hour, equals the
    # reference's sliding windows.
    windows = reference.Windows(events)
    store = OnlineStore(stores.redis, {"user_stats": user_stats})
    try:
        refs = [f"user_stats:{f}" for f in user_stats.feature_names]
        online = store.get_online_features(refs, [{"user_id": u} for u in users], as_of=from_ms(completeness))
        # Only the JVM sink writes live tiles: the closer's open tile moved the head watermark.
        heads = store.head_watermarks()
    finally:
        store.close()
    assert heads == {"user_stats": reference.ms(closer["event_time"])}
    assert assert_served_as_reference(windows, users, online, completeness) > 0

    # The registry knows the id the records carry, and nothing else of the login leaks.
    with RegistryClient(secured.registry) as client:
        assert client.lookup(subject_for(topic), schema.text) is not None
    assert schema_id > 0
    _no_secret_in(job_log, caplog.text, _flink_logs(secured, topic))


def test_a_wrong_registry_password_fails_the_producer_and_the_job_naming_the_setting(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    topic = f"secured-wrong-{uuid.uuid4().hex[:8]}"
    wrong = secured.registry.model_copy(
        update={"basic_auth_user_info": SecretStr(f"{REGISTRY_USER}:{WRONG}")}
    )

    with pytest.raises(ConfigError) as refused:
        produce_events(
            _events()[:3],
            topic,
            secured.kafka,
            wrong,
            tuning=ProducerConfig(connect_timeout_s=10.0, flush_timeout_s=10.0),
        )
    message = str(refused.value)
    assert message == (
        f"the schema registry at {secured.registry.url} refused the login of user '{REGISTRY_USER}' "
        "(HTTP 401); check PARITY_REGISTRY_BASIC_AUTH_USER_INFO"
    )
    with (
        RegistryClient(wrong) as client,
        pytest.raises(ConfigError, match="PARITY_REGISTRY_BASIC_AUTH_USER_INFO"),
    ):
        client.reachable()

    # The job refuses to start: the decoder asks the registry once while the job is planned.
    produced = produce_events([_closer(START)], topic, secured.kafka, secured.registry)
    assert produced.failed == 0
    log = secured.workdir / f"job-{topic}.log"
    code = _wait(_run_job(secured, topic, f"{REGISTRY_USER}:{WRONG}", log), log, 240)
    job_log = log.read_text(errors="replace")
    assert code != 0
    assert (
        f"refused the login of user '{REGISTRY_USER}' (HTTP 401); check PARITY_REGISTRY_BASIC_AUTH_USER_INFO"
        in job_log
    ), process.tail(log, 60)
    _no_secret_in(
        job_log, caplog.text, _flink_logs(secured, topic), "".join(traceback.format_exception(refused.value))
    )


def test_the_proxy_refuses_anonymous_and_untrusted_clients(secured: Secured) -> None:
    """What the registry's clients rely on: no answer without the login, and no plain http."""
    url = secured.registry.url + "/subjects"
    request = urllib.request.Request(url)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(request, timeout=5)
    system_cas = secured.registry.model_copy(update={"ca_file": None})
    with (
        RegistryClient(system_cas) as client,
        pytest.raises(ConfigError, match="check PARITY_REGISTRY_CA_FILE"),
    ):
        client.reachable()
