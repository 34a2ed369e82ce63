"""docker-compose.yml cannot run here (no Docker engine); hold it to the local stack's ports and names."""

from pathlib import Path

import yaml

from parity.config import KafkaConfig, RedisConfig, RegistryConfig
from stack.config import StackConfig

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def host_ports(service: dict) -> set[int]:
    # "127.0.0.1:19092:19092": address, host port, container port.
    return {int(str(p).split(":")[-2]) for p in service.get("ports", [])}


def test_compose_publishes_on_the_loopback_address_only():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = [str(p) for service in services.values() for p in service.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") and p.count(":") == 2 for p in published), published


def test_compose_publishes_the_ports_the_local_stack_uses():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    stack = StackConfig()
    assert stack.kafka_port in host_ports(services["kafka"])
    assert stack.registry_port in host_ports(services["registry"])
    assert stack.redis_port in host_ports(services["redis"])
    assert stack.flink_rest_port in host_ports(services["jobmanager"])
    assert stack.prometheus_port in host_ports(services["prometheus"])
    # The clients' defaults point at those same ports.
    assert KafkaConfig().bootstrap_servers.endswith(f":{stack.kafka_port}")
    assert f":{stack.registry_port}/apis/ccompat/v7" in RegistryConfig().url
    assert RedisConfig().port == stack.redis_port


def test_compose_registry_enforces_backward_and_kafka_keeps_records():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["registry"]["environment"]["APICURIO_RULES_GLOBAL_COMPATIBILITY"] == "BACKWARD"
    assert services["kafka"]["environment"]["KAFKA_LOG_RETENTION_MS"] == "-1"
