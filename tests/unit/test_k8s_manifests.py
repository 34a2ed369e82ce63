"""deploy/k8s: every manifest is valid for what applies it, and the manifests agree with each other.

1. The FlinkDeployment validates, strictly, against the openAPIV3Schema of the served version
   of the Flink Kubernetes Operator's CRD (deploy/k8s/schemas/); a misspelt upgradeMode fails.
2. Every other object validates against Kubernetes' own schema (v1.34, strict), cut from the
   kubernetes-validate package into deploy/k8s/schemas/; a misspelt field fails.
3. What no schema sees: selectors match their pods, Services and probes name real ports, the
   cluster-create Job names every Redis pod, every PARITY_* variable is a real setting and the
   ConfigMap's values parse, every Secret and ConfigMap reference resolves, and the job's Flink
   settings agree with jobs/stream.py and the ConfigMap.
4. redis.conf, with the StatefulSet's arguments, starts redis-server in cluster mode
   (on a unix socket in a temporary folder; the cluster bus on a free loopback port).
5. prometheus.yml passes ``promtool check config`` with the rule files of deploy/prometheus.

Nothing here talks to a Kubernetes cluster: the API server's own checks (admission, the
operator's webhook) are not run.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml
from pydantic_settings import BaseSettings

from parity import config
from tests.unit.test_argo_template import strict
from tests.unit.test_serving_alert_rules import promtool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRD = K8S / "schemas" / "flinkdeployments.flink.apache.org-v1.yml"
KUBERNETES = K8S / "schemas" / "kubernetes-v1.34.0-strict.json"
MANIFESTS = sorted(K8S.glob("*.yaml"))
SETTINGS: tuple[type[BaseSettings], ...] = (
    config.KafkaConfig,
    config.RegistryConfig,
    config.RedisConfig,
    config.IcebergConfig,
    config.FlinkJobConfig,
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def flink_validator() -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == "FlinkDeployment"
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    assert f"{crd['spec']['group']}/{version['name']}" == one("FlinkDeployment")["apiVersion"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # The generated schema lists spec and status only: the API server checks these three of
    # every custom resource itself.
    schema["properties"] |= {
        "apiVersion": {"type": "string", "enum": [f"{crd['spec']['group']}/{version['name']}"]},
        "kind": {"type": "string", "enum": [crd["spec"]["names"]["kind"]]},
        "metadata": {"type": "object"},
    }
    return jsonschema.Draft4Validator(strict(schema))


def kubernetes_validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Kubernetes' schema of the doc's apiVersion and kind (``apps/v1`` → ``io.k8s.api.apps.v1``)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    bundle = yaml.safe_load(KUBERNETES.read_text())
    name = f"io.k8s.api.{group or 'core'}.{version}.{doc['kind']}"
    assert name in bundle["$defs"], f"{name} is not in {KUBERNETES.name}"
    return jsonschema.Draft202012Validator({**bundle, "$ref": f"#/$defs/{name}"})


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a workload's pod template (a FlinkDeployment's too)."""
    template = doc["spec"].get("template") or doc["spec"]["podTemplate"]
    return list(template["spec"]["containers"])


def env_names(doc: dict[str, Any]) -> set[str]:
    return {env["name"] for envs in refs(doc, "env") for env in envs}


def refs(node: Any, key: str) -> list[dict[str, Any]]:
    """Every value under ``key`` anywhere in ``node`` (e.g. each secretKeyRef)."""
    if isinstance(node, dict):
        own = [node[key]] if key in node else []
        return own + [ref for value in node.values() for ref in refs(value, key)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item, key)]
    return []


def setting_names() -> set[str]:
    return {
        f"{model.model_config.get('env_prefix', '')}{field}".upper()
        for model in SETTINGS
        for field in model.model_fields
    }


def test_the_schemas_name_where_they_came_from():
    head = CRD.read_text().split("apiVersion:", 1)[0]
    assert "github.com/apache/flink-kubernetes-operator, tag release-1.15.0" in head
    assert "Apache-2.0" in head
    comment = yaml.safe_load(KUBERNETES.read_text())["$comment"]
    assert "kubernetes-validate 1.37.0" in comment
    assert "Apache-2.0" in comment


