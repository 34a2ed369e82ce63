"""Feast's get_online_features on a Redis, timed; prints one JSON line.

Run by bench/serving_bench.py with the interpreter of .cache/feast-venv:

    python feast_bench.py --host 127.0.0.1 --port 16379 --entities 1000 --features 10 --reads 2000

A throwaway feature repo in a temp folder: one entity (user_id), one feature
view of N int64 features, values written straight to the online store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Int64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=16379)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--project", default="parity_bench")
    args = parser.parse_args()

    repo = Path(tempfile.mkdtemp(prefix="feast-bench-"))
    (repo / "feature_store.yaml").write_text(
        f"project: {args.project}\n"
        "provider: local\n"
        f"registry: {repo / 'registry.db'}\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{args.host}:{args.port}"\n'
        "entity_key_serialization_version: 3\n"
    )
    now = datetime.now(timezone.utc)
    names = [f"f{i}" for i in range(args.features)]
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(args.entities)],
            **{n: list(range(args.entities)) for n in names},
            "event_timestamp": [now] * args.entities,
        }
    )
    source_path = repo / "source.parquet"
    frame.to_parquet(source_path)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="bench",
        entities=[user],
        ttl=timedelta(days=30),
        schema=[Field(name=n, dtype=Int64) for n in names],
        source=FileSource(path=str(source_path), timestamp_field="event_timestamp"),
        online=True,
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, view])
    store.write_to_online_store("bench", frame)
    refs = [f"bench:{n}" for n in names]

    def timed(batch: int) -> dict[str, float]:
        samples = []
        for i in range(args.reads):
            rows = [{"user_id": f"u{(i * batch + j) % args.entities:06d}"} for j in range(batch)]
            started = time.perf_counter()
            store.get_online_features(features=refs, entity_rows=rows).to_dict()
            samples.append(time.perf_counter() - started)
        samples.sort()
        return {
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
        }

    timed(1)  # warm up
    result = {"1": timed(1), "100": timed(100)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
