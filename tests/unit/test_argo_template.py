"""deploy/argo/analysis-template.yaml: a valid AnalysisTemplate whose queries and conditions do what it says.

1. The template, as written and with its ``{{args.*}}`` filled in, validates
   against the openAPIV3Schema of the CRD in deploy/argo/schema/, strictly:
   the API server drops unknown fields without a word, so here they fail.
2. Each query parses (``promtool check rules``, as a recording rule) and, on
   series of a canary and a stable pod, selects the canary's alone
   (``promtool test rules``).
3. Each condition gives the intended outcome for an empty result, NaN, a
   value within and a value above the threshold.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_serving_alert_rules import promtool

ARGO = Path(__file__).resolve().parents[2] / "deploy" / "argo"
TEMPLATE = ARGO / "analysis-template.yaml"
CRD = ARGO / "schema" / "analysis-template-crd.yaml"
PLACEHOLDER = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")
CANARY = "6b7c9d8f5"


def template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def args(doc: dict[str, Any]) -> dict[str, str]:
    return {arg["name"]: arg["value"] for arg in doc["spec"]["args"]}


def filled(**override: str) -> dict[str, Any]:
    """The template with every placeholder replaced by its arg's value (or an override)."""
    doc = template()
    values = {**args(doc), **override}
    return yaml.safe_load(PLACEHOLDER.sub(lambda m: values[m.group(1)], TEMPLATE.read_text()))


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    known = "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields")
    if known and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == "AnalysisTemplate"
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    assert f"{crd['spec']['group']}/{version['name']}" == template()["apiVersion"]
    return strict(version["schema"]["openAPIV3Schema"])


def test_the_crd_names_where_it_came_from():
    head = CRD.read_text().split("apiVersion:", 1)[0]
    assert "github.com/argoproj/argo-rollouts, version v1.8.3" in head
    assert "Apache-2.0" in head


@pytest.mark.parametrize(
    "doc", [template(), filled(), filled(**{"canary-hash": CANARY})], ids=["as written", "defaults", "canary"]
)
def test_the_template_validates_against_the_crd_schema(doc):
    jsonschema.Draft4Validator(crd_schema()).validate(doc)
    assert doc["kind"] == "AnalysisTemplate"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_a_misspelt_field_fails_validation():
    doc = template()
    doc["spec"]["metrics"][0]["sucessCondition"] = doc["spec"]["metrics"][0].pop("successCondition")
    with pytest.raises(jsonschema.ValidationError, match="sucessCondition"):
        jsonschema.Draft4Validator(crd_schema()).validate(doc)


def test_every_placeholder_is_a_declared_arg_with_a_value_and_every_arg_is_used():
    declared = args(template())
    used = set(PLACEHOLDER.findall(TEMPLATE.read_text()))
    assert used == set(declared)
    assert all(isinstance(value, str) and value for value in declared.values())
    assert declared["prometheus-address"] == "http://127.0.0.1:19090"
    assert not PLACEHOLDER.search(yaml.safe_dump(filled()))


def test_the_metrics_are_parity_s():
    queries = {m["name"]: m["provider"]["prometheus"]["query"] for m in template()["spec"]["metrics"]}
    assert set(queries) == {"feature-fetch-error-ratio", "feature-fetch-latency-p99"}
    assert "feature_fetch_errors_total" in queries["feature-fetch-error-ratio"]
    assert "feature_fetch_latency_seconds_count" in queries["feature-fetch-error-ratio"]
    assert "feature_fetch_latency_seconds_bucket" in queries["feature-fetch-latency-p99"]


def queries(doc: dict[str, Any]) -> dict[str, str]:
    """Query by a recording rule name made of the metric's name."""
    return {
        "argo:" + m["name"].replace("-", "_"): m["provider"]["prometheus"]["query"].strip()
        for m in doc["spec"]["metrics"]
    }


def test_each_query_parses(tmp_path):
    rules = {
        "groups": [
            {
                "name": "argo-analysis",
                "rules": [{"record": r, "expr": q} for r, q in queries(filled()).items()],
            }
        ]
    }
    path = tmp_path / "argo.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rules found" in result.stdout


def series(name: str, hash_label: str | None, per_minute: int, **labels: str) -> dict[str, str]:
    matchers = {"job": "parity-serving", "source": "redis", **labels}
    if hash_label is not None:
        matchers["rollouts_pod_template_hash"] = hash_label
    text = ",".join(f'{key}="{value}"' for key, value in matchers.items())
    return {"series": f"{name}{{{text}}}", "values": f"0+{per_minute}x20"}


