"""The optional s3 and iceberg-rest services: named only, pinned, configured from settings."""

from __future__ import annotations

from pathlib import Path

from stack import cli, iceberg_rest, s3
from stack.artifacts import load, parse
from stack.config import StackConfig

MINIMAL = """
[flink]
jars = ["org.example:a:1"]
[kafka]
artifacts = ["org.apache.kafka:kafka_2.13:4.1.1"]
[registry]
artifact = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
[debian]
binaries = {}
"""


def test_optional_services_run_only_when_named():
    assert "s3" not in [s.name for s in cli.selected(None)]
    assert [s.name for s in cli.selected("iceberg-rest,s3")] == ["s3", "iceberg-rest"]
    assert [s.name for s in cli.selected("redis,s3")] == ["redis", "s3"]


def test_versions_are_pinned_with_the_flink_runtime_s_iceberg():
    arts = load()
    assert arts.s3 is not None and arts.s3.classifier == "jar-with-dependencies"
    runtime = next(c for c in arts.flink_jars if c.artifact.startswith("iceberg-flink-runtime"))
    bundle = next(c for c in arts.flink_jars if c.artifact == "iceberg-aws-bundle")
    assert bundle.version == runtime.version
    assert {c.version for c in arts.iceberg_rest if c.group == "org.apache.iceberg"} == {runtime.version}
    assert any(c.classifier == "tests" and c.artifact == "iceberg-core" for c in arts.iceberg_rest)


def test_sections_of_optional_services_may_be_absent():
    arts = parse(MINIMAL, Path("x.toml"))
    assert arts.s3 is None and arts.iceberg_rest == ()


def test_the_catalog_writes_the_s3_server_s_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_STACK_S3_PORT", "19555")
    monkeypatch.setenv("PARITY_STACK_S3_BUCKET", "lake")
    cfg = StackConfig(home=tmp_path)
    props = iceberg_rest.catalog_properties(cfg, iceberg_rest.IcebergRestSettings(), s3.S3Settings())
    assert props["warehouse"] == "s3://lake/warehouse" == iceberg_rest.warehouse()
    assert props["s3.endpoint"] == "http://127.0.0.1:19555"
    assert props["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert props["uri"] == f"jdbc:sqlite:{tmp_path.absolute()}/iceberg-rest/catalog.db"
    text = s3.config_text(cfg, s3.S3Settings(), tmp_path / "data")
    assert "s3proxy.endpoint=http://127.0.0.1:19555\n" in text
    assert "jclouds.provider=filesystem-nio2\n" in text


def test_nothing_answers_means_down(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_STACK_S3_PORT", "9")
    monkeypatch.setenv("PARITY_STACK_ICEBERG_REST_PORT", "9")
    cfg = StackConfig(home=tmp_path)
    assert not s3.is_up(cfg) and not iceberg_rest.is_up(cfg)
    assert not s3.info(cfg).up and iceberg_rest.info(cfg).pid is None
