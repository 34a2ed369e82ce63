"""The streaming job's data path: no Python worker unless the Python Redis writer is chosen.

The job's plan is explained (nothing runs) in the job runtime, once with each
``PARITY_FLINK_REDIS_SINK``. With the JVM sink no operator of the plan is a
Python function, so the job starts no Python worker; with the Python writer the
three Redis functions are Python operators.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from parity import jobctl

pytestmark = pytest.mark.integration

EXPLAIN = """
from features.registry import get_view
from jobs.compiler import compile_view
from jobs.decode import decoded_source_statements
from jobs.stream import bind_sinks, closed_boundary_view, table_environment
from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig

view = get_view("user_stats")
flink = FlinkJobConfig()
env = table_environment(view, flink, streaming=True)
pipeline = compile_view(view)
decoded = f"{pipeline.source_table}_decoded"
kafka = KafkaConfig()
source = decoded_source_statements(
    pipeline, kafka, RegistryConfig(), group_id="plan", bounded=False,
    dead_letter_topic=kafka.dead_letter_topic, good_table=decoded,
)
for statement in source.statements:
    env.execute_sql(statement)
env.execute_sql(closed_boundary_view(pipeline, decoded, 0))
statements = bind_sinks(
    env, pipeline, IcebergConfig(), RedisConfig(), archive_from=decoded, closed_before_ms=0, flink=flink
)
print(statements.explain())
"""


def _plan(isolated, sink: str) -> str:
    env = {**os.environ, **isolated.env(), "PARITY_FLINK_REDIS_SINK": sink, "PARITY_FLINK_METRICS_PORTS": ""}
    done = subprocess.run(
        [str(jobctl.job_python()), "-c", EXPLAIN],
        cwd=jobctl.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_jvm_sink_leaves_no_python_operator_and_the_python_writer_has_three(isolated):
    jvm = _plan(isolated, "jvm")
    assert "parity_redis_tiles" in jvm and "parity_redis_live" in jvm
    assert "Python" not in jvm, [line for line in jvm.splitlines() if "Python" in line][:5]
    python = _plan(isolated, "python")
    operators = {line.strip() for line in python.splitlines() if "PythonCalc" in line}
    assert len(operators) >= 3, python[:3000]