def test_the_queries_judge_the_canary_alone(tmp_path):
    # Canary: 10 reads/s, 5% errors, half of them over 10 ms. Stable pod: 100 reads/s, no error,
    # all fast. A pod without the hash label (the local stack): 10 reads/s, no error.
    inputs = [
        series("feature_fetch_latency_seconds_count", CANARY, 600),
        series("feature_fetch_errors_total", CANARY, 30, reason="timeout"),
        series("feature_fetch_latency_seconds_bucket", CANARY, 300, le="0.01"),
        series("feature_fetch_latency_seconds_bucket", CANARY, 600, le="0.1"),
        series("feature_fetch_latency_seconds_bucket", CANARY, 600, le="+Inf"),
        series("feature_fetch_latency_seconds_count", "stable1", 6000),
        series("feature_fetch_errors_total", "stable1", 0, reason="timeout"),
        series("feature_fetch_latency_seconds_bucket", "stable1", 6000, le="0.01"),
        series("feature_fetch_latency_seconds_bucket", "stable1", 6000, le="0.1"),
        series("feature_fetch_latency_seconds_bucket", "stable1", 6000, le="+Inf"),
        series("feature_fetch_latency_seconds_count", None, 600),
        series("feature_fetch_errors_total", None, 0, reason="timeout"),
        # Another source's errors count for no one here.
        series("feature_fetch_errors_total", CANARY, 600, source="iceberg", reason="timeout"),
    ]
    canary = queries(filled(**{"canary-hash": CANARY}))
    everything = queries(filled())
    checks = [
        # 5% of the canary's reads fail; the 99th percentile lies in its (10 ms, 100 ms] bucket,
        # interpolated as histogram_quantile does (5 of 10 reads a second below it).
        (canary["argo:feature_fetch_error_ratio"], 0.05),
        (canary["argo:feature_fetch_latency_p99"], 0.01 + (0.1 - 0.01) * (0.99 * 10 - 5) / (10 - 5)),
        # ".*" takes every pod, the one without the label too: 30 errors in 7200 reads a minute.
        (everything["argo:feature_fetch_error_ratio"], 30 / 7200),
    ]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": value}]}
                    for expr, value in checks
                ],
            }
        ],
    }
    path = tmp_path / "argo.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [promtool(), "test", "rules", path.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The conditions are expr-lang (github.com/expr-lang/expr), which Argo Rollouts evaluates. The few
# operators used here are translated to Python; any other token fails the test, so a changed
# condition cannot be judged by a translation that does not cover it.
_EXPR_TOKENS = re.compile(r"\s*(&&|\|\||!(?!=)|<=|>=|<|>|==|\(|\)|\[|\]|result|len|isNaN|\d+(?:\.\d+)?)")
_PYTHON = {"&&": " and ", "||": " or ", "!": " not "}


def evaluate(condition: str, result: list[float]) -> bool:
    tokens, at = [], 0
    while at < len(condition.rstrip()):
        match = _EXPR_TOKENS.match(condition, at)
        assert match, f"unsupported expr syntax at {condition[at:]!r}"
        tokens.append(_PYTHON.get(match.group(1), match.group(1)))
        at = match.end()
    namespace = {"result": result, "len": len, "isNaN": math.isnan}
    return bool(eval(" ".join(tokens), {"__builtins__": {}}, namespace))


def outcome(metric: dict[str, Any], result: list[float]) -> str:
    """What Argo Rollouts makes of one measurement with both conditions given."""
    if evaluate(metric["failureCondition"], result):
        return "Failed"
    return "Successful" if evaluate(metric["successCondition"], result) else "Inconclusive"


@pytest.mark.parametrize("index", [0, 1])
def test_the_conditions_fail_above_the_threshold_and_never_pass_without_reads(index):
    doc = filled()
    metric = doc["spec"]["metrics"][index]
    limit = float(args(doc)["max-error-ratio" if index == 0 else "max-p99-seconds"])
    assert outcome(metric, []) == "Inconclusive"
    assert outcome(metric, [math.nan]) == "Inconclusive"
    assert outcome(metric, [0.0]) == "Successful"
    assert outcome(metric, [limit]) == "Successful"
    assert outcome(metric, [limit * 1.5]) == "Failed"


def test_the_limits_are_sensible():
    for metric in template()["spec"]["metrics"]:
        assert metric["interval"] == "1m"
        assert 0 < metric["failureLimit"] < metric["count"]
        assert metric["inconclusiveLimit"] < metric["count"]
        assert metric["consecutiveErrorLimit"] >= 1
