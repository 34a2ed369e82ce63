"""Per-ad delivery: click-through rate over 1, 7 and 30 days, and the average cost of an event."""

from datetime import timedelta

from features.definition import AggKind, Aggregation, Entity, FeatureView, OnStale, Ratio
from features.user_stats import ad_events

ad = Entity(name="ad", join_key="ad_id")

view = FeatureView(
    name="ad_stats",
    version=1,
    owner="ads-delivery",
    description="How an ad performs: CTR and cost; inputs of pacing and ranking.",
    entity=ad,
    source=ad_events,
    tile=timedelta(days=1),
    aggregations=(
        Aggregation("impressions", AggKind.COUNT, where="event_type = 'impression'"),
        Aggregation("clicks", AggKind.COUNT, where="event_type = 'click'"),
        Aggregation("billed", AggKind.COUNT),
        Aggregation("spend", AggKind.SUM, column="cost"),
    ),
    windows=(timedelta(days=1), timedelta(days=7), timedelta(days=30)),
    derived=(
        Ratio("ctr_1d", numerator="clicks_1d", denominator="impressions_1d", on_zero=0.0),
        Ratio("ctr_7d", numerator="clicks_7d", denominator="impressions_7d", on_zero=0.0),
        Ratio("ctr_30d", numerator="clicks_30d", denominator="impressions_30d", on_zero=0.0),
        Ratio("avg_cost_7d", numerator="spend_7d", denominator="billed_7d", on_zero=0.0),
    ),
    defaults={
        **{f"{agg}_{w}": 0 for agg in ("impressions", "clicks", "billed") for w in ("1d", "7d", "30d")},
        **{f"spend_{w}": 0.0 for w in ("1d", "7d", "30d")},
        "ctr_1d": 0.01,
        "ctr_7d": 0.01,
        "ctr_30d": 0.01,
        "avg_cost_7d": 0.0,
    },
    max_staleness=timedelta(days=2),
    on_stale=OnStale.SERVE,
)
