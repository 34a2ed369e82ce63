import pytest

from parity.errors import StackError
from stack import fetch
from stack.artifacts import parse
from stack.config import StackConfig

ARTS = parse(
    """
[flink]
jars = ["org.example:conn:2.0", "org.example:driver:1.1"]
[kafka]
artifacts = ["org.apache.kafka:kafka_2.13:4.1.1"]
[registry]
artifact = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
[debian]
binaries = { redis-server = "redis-server", promtool = "prometheus" }
"""
)


@pytest.fixture
def cfg(tmp_path):
    venv = tmp_path / "venv"
    pyflink = venv / "lib" / "python3.11" / "site-packages" / "pyflink"
    (pyflink / "bin").mkdir(parents=True)
    (pyflink / "lib").mkdir()
    (pyflink / "bin" / "flink").write_text("#!/bin/sh\n")
    (pyflink / "bin" / "taskmanager.sh").write_text("#!/bin/sh\n")
    (pyflink / "lib" / "flink-dist-2.2.1.jar").write_bytes(b"dist")
    cache = tmp_path / "cache" / "flink-jars"
    cache.mkdir(parents=True)
    # Cached jars: fetch_jar then never calls Maven.
    (cache / "conn-2.0.jar").write_bytes(b"conn2")
    (cache / "driver-1.1.jar").write_bytes(b"driver")
    return StackConfig(home=tmp_path / "home", cache=tmp_path / "cache", job_venv=venv)


def lib_names(cfg: StackConfig) -> list[str]:
    return sorted(p.name for p in (fetch.pyflink_dir(cfg) / "lib").glob("*.jar"))


def test_install_copies_jars_and_removes_stale_ones(cfg):
    lib = fetch.pyflink_dir(cfg) / "lib"
    (lib / "conn-1.0.jar").write_bytes(b"old")  # an older version of our jar
    (lib / "connector-extra-1.0.jar").write_bytes(b"not ours")
    fetch.install_flink_jars(cfg, ARTS)
    assert lib_names(cfg) == [
        "conn-2.0.jar",
        "connector-extra-1.0.jar",
        "driver-1.1.jar",
        "flink-dist-2.2.1.jar",
    ]
    assert (fetch.pyflink_dir(cfg) / "bin" / "taskmanager.sh").stat().st_mode & 0o111


def test_install_is_idempotent_and_drops_jars_no_longer_listed(cfg):
    fetch.install_flink_jars(cfg, ARTS)
    fetch.install_flink_jars(cfg, ARTS)
    assert lib_names(cfg) == ["conn-2.0.jar", "driver-1.1.jar", "flink-dist-2.2.1.jar"]
    fewer = parse(
        """
[flink]
jars = ["org.example:conn:2.0"]
[kafka]
artifacts = ["org.apache.kafka:kafka_2.13:4.1.1"]
[registry]
artifact = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
[debian]
binaries = {}
"""
    )
    fetch.install_flink_jars(cfg, fewer)
    assert lib_names(cfg) == ["conn-2.0.jar", "flink-dist-2.2.1.jar"]


def test_missing_job_venv_names_the_fix(tmp_path):
    cfg = StackConfig(home=tmp_path, cache=tmp_path, job_venv=tmp_path / "nope")
    with pytest.raises(StackError, match=r"no PyFlink in the job venv .*pip install -e '\.\[job\]'"):
        fetch.pyflink_dir(cfg)


def test_missing_packages(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None if name == "promtool" else f"/usr/bin/{name}")
    assert fetch.missing_packages(ARTS) == ["prometheus"]


def test_packages_need_root(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(StackError, match="apt-get install -y prometheus redis-server"):
        fetch.install_packages(ARTS)


def test_missing_maven_names_the_fix(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match="apt-get install -y maven"):
        fetch._mvn()


def test_downloaded_kafka_is_not_fetched_again(cfg, monkeypatch):
    folder = fetch.kafka_dir(cfg, ARTS)
    folder.mkdir(parents=True)
    (folder / "kafka_2.13-4.1.1.jar").write_bytes(b"k")
    (folder / fetch.DONE).write_text("kafka_2.13-4.1.1.jar\n")
    monkeypatch.setattr(fetch, "_run", lambda *a: pytest.fail("Maven must not run"))
    assert fetch.fetch_kafka(cfg, ARTS) == folder


def test_failed_download_reports_command_output(cfg, monkeypatch, tmp_path):
    mvn = tmp_path / "mvn"
    mvn.write_text("#!/bin/sh\necho 'Could not resolve artifact org.example:gone:9' >&2\nexit 1\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    gone = parse(
        """
[flink]
jars = ["org.example:gone:9"]
[kafka]
artifacts = ["org.apache.kafka:kafka_2.13:4.1.1"]
[registry]
artifact = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
[debian]
binaries = {}
"""
    )
    with pytest.raises(StackError, match=r"(?s)fetching org.example:gone:9 failed.*Could not resolve"):
        fetch.fetch_jar(gone.flink_jars[0], tmp_path / "jars")
