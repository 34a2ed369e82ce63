"""Shadow comparison: a candidate version of a view against the live one, online, entity by entity.

Where the candidate comes from: ``features/<view>_v<N>.py`` defines the view
with the same name and ``version=N`` (``features.registry.get_candidate``);
normal loading of views never imports it. Its job writes its own keys
(``<prefix>:{<view>:v<N>}:*``) beside the live version's, in the same Redis.

Protocol:
1. The instant: ``as_of`` when given, else the older of the two versions'
   completeness watermarks, so both have written every tile before it.
2. The entities: given, or up to ``sample`` found by a SCAN of the live
   version's tile keys (``OnlineStore.sample_entities``; bounded by the count).
3. One comparison read per entity: one span ``shadow.compare`` holding the
   live and the candidate read (``OnlineStore.get_online_features``, at the
   same instant), so the trace id logged for a divergent entity leads to
   exactly the two reads that disagree. A read per entity costs round trips
   (bounded by the sample) and buys that trace id.
4. Per feature both versions define: an entity diverges when the statuses
   differ, or the values differ beyond rounding (``same``). Features only
   one version has are listed, not compared: adding or removing one is what a
   new version is for.
5. A read answered with status ``error`` (Redis down, breaker open, a lost
   Redis) says nothing about the definitions: the comparison stops with a
   ``ReadError`` instead of counting it.

Trace ids: spans go to the installed tracer provider when there is one
(``PARITY_SERVING_TRACE_EXPORTER``), and the reads' own spans nest under them.
Without one, a private provider that exports nothing still issues the ids, so
each divergence's log line (``trace_id=``) stays unique and greppable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from features.definition import FeatureView
from features.registry import get_candidate, get_view
from parity.config import RedisConfig
from parity.errors import DefinitionError, InputError, ReadError
from serving.assembly import FeatureValue, Status, from_ms
from serving.metrics import ServingMetrics
from serving.online import OnlineStore, id_problem

log = logging.getLogger(__name__)

# As the skew check: float values may differ by rounding when summed in another order.
REL_TOLERANCE = 1e-9
# Below this, two floats are equal whatever their ratio (a rounding residue of a zero).
ABS_TOLERANCE = 1e-12
# Divergent entities kept per feature in the report; every one is logged.
EXAMPLES = 5


@dataclass
class FeatureDivergence:
    """How one feature compares across the sampled entities."""

    compared: int = 0
    status_differs: int = 0  # entities whose statuses differ (their values may too)
    value_differs: int = 0  # entities with equal statuses and values beyond the tolerance
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def divergent(self) -> int:
        return self.status_differs + self.value_differs

    @property
    def ratio(self) -> float:
        return self.divergent / self.compared if self.compared else 0.0


@dataclass
class ShadowReport:
    view: str
    live_version: int
    candidate_version: int
    as_of: datetime
    entities: int = 0
    features: dict[str, FeatureDivergence] = field(default_factory=dict)
    only_live: tuple[str, ...] = ()
    only_candidate: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def above(self, threshold: float) -> list[str]:
        """Features whose share of divergent entities is above ``threshold``."""
        return [name for name, d in self.features.items() if d.ratio > threshold]

    def lines(self, threshold: float) -> list[str]:
        out = [
            f"{self.view} v{self.live_version} (live) vs v{self.candidate_version} (candidate) "
            f"as of {self.as_of.isoformat()}: {self.entities} entities, "
            f"{len(self.features)} features compared"
        ]
        width = max((len(name) for name in self.features), default=0)
        for name, d in self.features.items():
            flag = "  <- above the threshold" if d.ratio > threshold else ""
            out.append(
                f"  {name:<{width}}  {d.divergent:>5} of {d.compared} differ ({d.ratio:.2%}): "
                f"{d.value_differs} values, {d.status_differs} statuses{flag}"
            )
        if self.only_live:
            out.append(f"only in v{self.live_version} (not compared): {', '.join(self.only_live)}")
        if self.only_candidate:
            out.append(f"only in v{self.candidate_version} (not compared): {', '.join(self.only_candidate)}")
        out += [f"note: {note}" for note in self.notes]
        above = self.above(threshold)
        verdict = f"{len(above)} above" if above else "none above"
        out.append(f"{verdict} the threshold {threshold:.2%}" + (f": {', '.join(above)}" if above else ""))
        return out

    def as_dict(self, threshold: float) -> dict[str, Any]:
        return {
            "view": self.view,
            "live_version": self.live_version,
            "candidate_version": self.candidate_version,
            "as_of": self.as_of.isoformat(),
            "entities": self.entities,
            "threshold": threshold,
            "ok": not self.above(threshold),
            "features": {
                name: {
                    "compared": d.compared,
                    "divergent": d.divergent,
                    "value_differs": d.value_differs,
                    "status_differs": d.status_differs,
                    "ratio": d.ratio,
                    "examples": d.examples,
                }
                for name, d in self.features.items()
            },
            "only_live": list(self.only_live),
            "only_candidate": list(self.only_candidate),
            "notes": self.notes,
        }


def load_pair(name: str, version: int) -> tuple[FeatureView, FeatureView]:
    """The live view ``name`` and its candidate ``version`` (``features/<name>_v<version>.py``).

    Raises:
        DefinitionError: no such view or candidate, or the two cannot be compared (``check_pair``).
    """
    live = get_view(name)
    if version == live.version:
        raise DefinitionError(
            f"version {version} is the live version of {name!r}; name the candidate's version, "
            f"defined in features/{name}_v<N>.py"
        )
    candidate = get_candidate(name, version)
    check_pair(live, candidate)
    return live, candidate


def check_pair(live: FeatureView, candidate: FeatureView) -> None:
    """Can these two be compared entity by entity?

    Raises:
        DefinitionError: another view's name, the same version, or another entity key.
    """
    if candidate.name != live.name:
        raise DefinitionError(f"candidate is view {candidate.name!r}, not {live.name!r}")
    if candidate.version == live.version:
        raise DefinitionError(
            f"candidate version {candidate.version} of {live.name!r} is the live version; "
            "a candidate needs its own version (and so its own keys)"
        )
    if candidate.entity.join_key != live.entity.join_key:
        raise DefinitionError(
            f"candidate v{candidate.version} keys {live.name!r} by {candidate.entity.join_key!r}, the live "
            f"version by {live.entity.join_key!r}: the same entities cannot be read from both"
        )


def read_entities(path: Path) -> list[str]:
    """Entity ids from a file, one a line; blank lines and ``#`` comments skipped, repeats dropped.

    Raises:
        InputError: the file cannot be read, holds no id, or a line is not an id.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"entity file {path}: {exc}") from exc
    ids: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        entity = line.strip()
        if not entity or entity.startswith("#"):
            continue
        problem = id_problem(entity)
        if problem is not None:
            raise InputError(f"entity file {path}, line {number}: the id {problem}")
        ids[entity] = None
    if not ids:
        raise InputError(f"entity file {path} holds no entity id (one per line)")
    return list(ids)