def test_every_manifest_is_a_kind_this_test_validates():
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == sorted(
        [
            "FlinkDeployment",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Service",
            "Service",
            "StatefulSet",
            "Job",
        ]
    )
    for doc in documents():
        assert DNS_LABEL.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "the namespace is chosen at apply time (kubectl -n)"


def test_the_flink_deployment_validates_against_the_operator_crd():
    flink_validator().validate(one("FlinkDeployment"))


def test_a_misspelt_upgrade_mode_fails_validation():
    doc = copy.deepcopy(one("FlinkDeployment"))
    doc["spec"]["job"]["upgradeMode"] = "last_state"
    with pytest.raises(jsonschema.ValidationError, match="last_state"):
        flink_validator().validate(doc)


@pytest.mark.parametrize(
    "doc",
    [d for d in documents() if d["kind"] != "FlinkDeployment"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_each_kubernetes_object_validates_against_kubernetes_schema(doc):
    kubernetes_validator(doc).validate(doc)


def test_a_misspelt_statefulset_field_fails_validation():
    doc = copy.deepcopy(one("StatefulSet"))
    doc["spec"]["replica"] = doc["spec"].pop("replicas")
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        kubernetes_validator(doc).validate(doc)


def test_the_flink_job_runs_stream_py_for_user_stats_with_last_state_upgrades():
    spec = one("FlinkDeployment")["spec"]
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    args = job["args"]
    assert args[args.index("-py") + 1] == "/opt/parity/jobs/stream.py"
    assert (ROOT / "jobs" / "stream.py").is_file()
    assert args[args.index("--view") + 1] == "user_stats"
    assert job["upgradeMode"] == "last-state"
    conf = spec["flinkConfiguration"]
    # The operator hands these to Flink as strings; a YAML number or boolean would be re-rendered.
    assert all(isinstance(value, str) for value in conf.values())
    assert conf["high-availability.type"] == "kubernetes"
    for key in (
        "execution.checkpointing.dir",
        "execution.checkpointing.savepoint-dir",
        "high-availability.storageDir",
    ):
        assert conf[key].startswith("s3://"), key
    jar = re.search(r"^PARITY_JAR := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert jar is not None
    assert conf["pipeline.jars"] == f"file:///opt/parity/{jar.group(1)}"


def test_the_restart_strategy_and_checkpoint_interval_are_the_job_s_own():
    """jobs/stream.py sets these on the job itself, so the cluster's must say the same."""
    conf = one("FlinkDeployment")["spec"]["flinkConfiguration"]
    stream = (ROOT / "jobs" / "stream.py").read_text()
    job_sets = dict(
        re.findall(
            r'conf\.set\("(restart-strategy\.[\w.-]+|execution\.checkpointing\.mode)", "([^"]+)"\)', stream
        )
    )
    assert job_sets["restart-strategy.type"] == "exponential-delay"
    assert {key: conf[key] for key in job_sets} == job_sets
    interval = re.fullmatch(r"(\d+) s", conf["execution.checkpointing.interval"])
    assert interval is not None
    assert one("ConfigMap", "parity-config")["data"]["PARITY_FLINK_CHECKPOINT_INTERVAL_S"] == interval.group(
        1
    )


def test_every_parity_variable_is_a_real_setting_and_the_values_parse(monkeypatch):
    data = one("ConfigMap", "parity-config")["data"]
    used = set(data) | {name for d in documents() if d["kind"] != "ConfigMap" for name in env_names(d)}
    used = {name for name in used if name.startswith("PARITY_")}
    assert used <= setting_names(), sorted(used - setting_names())
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PARITY_REDIS_PASSWORD", "placeholder")
    monkeypatch.setenv("PARITY_ICEBERG_CATALOG_PASSWORD", "placeholder")
    for model in SETTINGS:
        model()
    assert config.FlinkJobConfig().metrics_ports == ""
    assert config.RedisConfig().host == one("Service", "parity-redis")["metadata"]["name"]


def test_every_secret_and_config_map_reference_resolves():
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in documents() if d["kind"] == "Secret"}
    maps = {d["metadata"]["name"]: set(d["data"]) for d in documents() if d["kind"] == "ConfigMap"}
    for doc in documents():
        for ref in refs(doc, "secretKeyRef"):
            assert ref["key"] in secrets[ref["name"]], ref
        for ref in refs(doc, "configMapRef") + refs(doc, "configMap"):
            assert ref["name"] in maps, ref


def test_the_redis_statefulset_service_and_cluster_job_agree():
    sts, service, job = one("StatefulSet"), one("Service", "parity-redis"), one("Job")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    (redis_container,) = containers(sts)
    ports = {p["name"]: p["containerPort"] for p in redis_container["ports"]}
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert ports == {"redis": 6379, "cluster-bus": 6379 + 10000}
    # 3 masters with one replica each.
    assert sts["spec"]["replicas"] == 6
    (script,) = [arg for arg in containers(job)[0]["command"] if "redis-cli" in arg]
    loop = re.search(r"for i in ([\d ]+); do", script)
    assert loop is not None
    assert loop.group(1).split() == [str(i) for i in range(sts["spec"]["replicas"])]
    assert f'"{sts["metadata"]["name"]}-$i.{service["metadata"]["name"]}"' in script
    assert "redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes" in script


def redis_conf() -> str:
    return str(one("ConfigMap", "parity-redis-config")["data"]["redis.conf"])


def test_redis_conf_is_a_persistent_cluster_node_that_never_evicts():
    directives = dict(line.split(None, 1) for line in redis_conf().splitlines() if line and line[0] != "#")
    assert directives["cluster-enabled"] == "yes"
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["appendonly"] == "yes"
    assert directives["dir"] == "/data"
    (container,) = containers(one("StatefulSet"))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert container["command"] == ["redis-server", f"{mounts['config']}/redis.conf"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_server_starts_a_cluster_node_from_the_conf_and_the_pod_s_arguments(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "redis-server is not installed (Debian: apt-get install redis-server); make setup installs it"
        )
    conf = tmp_path / "redis.conf"
    conf.write_text(redis_conf().replace("/data", str(tmp_path)))
    (container,) = containers(one("StatefulSet"))
    values = {"REDIS_PASSWORD": "placeholder", "POD_IP": "127.0.0.1", "POD_NAME": "parity-redis-0"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in container["args"]]
    sock = tmp_path / "redis.sock"
    local = [
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--bind",
        "127.0.0.1",
        "--cluster-port",
        str(_free_port()),
    ]
    proc = subprocess.Popen(
        [server, str(conf), *args, *local], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not sock.exists():
            proc.kill()
            pytest.fail(f"redis-server did not start:\n{proc.communicate()[0]}")
        client = redis.Redis(unix_socket_path=str(sock), password="placeholder")
        try:
            assert client.info("cluster")["cluster_enabled"] == 1
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=10)


def test_prometheus_yml_passes_promtool_with_the_repository_s_rules(tmp_path):
    text = one("ConfigMap", "parity-prometheus")["data"]["prometheus.yml"]
    prom = yaml.safe_load(text)
    assert prom["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    rules = ROOT / "deploy" / "prometheus"
    path = tmp_path / "prometheus.yml"
    path.write_text(text.replace("/etc/prometheus/rules/", f"{rules}/"))
    result = subprocess.run([promtool(), "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    for rule_file in sorted(rules.glob("*.rules.yml")):
        assert f"{rule_file.name}" in output, f"promtool did not check {rule_file.name}"


def test_prometheus_scrapes_every_flink_pod_on_the_reporter_port():
    prom = yaml.safe_load(one("ConfigMap", "parity-prometheus")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert set(jobs) == {"flink", "parity-serving"}
    (sd,) = jobs["flink"]["dns_sd_configs"]
    (name,) = sd["names"]
    service = one("Service", name)
    assert service["spec"]["clusterIP"] == "None"
    flink = one("FlinkDeployment")["spec"]
    assert service["spec"]["selector"].items() <= flink["podTemplate"]["metadata"]["labels"].items()
    (container,) = containers(one("FlinkDeployment"))
    assert container["name"] == "flink-main-container"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == ports[port["targetPort"]] == sd["port"]
    assert str(sd["port"]) == flink["flinkConfiguration"]["metrics.reporter.prom.port"]
    (serving,) = jobs["parity-serving"]["dns_sd_configs"]
    assert serving["port"] == 8000  # `parity serve --port`'s default (serving/cli.py)
