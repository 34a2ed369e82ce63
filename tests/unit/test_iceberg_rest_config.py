"""The REST catalog on object storage, chosen by configuration: settings, Flink DDL, pyiceberg properties."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.compiler import iceberg_catalog_ddl
from parity.config import IcebergConfig
from sinks import iceberg

REST = {
    "catalog_type": "rest",
    "rest_uri": "http://127.0.0.1:18181",
    "warehouse": "s3://parity/warehouse",
    "s3_endpoint": "http://127.0.0.1:19000",
    "s3_access_key_id": "parity",
    "s3_secret_access_key": "s3cr3t",
    "s3_path_style_access": True,
}


def test_jdbc_is_the_default_and_its_ddl_is_unchanged():
    cfg = IcebergConfig(catalog_uri="sqlite:////data/catalog.db", warehouse="file:///data/wh")
    assert cfg.catalog_type == "jdbc"
    ddl = iceberg_catalog_ddl(cfg)
    assert "'catalog-impl' = 'org.apache.iceberg.jdbc.JdbcCatalog'" in ddl
    assert "'uri' = 'jdbc:sqlite://data/catalog.db'" in ddl
    assert "catalog-type" not in ddl and "s3." not in ddl


def test_rest_ddl_names_the_server_and_s3fileio():
    ddl = iceberg_catalog_ddl(IcebergConfig(**REST))
    assert ddl.startswith("CREATE CATALOG `parity` WITH (")
    for option in (
        "'catalog-type' = 'rest'",
        "'uri' = 'http://127.0.0.1:18181'",
        "'warehouse' = 's3://parity/warehouse'",
        "'io-impl' = 'org.apache.iceberg.aws.s3.S3FileIO'",
        "'s3.endpoint' = 'http://127.0.0.1:19000'",
        "'s3.path-style-access' = 'true'",
        "'s3.access-key-id' = 'parity'",
        "'s3.secret-access-key' = 's3cr3t'",
        "'client.region' = 'us-east-1'",
    ):
        assert option in ddl
    assert "catalog-impl" not in ddl and "jdbc" not in ddl


def test_rest_on_aws_itself_leaves_endpoint_and_keys_to_the_sdk():
    cfg = IcebergConfig(catalog_type="rest", warehouse="s3://bucket/wh", s3_region="eu-west-1")
    ddl = iceberg_catalog_ddl(cfg)
    assert "s3.endpoint" not in ddl and "access-key" not in ddl
    assert "'s3.path-style-access' = 'false'" in ddl and "'client.region' = 'eu-west-1'" in ddl
    assert iceberg.s3_properties(cfg) == {"s3.region": "eu-west-1", "s3.force-virtual-addressing": "true"}


def test_pyiceberg_gets_its_own_property_names():
    assert iceberg.s3_properties(IcebergConfig(**REST)) == {
        "s3.region": "us-east-1",
        "s3.endpoint": "http://127.0.0.1:19000",
        "s3.access-key-id": "parity",
        "s3.secret-access-key": "s3cr3t",
        "s3.force-virtual-addressing": "false",
    }


def test_settings_come_from_the_environment_and_hide_the_secret(monkeypatch):
    for name, value in REST.items():
        monkeypatch.setenv(f"PARITY_ICEBERG_{name.upper()}", str(value))
    cfg = IcebergConfig()
    assert (cfg.catalog_type, cfg.s3_path_style_access) == ("rest", True)
    assert "s3cr3t" not in repr(cfg)


def test_rest_needs_an_object_storage_warehouse():
    with pytest.raises(ValidationError, match="PARITY_ICEBERG_WAREHOUSE=s3://"):
        IcebergConfig(catalog_type="rest", warehouse="file:///tmp/wh")


def test_keys_come_in_pairs_and_bad_values_are_not_echoed():
    with pytest.raises(ValidationError, match="set both") as info:
        IcebergConfig(**{**REST, "s3_access_key_id": None})
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ValidationError, match="catalog_type"):
        IcebergConfig(catalog_type="hive")


def test_an_unreachable_rest_catalog_is_a_config_error():
    from parity.errors import ConfigError

    cfg = IcebergConfig(**{**REST, "rest_uri": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match=r"cannot open the Iceberg REST catalog at http://127.0.0.1:9"):
        iceberg.open_catalog(cfg)