def instant(marks: dict[str, int | None]) -> int:
    """The older of the versions' completeness watermarks (epoch ms), by qualified name.

    Raises:
        ReadError: a version has no watermark yet: its job has not written.
    """
    for name, mark in marks.items():
        if mark is None:
            raise ReadError(
                f"Redis has no completeness watermark of {name}: has its job run? (or pass --as-of)"
            )
    return min(mark for mark in marks.values() if mark is not None)


def compare(
    live: FeatureView,
    candidate: FeatureView,
    stores: tuple[OnlineStore, OnlineStore],
    entities: Sequence[str],
    as_of: datetime,
) -> ShadowReport:
    """Read every entity from both versions at ``as_of`` and count divergences per feature.

    ``stores`` are (live, candidate): each holds only its own version, as one
    store keys views by name.

    Raises:
        DefinitionError: see ``check_pair``; or the versions share no feature.
        ReadError: a read was answered with status ``error``, or an id is not one.
    """
    check_pair(live, candidate)
    common = [name for name in live.feature_names if name in candidate.feature_names]
    if not common:
        raise DefinitionError(f"v{live.version} and v{candidate.version} of {live.name!r} share no feature")
    report = ShadowReport(
        live.name,
        live.version,
        candidate.version,
        as_of,
        entities=len(entities),
        features={name: FeatureDivergence() for name in common},
        only_live=tuple(n for n in live.feature_names if n not in candidate.feature_names),
        only_candidate=tuple(n for n in candidate.feature_names if n not in live.feature_names),
    )
    refs = {name: f"{live.name}:{name}" for name in common}
    key = live.entity.join_key
    with _tracer() as tracer:
        for entity in entities:
            with tracer.start_as_current_span("shadow.compare") as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                span.set_attribute("parity.view", live.name)
                span.set_attribute("parity.live_version", live.version)
                span.set_attribute("parity.candidate_version", candidate.version)
                row = [{key: entity}]
                read = [store.get_online_features(list(refs.values()), row, as_of)[0] for store in stores]
                for view, values in zip((live, candidate), read, strict=True):
                    _refuse_errors(view, values)
                pairs = {name: (read[0][ref], read[1][ref]) for name, ref in refs.items()}
                differing = _tally(report, entity, trace_id, pairs)
                span.set_attribute("parity.divergent_features", ",".join(differing))
                if differing:
                    log.warning(
                        "divergent read of %s v%d vs v%d: %s=%s %s trace_id=%s",
                        live.name,
                        live.version,
                        candidate.version,
                        key,
                        entity,
                        "; ".join(_describe(name, *pairs[name]) for name in differing),
                        trace_id,
                    )
    return report


