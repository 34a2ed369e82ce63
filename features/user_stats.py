"""Per-user ad engagement: impressions, clicks, click rate and mobile share of clicks over 1 and 7 days."""

from datetime import timedelta

from features.definition import AggKind, Aggregation, Entity, FeatureView, OnStale, Ratio, Source

user = Entity(name="user", join_key="user_id")

ad_events = Source(
    topic="ad-events",
    schema="ad_event",
    event_time_field="event_time",
    max_out_of_orderness=timedelta(minutes=5),
)

view = FeatureView(
    name="user_stats",
    # 2: mobile_clicks added (schemas/ad_event v2's device); the tile layout changed.
    version=2,
    owner="ml-platform",
    description="How often a user sees and clicks ads; inputs of the ads-ranking model.",
    entity=user,
    source=ad_events,
    tile=timedelta(hours=1),
    aggregations=(
        Aggregation("impressions", AggKind.COUNT, where="event_type = 'impression'"),
        Aggregation("clicks", AggKind.COUNT, where="event_type = 'click'"),
        # device is NULL for v1 events (and any writer that does not know it): not counted as mobile.
        Aggregation("mobile_clicks", AggKind.COUNT, where="event_type = 'click' AND device = 'mobile'"),
    ),
    windows=(timedelta(days=1), timedelta(days=7)),
    derived=(
        Ratio("click_rate_7d", numerator="clicks_7d", denominator="impressions_7d", on_zero=0.0),
        Ratio("mobile_click_share_7d", numerator="mobile_clicks_7d", denominator="clicks_7d", on_zero=0.0),
    ),
    defaults={
        "impressions_1d": 0,
        "impressions_7d": 0,
        "clicks_1d": 0,
        "clicks_7d": 0,
        "mobile_clicks_1d": 0,
        "mobile_clicks_7d": 0,
        "mobile_click_share_7d": 0.0,
        # A global prior: the fleet-wide click rate, not zero, so cold users are not punished.
        "click_rate_7d": 0.02,
    },
    max_staleness=timedelta(hours=2),
    on_stale=OnStale.SERVE,
)
