import pytest
from pydantic import ValidationError

from stack import flink, kafka, redis, registry
from stack.config import StackConfig


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("PARITY_STACK_JOB_VENV", raising=False)
    return StackConfig(home=tmp_path / "home", cache=tmp_path / "cache", job_venv=tmp_path / "venv")


def test_default_ports_and_paths(monkeypatch):
    for var in ("HOME", "CACHE", "JOB_VENV", "KAFKA_PORT", "REDIS_PORT"):
        monkeypatch.delenv(f"PARITY_STACK_{var}", raising=False)
    cfg = StackConfig()
    assert (cfg.kafka_port, cfg.kafka_controller_port) == (19092, 19093)
    assert (cfg.registry_port, cfg.registry_management_port) == (18081, 18091)
    assert (cfg.redis_port, cfg.flink_rest_port, cfg.flink_rpc_port) == (16379, 18088, 16123)
    assert cfg.host == "127.0.0.1"
    assert cfg.home_dir.is_absolute()
    assert cfg.home_dir.name == ".parity"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("PARITY_STACK_REDIS_PORT", "26379")
    monkeypatch.setenv("PARITY_STACK_FLINK_EXTRA_CONF", '{"metrics.reporter.prom.port": "19250"}')
    cfg = StackConfig()
    assert cfg.redis_port == 26379
    assert cfg.flink_extra_conf == {"metrics.reporter.prom.port": "19250"}


def test_unknown_setting_is_rejected():
    with pytest.raises(ValidationError):
        StackConfig(bogus=1)  # type: ignore[call-arg]


def test_port_range_is_checked():
    with pytest.raises(ValidationError):
        StackConfig(redis_port=70000)


def test_one_taskmanager_by_default_more_from_the_environment(monkeypatch):
    monkeypatch.delenv("PARITY_STACK_FLINK_TASKMANAGERS", raising=False)
    assert StackConfig().flink_taskmanagers == 1
    monkeypatch.setenv("PARITY_STACK_FLINK_TASKMANAGERS", "3")
    assert StackConfig().flink_taskmanagers == 3
    with pytest.raises(ValidationError):
        StackConfig(flink_taskmanagers=0)


def test_metrics_ports_must_fit_every_flink_daemon():
    # The default range (4 ports) fits the JobManager and three TaskManagers.
    assert StackConfig(flink_taskmanagers=3).flink_metrics_ports == (19250, 19253)
    with pytest.raises(ValidationError, match="widen PARITY_STACK_FLINK_METRICS_PORTS"):
        StackConfig(flink_taskmanagers=4)
    assert StackConfig(flink_taskmanagers=4, flink_metrics_ports=(19260, 19264)).flink_taskmanagers == 4
    with pytest.raises(ValidationError, match="not a port range"):
        StackConfig(flink_metrics_ports=(19253, 19250))


def test_kafka_properties_single_node_kraft(cfg, tmp_path):
    props = dict(
        line.split("=", 1) for line in kafka.server_properties(cfg, tmp_path / "data").splitlines() if line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["num.partitions"] == "2"
    assert props["auto.create.topics.enable"] == "true"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["log.dirs"] == str(tmp_path / "data")


def test_kafka_config_files_are_written_once_per_cluster(cfg):
    paths = kafka.write_config(cfg)
    first_id = paths["cluster_id"].read_text()
    kafka.write_config(cfg)
    assert paths["cluster_id"].read_text() == first_id  # the formatted storage keeps its id
    assert "Console" in paths["log4j"].read_text()
    assert paths["props"].parent == cfg.home_dir / "kafka"


def test_cluster_id_shape():
    for _ in range(50):
        cid = kafka.new_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")


def test_kafka_metadata_request_frame():
    frame = kafka._metadata_request()
    size = int.from_bytes(frame[:4], "big")
    assert size == len(frame) - 4
    assert frame[4:8] == b"\x00\x03\x00\x04"  # api key 3 (Metadata), version 4


def test_registry_enforces_backward_compatibility(cfg):
    opts = registry.jvm_options(cfg)
    assert "-Dapicurio.rules.global.compatibility=BACKWARD" in opts
    assert "-Dquarkus.http.host=127.0.0.1" in opts
    assert "-Dquarkus.management.port=18091" in opts
    assert registry.url(cfg) == "http://127.0.0.1:18081/apis/ccompat/v7"


def test_registry_launcher_both_layouts(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "quarkus-run.jar").write_bytes(b"x")
    assert registry.launcher_jar(tmp_path / "new").name == "quarkus-run.jar"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "apicurio-registry-app-3.0.9-runner.jar").write_bytes(b"x")
    assert registry.launcher_jar(tmp_path / "old").name.endswith("-runner.jar")


def test_redis_config(cfg, tmp_path):
    text = redis.config_text(cfg, tmp_path)
    assert "bind 127.0.0.1\n" in text
    assert "port 16379\n" in text
    assert 'save ""\n' in text
    assert "daemonize no\n" in text
    assert f"dir {tmp_path}\n" in text
    # An evicting Redis would drop tiles silently.
    assert "maxmemory-policy noeviction\n" in text


def test_flink_settings(cfg):
    conf = flink.settings(cfg)
    assert conf["rest.port"] == "18088"
    assert conf["jobmanager.rpc.port"] == "16123"
    assert conf["rest.bind-address"] == conf["jobmanager.bind-host"] == "127.0.0.1"
    assert conf["taskmanager.numberOfTaskSlots"] == "2"
    assert conf["jobmanager.memory.process.size"] == "1024m"
    assert conf["taskmanager.memory.process.size"] == "2048m"
    # Ephemeral, so that several TaskManagers share the host.
    assert conf["taskmanager.rpc.port"] == conf["taskmanager.data.port"] == "0"
    # The venv's python is a symlink: it must not be resolved out of the venv.
    assert conf["python.executable"] == str(cfg.job_venv_dir / "bin" / "python")


def test_flink_extra_settings_win(tmp_path):
    cfg = StackConfig(home=tmp_path, flink_extra_conf={"parallelism.default": "1"})
    assert flink.settings(cfg)["parallelism.default"] == "1"
