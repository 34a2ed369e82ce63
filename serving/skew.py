"""The skew check: what Redis serves against what Iceberg says, for the same entities and time.

Protocol:
1. The time is the online completeness watermark: every tile before it has
   been written to Redis. Iceberg commits on checkpoints and may trail Redis by
   one; when its own watermark is older, the check uses that one instead, so
   both stores are complete up to the time compared. With ``at_now`` the time
   is now instead: online reads at now take the live tiles and the head,
   offline reads at the same instant take the raw archive's (``serving.head``).
   Iceberg commits the archive on checkpoints, so while events keep arriving
   the newest seconds may differ by what the last checkpoint has not committed:
   compare at now where the topic is quiet, or read the sizes of differences.
2. Entities are sampled from both stores (Iceberg's tiles and a SCAN of
   Redis), so an entity only one side knows is found.
3. Online values come from ``OnlineStore.get_online_features``; offline
   values from ``get_historical_features`` at the same time, on one snapshot.
4. Per entity: ``equal`` when every feature has the same value and status;
   ``missing_online`` / ``missing_offline`` when one side has no data for it;
   otherwise ``differing``. Counts go to Prometheus gauges.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from features.definition import FeatureView
from parity.errors import ReadError
from serving.assembly import FeatureValue, Status, from_ms, to_ms
from serving.metrics import SkewMetrics
from serving.offline import OfflineTiles, get_historical_features
from serving.online import OnlineStore

# Float window values may differ by rounding when a store sums in another order.
REL_TOLERANCE = 1e-9


@dataclass
class SkewReport:
    view: str
    as_of: datetime
    snapshot_id: int | None
    sampled: int = 0
    equal: int = 0
    differing: int = 0
    missing_online: int = 0
    missing_offline: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    # Per feature, the largest |online - offline| among the entities that differ.
    largest: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Share of sampled entities that are not equal."""
        bad = self.differing + self.missing_online + self.missing_offline
        return bad / self.sampled if self.sampled else 0.0

    def line(self) -> str:
        return (
            f"{self.view} as of {self.as_of.isoformat()} (snapshot {self.snapshot_id}): "
            f"{self.sampled} sampled, {self.equal} equal, {self.differing} differing, "
            f"{self.missing_online} missing online, {self.missing_offline} missing offline "
            f"(skew {self.ratio:.2%})"
            + "".join(f"; {name} off by up to {gap:g}" for name, gap in sorted(self.largest.items()))
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "as_of": self.as_of.isoformat(),
            "snapshot_id": self.snapshot_id,
            "sampled": self.sampled,
            "equal": self.equal,
            "differing": self.differing,
            "missing_online": self.missing_online,
            "missing_offline": self.missing_offline,
            "ratio": self.ratio,
            "largest_differences": self.largest,
            "examples": self.examples,
        }


def check_skew(
    view: FeatureView,
    store: OnlineStore,
    offline: OfflineTiles,
    *,
    sample: int = 200,
    seed: int | None = None,
    metrics: SkewMetrics | None = None,
    at_now: bool = False,
) -> SkewReport:
    """Compare ``sample`` entities of one view between Redis and Iceberg.

    Args:
        at_now: compare at now, heads included, instead of at the completeness watermark.

    Raises:
        ReadError: Redis has no completeness watermark for the view, or did not answer.
    """
    online_mark = store.completeness(view)
    if online_mark is None:
        raise ReadError(f"Redis has no completeness watermark of {view.qualified_name}: nothing to compare")
    offline_mark = offline.completeness_at(online_mark)
    as_of_ms = online_mark if offline_mark is None else min(online_mark, offline_mark)
    rng = random.Random(seed)
    known = set(offline.by_entity) | set(store.sample_entities(view, sample))
    entities = rng.sample(sorted(known), min(sample, len(known)))
    features = [f"{view.name}:{f}" for f in view.feature_names]
    online: list[dict[str, FeatureValue]] = []
    if entities:
        rows = [{view.entity.join_key: e} for e in entities]
        online = store.get_online_features(features, rows, None if at_now else from_ms(as_of_ms))
        if any(v.status is Status.ERROR for row in online for v in row.values()):
            raise ReadError(f"Redis did not answer the reads of {view.qualified_name}; skew not measured")
        if at_now:  # the instant the online read describes, the same for every value
            as_of_ms = to_ms(online[0][features[0]].window_end)
    report = SkewReport(view.name, from_ms(as_of_ms), offline.snapshot_id)
    if entities:
        frame = pa.table(
            {
                view.entity.join_key: pa.array(entities, pa.string()),
                "event_timestamp": pa.array([as_of_ms] * len(entities), pa.timestamp("ms", tz="UTC")),
            }
        )
        table = get_historical_features(
            frame, features, views={view.name: view}, tiles={view.name: offline}
        ).table
        offline_rows = {
            ref: (table.column(ref).to_pylist(), table.column(f"{ref}:status").to_pylist())
            for ref in features
        }
        for index, (entity, values) in enumerate(zip(entities, online, strict=True)):
            _classify(
                report, entity, values, {ref: (v[index], s[index]) for ref, (v, s) in offline_rows.items()}
            )
    report.sampled = len(entities)
    if metrics is not None:
        export(report, metrics, threshold=None)
    return report


def _classify(
    report: SkewReport,
    entity: str,
    online: dict[str, FeatureValue],
    offline: dict[str, tuple[float | int, str]],
) -> None:
    online_has = any(v.status is not Status.MISSING for v in online.values())
    offline_has = any(status != Status.MISSING.value for _, status in offline.values())
    if online_has and not offline_has:
        report.missing_offline += 1
        return
    if offline_has and not online_has:
        report.missing_online += 1
        return
    diffs = {
        ref: {"online": [v.value, v.status.value], "offline": list(offline[ref])}
        for ref, v in online.items()
        if v.status.value != offline[ref][1] or not _same(v.value, offline[ref][0])
    }
    if not diffs:
        report.equal += 1
        return
    report.differing += 1
    for ref, pair in diffs.items():
        served, stored = pair["online"][0], pair["offline"][0]
        if isinstance(served, int | float) and isinstance(stored, int | float):
            name = ref.split(":", 1)[1]
            report.largest[name] = max(report.largest.get(name, 0.0), abs(float(served) - float(stored)))
    if len(report.examples) < 5:
        report.examples.append({"entity": entity, "features": diffs})


def _same(a: float | int, b: float | int) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=0.0)


def export(report: SkewReport, metrics: SkewMetrics, threshold: float | None) -> None:
    """Set the view's skew gauges from a report."""
    for outcome in ("sampled", "equal", "differing", "missing_online", "missing_offline"):
        metrics.entities.labels(report.view, outcome).set(getattr(report, outcome))
    metrics.ratio.labels(report.view).set(report.ratio)
    if threshold is not None:
        metrics.threshold.labels(report.view).set(threshold)
    metrics.last_run.labels(report.view).set_to_current_time()
