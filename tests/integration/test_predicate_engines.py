"""Flink and Arrow select the same events for every filter the where= grammar allows.

The job hands a view's filters to Flink SQL; offline reads evaluate the same
filters with Arrow over the raw archive (``features.predicate``). Random rows,
with NULLs in every column, go through both: Flink in batch mode in the job
runtime, Arrow here. The set of rows each filter selects must be equal.
"""

from __future__ import annotations

import json
import random
import subprocess

import pyarrow as pa
import pytest

from features import predicate
from parity import jobctl

pytestmark = pytest.mark.integration

FILTERS = [
    "event_type = 'click'",
    "event_type <> 'click'",
    "event_type < 'd'",
    "event_type >= 'impression'",
    "device = 'it''s'",
    "event_type = 'click' AND device = 'mobile'",
    "device = 'mobile' OR event_type = 'click'",
    "NOT device = 'mobile'",
    "NOT (event_type = 'click' OR device IS NULL)",
    "NOT event_type = 'click' AND device = 'mobile' OR n > 2",
    "device IS NULL",
    "device IS NOT NULL AND `event_type` IS NOT NULL",
    "event_type IN ('click', 'view')",
    "event_type NOT IN ('click')",
    "n IN (1, 3)",
    "n NOT IN (2)",
    "cost > 0",
    "cost <= 0.5",
    "cost = 1",
    "n >= 3",
    "n = 2.5",
    "n < cost",
    "flag",
    "NOT flag",
    "flag = TRUE",
    "flag AND cost > 1",
    "TRUE",
    "1 = 2",
]

COLUMNS = [
    ("event_type", "STRING"),
    ("device", "STRING"),
    ("cost", "DOUBLE"),
    ("n", "BIGINT"),
    ("flag", "BOOLEAN"),
]


def _rows(count: int) -> list[dict]:
    rng = random.Random(3)

    def maybe(value):
        return None if rng.random() < 0.25 else value

    return [
        {
            "event_type": maybe(rng.choice(["click", "impression", "view", ""])),
            "device": maybe(rng.choice(["mobile", "desktop", "it's"])),
            "cost": maybe(rng.choice([-1.0, 0.0, 0.5, 1.0, 2.25])),
            "n": maybe(rng.randint(0, 4)),
            "flag": maybe(rng.random() < 0.5),
        }
        for _ in range(count)
    ]


def _literal(value, sql_type: str) -> str:
    if value is None:
        return f"CAST(NULL AS {sql_type})"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return f"CAST({value!r} AS {sql_type})"


FLINK = """
import json, sys
from pyflink.table import EnvironmentSettings, TableEnvironment

values, names, filters = json.loads(sys.stdin.read())
env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
env.get_config().set("parallelism.default", "1")
env.execute_sql(f"CREATE TEMPORARY VIEW ev AS SELECT * FROM (VALUES {values}) AS t(id, {names})")
cases = ", ".join(f"CASE WHEN {f} THEN 1 ELSE 0 END" for f in filters)
chosen = {f: [] for f in filters}
with env.execute_sql(f"SELECT id, {cases} FROM ev").collect() as rows:
    for row in rows:
        for index, f in enumerate(filters):
            if row[index + 1] == 1:
                chosen[f].append(row[0])
print(json.dumps({f: sorted(ids) for f, ids in chosen.items()}))
"""


def test_flink_and_arrow_select_the_same_rows_for_every_filter():
    rows = _rows(60)
    values = ", ".join(
        "(" + ", ".join([str(i), *(_literal(row[name], kind) for name, kind in COLUMNS)]) + ")"
        for i, row in enumerate(rows)
    )
    names = ", ".join(name for name, _ in COLUMNS)
    done = subprocess.run(
        [str(jobctl.job_python()), "-c", FLINK],
        input=json.dumps([values, names, FILTERS]),
        cwd=jobctl.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[:3000]
    flink = json.loads(done.stdout.strip().splitlines()[-1])

    table = pa.table(
        {
            "event_type": pa.array([r["event_type"] for r in rows], pa.string()),
            "device": pa.array([r["device"] for r in rows], pa.string()),
            "cost": pa.array([r["cost"] for r in rows], pa.float64()),
            "n": pa.array([r["n"] for r in rows], pa.int64()),
            "flag": pa.array([r["flag"] for r in rows], pa.bool_()),
        }
    )
    for text in FILTERS:
        mask = predicate.evaluate(predicate.parse(text), table).to_pylist()
        arrow = [i for i, chosen in enumerate(mask) if chosen]
        assert arrow == flink[text], text
    # The rows were varied enough that only the constant filters select all rows or none.
    trivial = {text for text in FILTERS if len(flink[text]) in (0, len(rows))}
    assert trivial == {"TRUE", "1 = 2", "n = 2.5"}
