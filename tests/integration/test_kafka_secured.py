"""Kafka behind SASL_SSL: a private broker with throwaway certificates and a SCRAM user.

The broker (the stack's Kafka distribution, one KRaft node on free ports) takes
clients only on a SASL_SSL listener, with SCRAM-SHA-512 (user created when the
storage is formatted) and PLAIN (users in the listener's JAAS settings); its
certificate comes from a CA made for the test (``stack.certs``). The producer
writes there and a consumer built by ``parity.kafka_security`` reads back; a
wrong password, a plain client and an unknown CA fail at once with an error
naming the setting to fix, and no password ever shows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from jobs.offsets import TopicOffsets
from parity.config import KafkaConfig, RegistryConfig
from parity.errors import ConfigError, ParityError
from parity.jobctl import PROJECT_ROOT, job_python
from parity.kafka_security import librdkafka_config
from producer.config import ProducerConfig
from producer.produce import ProduceSummary, produce_events
from stack import process
from stack.artifacts import load
from stack.certs import make_certs as stack_certs
from stack.config import StackConfig
from stack.fetch import kafka_dir
from stack.kafka import LOG4J2, new_cluster_id
from tests.integration.conftest import free_port, wait_for

pytestmark = pytest.mark.integration

USER = "parity"
PASSWORD = "s3cret-kafka-password"
WRONG = "n0t-the-kafka-password"


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """This test brings its own broker."""


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1, and a second CA nobody uses."""
    certs = stack_certs(folder)
    return {"ca": certs.ca, "other_ca": certs.other_ca, "keystore": certs.server_keystore}