def _refuse_errors(view: FeatureView, values: dict[str, FeatureValue]) -> None:
    if any(v.status is Status.ERROR for v in values.values()):
        raise ReadError(
            f"Redis answered a read of {view.qualified_name} with status error (down, breaker open, or "
            "its keys lost: see `parity repair-online`); such a comparison says nothing of the versions"
        )


def _tally(
    report: ShadowReport, entity: str, trace_id: str, pairs: dict[str, tuple[FeatureValue, FeatureValue]]
) -> list[str]:
    """Count one entity into each feature; the names of the features it diverges on."""
    differing = []
    for name, (a, b) in pairs.items():
        counts = report.features[name]
        counts.compared += 1
        if a.status is not b.status:
            counts.status_differs += 1
        elif not same(a.value, b.value):
            counts.value_differs += 1
        else:
            continue
        differing.append(name)
        if len(counts.examples) < EXAMPLES:
            counts.examples.append(
                {
                    "entity": entity,
                    "live": [a.value, a.status.value],
                    "candidate": [b.value, b.status.value],
                    "trace_id": trace_id,
                }
            )
    return differing


def _describe(name: str, a: FeatureValue, b: FeatureValue) -> str:
    return f"{name}: {a.value} ({a.status.value}) vs {b.value} ({b.status.value})"


def same(a: float | int, b: float | int) -> bool:
    """Equal integers, or floats within the tolerance."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)


@contextmanager
def _tracer() -> Iterator[trace.Tracer]:
    """The installed provider's tracer, or one of a private provider that only issues ids."""
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        yield installed.get_tracer(__name__)
        return
    private = TracerProvider(shutdown_on_exit=False)
    try:
        yield private.get_tracer(__name__)
    finally:
        private.shutdown()


def open_stores(
    live: FeatureView, candidate: FeatureView, cfg: RedisConfig | None = None
) -> tuple[OnlineStore, OnlineStore]:
    """One store per version (a store keys views by name), each with metrics of its own.

    Private metric registries: comparison reads are not traffic, and must not
    show in the process's feature_fetch_* series.
    """
    cfg = cfg or RedisConfig()
    stores = []
    for view in (live, candidate):
        metrics = ServingMetrics(CollectorRegistry())
        stores.append(OnlineStore(cfg, {view.name: view}, metrics=metrics))
    return stores[0], stores[1]


def run_shadow(
    live: FeatureView,
    candidate: FeatureView,
    *,
    entities: Sequence[str] | None = None,
    sample: int = 200,
    as_of: datetime | None = None,
    cfg: RedisConfig | None = None,
) -> ShadowReport:
    """``compare``, with its instant and entities found as the module docstring says.

    Raises:
        DefinitionError: see ``compare``.
        ReadError: no watermark (and no ``as_of``), no entity in Redis, or a read answered
            with status error.
    """
    check_pair(live, candidate)
    stores = open_stores(live, candidate, cfg)
    try:
        marks = {
            view.qualified_name: store.completeness(view)
            for view, store in zip((live, candidate), stores, strict=True)
        }
        when = as_of if as_of is not None else from_ms(instant(marks))
        if entities is None:
            entities = stores[0].sample_entities(live, sample)
            if not entities:
                raise ReadError(f"Redis holds no entity of {live.qualified_name} to compare")
        report = compare(live, candidate, stores, entities, when)
    finally:
        for store in stores:
            store.close()
    for name, mark in marks.items():
        if mark is None or from_ms(mark) < when:
            done = "nothing yet" if mark is None else from_ms(mark).isoformat()
            report.notes.append(
                f"{name} is complete up to {done}, before {when.isoformat()}: its values there may "
                "still change, and read stale or missing meanwhile"
            )
    return report
