"""Feature drift: one view's feature values in a current cohort against a reference cohort.

Cohorts
    ``end`` defaults to the view's offline completeness watermark (the end of
    its newest closed tile period), so no cohort counts a tile still open.
    The current cohort is ``[end - current, end)`` (default one day), the
    reference cohort the ``reference`` before it (default seven days).

Rows: one per entity seen, per step
    Each cohort is cut into steps (default one day; a whole number of the
    view's tiles, dividing both cohorts). A step ``[t - step, t)`` gives one
    row per entity that has a tile starting in it: that entity's features as
    of ``t``, the step's end, exactly as ``get_historical_features`` gives
    them (and so as online served them at ``t``), defaults included. A
    one-day current cohort is every entity active on the last day, as of that
    day's end; the reference is the same for each of the seven days before.
    All values come from one snapshot of the tiles table. A 7-day window read
    on the first reference day reaches 7 days further back: when the offline
    history starts later, such windows hold less than their span, which looks
    like drift, and the report says so.

Score, test and threshold, per feature
    - Score: the population stability index (PSI) over bins. A feature with at
      most ``bins`` (10) distinct values in the two cohorts together gets one
      bin per value (counts such as clicks_1d: a shift from 7, 14, 21 to 8, 16,
      24 moves every value out of its bin, where deciles would keep them all in
      theirs). Any other feature is cut at the reference's deciles; equal cut
      points are merged and a value on a cut point falls in the bin above it,
      so a count that is mostly 0 keeps its zeros in one bin. A bin empty on
      one side counts as a 0.0001 share.
      ``PSI = sum((cur - ref) * ln(cur / ref))`` over the bins' shares. It
      measures how far the distribution moved, whatever the cohorts' sizes;
      the usual reading is < 0.1 stable, 0.1 to 0.2 moderate, >= 0.2 a
      significant shift. The score is the gauge ``feature_drift_score``.
    - Test: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``).
    - Verdict ``drift`` when PSI >= ``psi_threshold`` (0.2) and the KS p-value
      < ``ks_alpha`` (0.05): a shift that is large and not sampling noise.
      PSI alone flags noise in small cohorts (its bias is about bins / n,
      0.2 at n = 50), and KS alone flags shifts too small to matter once
      cohorts hold many thousand rows. One entity's rows on consecutive days
      are not independent (a 7-day window overlaps the next day's), so the
      p-value is optimistic; the PSI threshold carries the verdict. A
      feature with fewer than ``min_values`` (50) values in either cohort
      gets ``too_few`` and no gauge.

Why scipy and not Evidently
    Evidently 0.7 (``from evidently import Report``, ``DataDriftPreset``)
    installs from wheels in about 35 s but brings about 500 MB (plotly < 6,
    scikit-learn, statsmodels, nltk, litestar, a usage-telemetry client), and
    fails to import beside pandas 3, which the dev environment installs
    (``ImportError: infer_dtype_from_object`` from pandas' internals); with
    pandas < 3 it imports, with deprecation warnings. Capping pandas for the
    whole environment to draw one report is not worth it, and its default
    numeric test (KS p-value under 1000 rows, Wasserstein distance over) gives
    two kinds of score that do not make one gauge with one threshold. scipy
    (the ``drift`` extra) has the KS test; PSI is a few lines of numpy; the
    HTML report is a self-contained table.

Metrics
    ``parity drift <view> --textfile PATH`` writes the gauges of
    ``serving.metrics.DriftMetrics`` (``feature_drift_score{view,feature}``,
    ``feature_drift_detected``, ``feature_drift_threshold``,
    ``feature_drift_last_run_timestamp_seconds``) in Prometheus text format,
    atomically, for node-exporter's textfile collector: one file per view,
    named ``*.prom``, in its ``--collector.textfile.directory``. Run it every
    hour (the cohorts then slide with the completeness watermark); the alert
    ``FeatureDriftSustained`` (deploy/prometheus/drift.rules.yml) pages when a
    feature has drifted for three hours.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import stats

from features.definition import FeatureView, duration_label
from parity.errors import InputError, ReadError
from serving.assembly import from_ms, to_ms
from serving.metrics import DriftMetrics
from serving.offline import OfflineTiles, get_historical_features

_F64 = npt.NDArray[np.float64]
# The share an empty bin counts as, so that ln(cur / ref) stays finite.
_EMPTY_SHARE = 1e-4
_SPAN = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


def parse_span(text: str) -> timedelta:
    """``7d``, ``24h``, ``90m`` → a timedelta.

    Raises:
        ValueError: not a positive whole number of days, hours or minutes.
    """
    match = _SPAN.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration such as 7d, 24h or 90m")
    return int(match.group(1)) * _UNITS[match.group(2)]


class DriftConfig(BaseModel):
    """The cohorts compared and the verdict's thresholds; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: timedelta = timedelta(days=7)
    current: timedelta = timedelta(days=1)
    step: timedelta = timedelta(days=1)
    # The current cohort's end; the view's offline completeness watermark when None.
    end: datetime | None = None
    psi_threshold: float = Field(default=0.2, gt=0)
    ks_alpha: float = Field(default=0.05, gt=0, lt=1)
    bins: int = Field(default=10, ge=2, le=100)
    min_values: int = Field(default=50, ge=2)

    @field_validator("reference", "current", "step", mode="before")
    @classmethod
    def _span(cls, value: Any) -> Any:
        return parse_span(value) if isinstance(value, str) else value

    @field_validator("end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("end has no time zone; parity times are timezone-aware UTC")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _whole_steps(self) -> DriftConfig:
        for name in ("reference", "current", "step"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for name in ("reference", "current"):
            if getattr(self, name) % self.step:
                raise ValueError(
                    f"{name} ({duration_label(getattr(self, name))}) is not a whole number of steps "
                    f"({duration_label(self.step)}); choose a step that divides both cohorts"
                )
        return self

    @classmethod
    def of(cls, **values: Any) -> DriftConfig:
        """Build from user input.

        Raises:
            InputError: a value is invalid; the message names it.
        """
        try:
            return cls(**values)
        except ValidationError as exc:
            causes = "; ".join(_cause(e["loc"], e["msg"]) for e in exc.errors())
            raise InputError(f"invalid drift settings: {causes}") from exc


def _cause(loc: tuple[int | str, ...], msg: str) -> str:
    message = msg.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {message}" if loc else message


@dataclass(frozen=True)
class Cohort:
    """A time range ``[start, end)`` and its rows.

    ``frame`` holds the join key, ``event_timestamp`` (the step's end) and one column per
    feature, named as in the view.
    """

    name: str
    start: datetime
    end: datetime
    frame: pa.Table

    @property
    def rows(self) -> int:
        return int(self.frame.num_rows)

    @property
    def entities(self) -> int:
        return len(pc.unique(self.frame.column(0))) if self.rows else 0

    def label(self) -> str:
        return f"[{_iso(self.start)}, {_iso(self.end)})"


class Verdict(Enum):
    OK = "ok"
    DRIFT = "drift"
    TOO_FEW = "too_few"  # fewer than min_values in a cohort: no verdict


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison. Scores are NaN when the verdict is ``too_few``."""

    feature: str
    verdict: Verdict
    psi: float
    ks_statistic: float
    ks_pvalue: float
    reference_n: int
    current_n: int
    reference_mean: float
    current_mean: float
    # Inner cut points of the bins and each cohort's share per bin (len(cuts) + 1 bins).
    cuts: tuple[float, ...] = ()
    reference_shares: tuple[float, ...] = ()
    current_shares: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "verdict": self.verdict.value,
            "psi": _number(self.psi),
            "ks_statistic": _number(self.ks_statistic),
            "ks_pvalue": _number(self.ks_pvalue),
            "reference": {"n": self.reference_n, "mean": _number(self.reference_mean)},
            "current": {"n": self.current_n, "mean": _number(self.current_mean)},
        }


@dataclass
class DriftReport:
    view: str
    version: int
    snapshot_id: int | None
    step: timedelta
    reference: Cohort
    current: Cohort
    psi_threshold: float
    ks_alpha: float
    features: list[FeatureDrift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.verdict is Verdict.DRIFT]

    @property
    def rule(self) -> str:
        return f"drift when PSI >= {self.psi_threshold:g} and KS p < {self.ks_alpha:g}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "version": self.version,
            "snapshot_id": self.snapshot_id,
            "step": duration_label(self.step),
            **{
                c.name: {"start": _iso(c.start), "end": _iso(c.end), "rows": c.rows, "entities": c.entities}
                for c in (self.reference, self.current)
            },
            "psi_threshold": self.psi_threshold,
            "ks_alpha": self.ks_alpha,
            "features": [f.as_dict() for f in self.features],
            "drifted": self.drifted,
            "warnings": self.warnings,
        }

    def lines(self) -> list[str]:
        """A header, one table row per feature and the verdict's rule."""
        out = [
            f"{self.view} v{self.version} (snapshot {self.snapshot_id}), values at the end of each "
            f"{duration_label(self.step)}",
            *(
                f"  {c.name:<9} {c.label()}: {c.rows} rows, {c.entities} entities"
                for c in (self.reference, self.current)
            ),
        ]
        width = max([len("feature"), *(len(f.feature) for f in self.features)])
        header = (
            f"{'feature':<{width}} {'ref n':>7} {'cur n':>7} {'ref mean':>10} {'cur mean':>10} "
            f"{'PSI':>7} {'KS D':>6} {'KS p':>8}  verdict"
        )
        out += ["", header, "-" * len(header)]
        for f in self.features:
            verdict = f.verdict.value.upper() if f.verdict is Verdict.DRIFT else f.verdict.value
            out.append(
                f"{f.feature:<{width}} {f.reference_n:>7} {f.current_n:>7} {_fmt(f.reference_mean, 10, 4)} "
                f"{_fmt(f.current_mean, 10, 4)} {_fmt(f.psi, 7, 3)} {_fmt(f.ks_statistic, 6, 3)} "
                f"{_pvalue(f.ks_pvalue):>8}  {verdict}"
            )
        drifted = self.drifted
        out += [
            "",
            f"{len(drifted)} of {len(self.features)} features drifted"
            + (f": {', '.join(drifted)}" if drifted else "")
            + f" ({self.rule})",
        ]
        return out


def compare(
    reference: Mapping[str, Any] | pa.Table,
    current: Mapping[str, Any] | pa.Table,
    features: Sequence[str],
    cfg: DriftConfig | None = None,
) -> list[FeatureDrift]:
    """Compare each feature's values between two frames (pandas, pyarrow or a dict of arrays).

    Non-finite values are left out. See the module docstring for the score and verdict.
    """
    cfg = cfg or DriftConfig()
    out = []
    for name in features:
        ref, cur = _finite(reference[name]), _finite(current[name])
        verdict, psi, statistic, pvalue = Verdict.TOO_FEW, math.nan, math.nan, math.nan
        cuts = ref_shares = cur_shares = np.empty(0)
        if min(len(ref), len(cur)) >= cfg.min_values:
            cuts, ref_shares, cur_shares = _binned(ref, cur, cfg.bins)
            psi = float(np.sum((cur_shares - ref_shares) * np.log(cur_shares / ref_shares)))
            with warnings.catch_warnings():
                # Ties can defeat the exact small-sample p-value; scipy then uses the asymptotic one.
                warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
                ks = stats.ks_2samp(ref, cur)
            statistic, pvalue = float(ks.statistic), float(ks.pvalue)
            drift = psi >= cfg.psi_threshold and pvalue < cfg.ks_alpha
            verdict = Verdict.DRIFT if drift else Verdict.OK
        out.append(
            FeatureDrift(
                name,
                verdict,
                psi,
                statistic,
                pvalue,
                reference_n=len(ref),
                current_n=len(cur),
                reference_mean=_mean(ref),
                current_mean=_mean(cur),
                cuts=tuple(float(c) for c in cuts),
                reference_shares=tuple(float(s) for s in ref_shares),
                current_shares=tuple(float(s) for s in cur_shares),
            )
        )
    return out


def _finite(values: Any) -> _F64:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _mean(values: _F64) -> float:
    return float(values.mean()) if len(values) else math.nan


def _binned(ref: _F64, cur: _F64, bins: int) -> tuple[_F64, _F64, _F64]:
    """Cut points (one bin per value, or the reference's quantiles); each cohort's share per bin."""
    distinct = np.unique(np.concatenate([ref, cur]))
    cuts: _F64 = (
        distinct[1:]
        if len(distinct) <= bins
        else np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    )

    def shares(values: _F64) -> _F64:
        counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
        share: _F64 = np.maximum(counts / len(values), _EMPTY_SHARE)
        return share

    return cuts, shares(ref), shares(cur)


def check_drift(view: FeatureView, offline: OfflineTiles, cfg: DriftConfig | None = None) -> DriftReport:
    """Compare the current cohort of every feature of ``view`` with its reference cohort.

    Args:
        offline: the view's tiles at one snapshot (``serving.offline.load_tiles``).

    Raises:
        ReadError: the view has no closed tile period, or a cohort has no entity.
        InputError: the step or end does not fit the view's tiles, or end is after
            the offline completeness watermark.
    """
    cfg = cfg or DriftConfig()
    reference, current, notes = cohorts(view, offline, cfg)
    names = list(view.feature_names)
    return DriftReport(
        view.name,
        view.version,
        offline.snapshot_id,
        cfg.step,
        reference,
        current,
        cfg.psi_threshold,
        cfg.ks_alpha,
        compare(reference.frame, current.frame, names, cfg),
        notes,
    )


def cohorts(view: FeatureView, offline: OfflineTiles, cfg: DriftConfig) -> tuple[Cohort, Cohort, list[str]]:
    """The reference and current cohorts with their feature values, and warnings about them.

    Raises:
        ReadError, InputError: as ``check_drift``.
    """
    if cfg.step % view.tile:
        raise InputError(
            f"step {duration_label(cfg.step)} is not a whole number of {view.name}'s "
            f"{duration_label(view.tile)} tiles"
        )
    if not offline.period_ends_ms:
        raise ReadError(
            f"{view.qualified_name} has no closed tile period offline: nothing to compare. "
            f"Run its job first (parity job run --view {view.name})."
        )
    completeness = offline.period_ends_ms[-1]
    end_ms = completeness if cfg.end is None else to_ms(cfg.end)
    if end_ms % view.tile_ms:
        raise InputError(
            f"end {_iso(from_ms(end_ms))} is not on a tile boundary of {view.name} "
            f"({duration_label(view.tile)} tiles); use {_iso(from_ms(end_ms - end_ms % view.tile_ms))}"
        )
    if end_ms > completeness:
        raise InputError(
            f"end {_iso(from_ms(end_ms))} is after the offline completeness of {view.qualified_name} "
            f"({_iso(from_ms(completeness))}): tiles there may still be open. Leave --end out to use it."
        )
    step_ms = _ms(cfg.step)
    split_ms = end_ms - _ms(cfg.current)
    start_ms = split_ms - _ms(cfg.reference)
    reference = _cohort(view, offline, "reference", start_ms, split_ms, step_ms)
    current = _cohort(view, offline, "current", split_ms, end_ms, step_ms)
    notes = []
    first_window_start = start_ms + step_ms - _ms(view.longest_window)
    history_start = offline.period_ends_ms[0] - view.tile_ms
    if history_start > first_window_start:
        notes.append(
            f"the offline history of {view.qualified_name} starts at {_iso(from_ms(history_start))}, after "
            f"{_iso(from_ms(first_window_start))}, where the {duration_label(view.longest_window)} windows "
            "of the first reference step begin: those windows hold less than their span, which reads as drift"
        )
    return reference, current, notes


def _cohort(
    view: FeatureView, offline: OfflineTiles, name: str, start_ms: int, end_ms: int, step_ms: int
) -> Cohort:
    """Each entity with a tile starting in a step of ``[start, end)``: its features at the step's end."""
    key = view.entity.join_key
    tiles = offline.to_arrow()
    starts = tiles.column("tile_start")
    inside = tiles.filter(pc.and_(pc.greater_equal(starts, start_ms), pc.less(starts, end_ms)))
    if not inside.num_rows:
        raise ReadError(
            f"no entity of {view.qualified_name} has a tile in the {name} cohort "
            f"[{_iso(from_ms(start_ms))}, {_iso(from_ms(end_ms))})"
        )
    offsets = np.asarray(inside.column("tile_start").to_numpy(), np.int64) - start_ms
    pairs = (
        pa.table({key: inside.column(key), "step": pa.array(offsets // step_ms, pa.int64())})
        .group_by([key, "step"])
        .aggregate([])
        .sort_by([("step", "ascending"), (key, "ascending")])
    )
    ends = start_ms + (np.asarray(pairs.column("step").to_numpy(), np.int64) + 1) * step_ms
    rows = pa.table(
        {
            key: pairs.column(key).cast(pa.string()),
            "event_timestamp": pa.array(ends, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        }
    )
    refs = [f"{view.name}:{f}" for f in view.feature_names]
    values = get_historical_features(rows, refs, views={view.name: view}, tiles={view.name: offline}).table
    for feature, ref in zip(view.feature_names, refs, strict=True):
        rows = rows.append_column(feature, values.column(ref))
    return Cohort(name, from_ms(start_ms), from_ms(end_ms), rows)


def export(report: DriftReport, metrics: DriftMetrics) -> None:
    """Set the view's drift gauges: a score and a verdict per feature with one (not ``too_few``)."""
    for f in report.features:
        if f.verdict is Verdict.TOO_FEW:
            continue
        metrics.score.labels(report.view, f.feature).set(f.psi)
        metrics.detected.labels(report.view, f.feature).set(1 if f.verdict is Verdict.DRIFT else 0)
    metrics.threshold.labels(report.view).set(report.psi_threshold)
    metrics.last_run.labels(report.view).set_to_current_time()


def render_html(report: DriftReport) -> str:
    """A self-contained HTML page: the table, and each feature's binned shares as a small bar chart."""
    rows = []
    for f in report.features:
        verdict = f"<b>{f.verdict.value}</b>" if f.verdict is Verdict.DRIFT else f.verdict.value
        rows.append(
            f"<tr class='{f.verdict.value}'><td>{html.escape(f.feature)}</td>"
            f"<td>{f.reference_n}</td><td>{f.current_n}</td>"
            f"<td>{_fmt(f.reference_mean, 0, 4)}</td><td>{_fmt(f.current_mean, 0, 4)}</td>"
            f"<td>{_fmt(f.psi, 0, 3)}</td><td>{_fmt(f.ks_statistic, 0, 3)}</td>"
            f"<td>{_pvalue(f.ks_pvalue)}</td><td>{verdict}</td>"
            f"<td>{_bars(f) if f.reference_shares else ''}</td></tr>"
        )
    cohorts = "".join(
        f"<li>{c.name}: {html.escape(c.label())}, {c.rows} rows, {c.entities} entities</li>"
        for c in (report.reference, report.current)
    )
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
    title = html.escape(f"Feature drift of {report.view} v{report.version}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; font-family: monospace; }}
tr.drift {{ background: #fde2e1; }}
tr.too_few {{ color: #888; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }}
</style></head><body>
<h1>{title}</h1>
<p>Snapshot {report.snapshot_id}; each entity's feature values at the end of every
{duration_label(report.step)} in which it has a tile.</p>
<ul>{cohorts}</ul>
{f"<p>Warnings:</p><ul>{notes}</ul>" if notes else ""}
<p><b>{len(report.drifted)} of {len(report.features)} features drifted</b> ({html.escape(report.rule)}).
PSI over bins cut at the reference's deciles, or one per value for a feature with few values;
KS: two-sample Kolmogorov-Smirnov.</p>
<p class="legend">Bin shares:<span style="background:#9aa5b1"></span>reference
<span style="background:#d9534f"></span>current</p>
<table><thead><tr><th>feature</th><th>ref n</th><th>cur n</th><th>ref mean</th><th>cur mean</th>
<th>PSI</th><th>KS D</th><th>KS p</th><th>verdict</th><th>bins</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""


def _bars(f: FeatureDrift) -> str:
    """Reference and current shares per bin as an inline SVG; each bin's range in its tooltip."""
    width, height, bar = 12, 40, 5
    top = max([*f.reference_shares, *f.current_shares, 1e-9])
    edges = ["-inf", *(f"{c:g}" for c in f.cuts), "inf"]

    def rect(x: int, share: float, colour: str) -> str:
        tall = share / top * height
        return f"<rect x='{x}' y='{height - tall:.1f}' width='{bar}' height='{tall:.1f}' fill='{colour}'/>"

    parts = []
    for i, (r, c) in enumerate(zip(f.reference_shares, f.current_shares, strict=True)):
        tip = html.escape(f"[{edges[i]}, {edges[i + 1]}): reference {r:.1%}, current {c:.1%}")
        x = i * width
        parts.append(f"<g><title>{tip}</title>{rect(x, r, '#9aa5b1')}{rect(x + bar, c, '#d9534f')}</g>")
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{len(parts) * width}' height='{height}'>"
        f"{''.join(parts)}</svg>"
    )


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _fmt(value: float, width: int, digits: int) -> str:
    return f"{'-' if math.isnan(value) else f'{value:.{digits}f}':>{width}}"


def _pvalue(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"