class PrivateKafka:
    """One KRaft node of the stack's Kafka on free ports, clients only on SASL_SSL.

    1. ``start`` formats the storage with the SCRAM user, starts the broker and waits
       for the TLS port to take connections.
    2. ``stop`` kills the broker (and its process group) and removes its folder, also
       when the test failed.
    """

    def __init__(self, certs: dict[str, Path]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="parity-kafka-secured-"))
        self.port, self.internal_port, self.controller_port = free_port(), free_port(), free_port()
        self.certs = certs
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "broker.log"

    def properties(self) -> str:
        h, port, internal, ctl = "127.0.0.1", self.port, self.internal_port, self.controller_port
        plain_users = f'username="{USER}" password="{PASSWORD}" user_{USER}="{PASSWORD}"'
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{h}:{ctl}",
            # Clients get the SASL_SSL listener only; the broker talks to itself in plain.
            "listeners": f"SASL_SSL://{h}:{port},INTERNAL://{h}:{internal},CONTROLLER://{h}:{ctl}",
            "advertised.listeners": f"SASL_SSL://{h}:{port},INTERNAL://{h}:{internal},CONTROLLER://{h}:{ctl}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.certs["keystore"]),
            "log.dirs": str(self.folder / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _jvm(self) -> list[str]:
        folder = kafka_dir(StackConfig(), load())
        if not any(folder.glob("kafka_*.jar")):
            pytest.skip(f"no Kafka jars in {folder}; run `python -m stack fetch`")
        log4j = self.folder / "log4j2.properties"
        log4j.write_text(LOG4J2)
        options = "-Xmx384m -Xms128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
        return [process.java(), *options.split(), f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{folder}/*"]

    def start(self) -> None:
        props = self.folder / "server.properties"
        props.write_text(self.properties())
        jvm = self._jvm()
        scram = f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"
        with self.log.open("ab") as out:
            storage = [
                "format",
                "--standalone",
                "-t",
                new_cluster_id(),
                "-c",
                str(props),
                "--add-scram",
                scram,
            ]
            subprocess.run(
                [*jvm, "kafka.tools.StorageTool", *storage], stdout=out, stderr=subprocess.STDOUT, check=True
            )
            self.proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(props)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            self._listening,
            timeout=60,
            what=f"the secured broker on port {self.port}",
            interval=0.25,
            detail=lambda: process.tail(self.log),
        )

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the secured broker exited:\n{process.tail(self.log)}")
        return "Kafka Server started" in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def config(self, **changes: object) -> KafkaConfig:
        """Settings that reach the SASL_SSL listener as ``parity``, with ``changes``."""
        settings: dict[str, object] = {
            "bootstrap_servers": f"127.0.0.1:{self.port}",
            "security_protocol": "SASL_SSL",
            "sasl_username": USER,
            "sasl_password": PASSWORD,
            "ssl_ca_file": self.certs["ca"],
        }
        return KafkaConfig(**(settings | changes))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    server = PrivateKafka(make_certs(tmp_path_factory.mktemp("kafka-certs")))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def error_text(exc: BaseException) -> str:
    """Everything an operator could see of an error: its chain, reprs and traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def no_password_shown(logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], *texts: str) -> None:
    """Neither password in the logs, librdkafka's own lines on stderr, or ``texts``."""
    out, err = capfd.readouterr()
    for text in [logs.text, out, err, *texts]:
        assert PASSWORD not in text
        assert WRONG not in text


def events(count: int) -> list[dict[str, object]]:
    return [{"user_id": f"u{i}", "event_time": 1_700_000_000_000 + i} for i in range(count)]


def as_json(event: object, _ctx: object) -> bytes:
    """The test's own serializer: no schema registry needed to prove the transport."""
    return json.dumps(event).encode()


def produce(cfg: KafkaConfig, topic: str, count: int = 5, connect_timeout_s: float = 10.0) -> ProduceSummary:
    tuning = ProducerConfig(connect_timeout_s=connect_timeout_s, flush_timeout_s=10.0)
    return produce_events(events(count), topic, cfg, RegistryConfig(), tuning=tuning, serializer=as_json)


def read_back(cfg: KafkaConfig, topic: str, count: int) -> list[dict[str, object]]:
    consumer = Consumer(
        librdkafka_config(cfg) | {"group.id": f"{topic}-check", "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        values: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(json.loads(message.value()))
        return values
    finally:
        consumer.close()


def topic_name() -> str:
    return f"secured-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_producer_writes_and_a_consumer_reads_back(
    broker: PrivateKafka, mechanism: str, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg, topic = broker.config(sasl_mechanism=mechanism), topic_name()
    summary = produce(cfg, topic)
    assert (summary.sent, summary.failed) == (5, 0)
    assert sorted(e["user_id"] for e in read_back(cfg, topic, 5)) == [f"u{i}" for i in range(5)]
    offsets = TopicOffsets(cfg, topic, f"{topic}-job")
    try:
        assert sum(offsets.ends().values()) == 5
    finally:
        offsets.close()
    no_password_shown(logs, capfd, repr(cfg), str(cfg))


def test_password_file(broker: PrivateKafka, tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    cfg, topic = broker.config(sasl_password=None, sasl_password_file=secret), topic_name()
    assert produce(cfg, topic, count=1).sent == 1


def test_wrong_password_fails_at_once_naming_the_settings(
    broker: PrivateKafka, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        produce(broker.config(sasl_password=WRONG), topic_name())
    assert time.monotonic() - started < 3.0
    message = str(info.value)
    assert message.startswith(f"Kafka refused the SASL login of user '{USER}' (SCRAM-SHA-512)")
    assert "PARITY_KAFKA_SASL_USERNAME / PARITY_KAFKA_SASL_PASSWORD" in message
    no_password_shown(logs, capfd, error_text(info.value))


def test_unknown_ca_fails_at_once_naming_the_ca_setting(
    broker: PrivateKafka, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(
        ConfigError, match=r"the TLS handshake with Kafka .* failed; check PARITY_KAFKA_SSL_CA_FILE"
    ):
        produce(broker.config(ssl_ca_file=broker.certs["other_ca"]), topic_name())
    assert time.monotonic() - started < 3.0
    no_password_shown(logs, capfd)


def test_plain_client_on_the_tls_port_is_told_to_turn_tls_on(broker: PrivateKafka) -> None:
    plain = KafkaConfig(bootstrap_servers=f"127.0.0.1:{broker.port}")
    with pytest.raises(ParityError) as info:
        produce(plain, topic_name(), connect_timeout_s=2.0)
    assert not isinstance(info.value, ConfigError)
    assert "takes TLS connections only, set PARITY_KAFKA_SECURITY_PROTOCOL to SASL_SSL or SSL" in str(
        info.value
    )


# Runs in the job runtime: a bounded Flink read of the topic with the job's Kafka options.
FLINK_READ = """
import json, sys
from pyflink.table import EnvironmentSettings, TableEnvironment
from jobs.compiler import literal
from parity.config import KafkaConfig
from parity.kafka_security import flink_properties

topic = sys.argv[1]
env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
env.get_config().set("parallelism.default", "1")
options = {"connector": "kafka", "topic": topic, **flink_properties(KafkaConfig()),
           "properties.group.id": topic, "scan.startup.mode": "earliest-offset",
           "scan.bounded.mode": "latest-offset", "format": "raw"}
body = ", ".join(f"{literal(k)} = {literal(v)}" for k, v in options.items())
env.execute_sql(f"CREATE TEMPORARY TABLE t (v BYTES) WITH ({body})")
with env.execute_sql("SELECT v FROM t").collect() as rows:
    print(json.dumps(sorted(json.loads(bytes(r[0]))["user_id"] for r in rows)))
"""


def test_flink_reads_the_secured_topic(broker: PrivateKafka, tmp_path: Path) -> None:
    """The connector options of the job's tables (SCRAM over TLS, PEM trust store) reach the topic."""
    cfg, topic = broker.config(), topic_name()
    assert produce(cfg, topic, count=3).sent == 3
    env = os.environ | {
        "PARITY_KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap_servers,
        "PARITY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PARITY_KAFKA_SASL_USERNAME": USER,
        "PARITY_KAFKA_SASL_PASSWORD": PASSWORD,
        "PARITY_KAFKA_SSL_CA_FILE": str(broker.certs["ca"]),
        "FLINK_LOG_DIR": str(tmp_path / "flink-logs"),
    }
    done = subprocess.run(
        [str(job_python()), "-c", FLINK_READ, topic],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["u0", "u1", "u2"]
    flink_logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "flink-logs").glob("*"))
    assert "sasl.jaas.config = [hidden]" in flink_logs
    for text in (done.stdout, done.stderr, flink_logs):
        assert PASSWORD not in text
