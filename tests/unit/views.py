"""Fixed feature views for unit tests, independent of how the shipped views evolve."""

from datetime import timedelta

from features.definition import AggKind, Aggregation, Entity, FeatureView, OnStale, Ratio, Source

ad_events = Source(
    topic="ad-events",
    schema="ad_event",
    event_time_field="event_time",
    max_out_of_orderness=timedelta(minutes=5),
)

user_stats = FeatureView(
    name="user_stats",
    version=1,
    owner="ml-platform",
    entity=Entity(name="user", join_key="user_id"),
    source=ad_events,
    tile=timedelta(hours=1),
    aggregations=(
        Aggregation("impressions", AggKind.COUNT, where="event_type = 'impression'"),
        Aggregation("clicks", AggKind.COUNT, where="event_type = 'click'"),
    ),
    windows=(timedelta(days=1), timedelta(days=7)),
    derived=(Ratio("click_rate_7d", numerator="clicks_7d", denominator="impressions_7d", on_zero=0.0),),
    defaults={
        "impressions_1d": 0,
        "impressions_7d": 0,
        "clicks_1d": 0,
        "clicks_7d": 0,
        "click_rate_7d": 0.02,
    },
    max_staleness=timedelta(hours=2),
    on_stale=OnStale.SERVE,
)

# Every aggregation kind, nullable min/max, float sums: the cases count-only user_stats does not reach.
spend = FeatureView(
    name="spend",
    version=1,
    owner="tests",
    entity=user_stats.entity,
    source=ad_events,
    tile=timedelta(hours=1),
    aggregations=(
        Aggregation("orders", AggKind.COUNT),
        Aggregation("amount", AggKind.SUM, column="amount"),
        Aggregation("smallest", AggKind.MIN, column="amount"),
        Aggregation("largest", AggKind.MAX, column="amount"),
    ),
    windows=(timedelta(hours=3), timedelta(days=1), timedelta(days=7)),
    derived=(Ratio("avg_amount_1d", numerator="amount_1d", denominator="orders_1d", on_zero=0.0),),
    defaults={
        **{f"{a}_{w}": 0 for a in ("orders", "amount", "smallest", "largest") for w in ("3h", "1d", "7d")},
        "avg_amount_1d": 1.5,
    },
    max_staleness=timedelta(hours=2),
)
