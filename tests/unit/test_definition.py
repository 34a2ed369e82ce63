from dataclasses import replace
from datetime import timedelta

import pytest

from features.definition import AggKind, Aggregation, FeatureView, Ratio, Source
from features.registry import get_view, load_views
from features.user_stats import view as user_stats
from parity.errors import DefinitionError


def test_user_stats_features_are_declared_in_order():
    assert user_stats.feature_names == (
        "impressions_1d",
        "impressions_7d",
        "clicks_1d",
        "clicks_7d",
        "mobile_clicks_1d",
        "mobile_clicks_7d",
        "click_rate_7d",
        "mobile_click_share_7d",
    )
    assert user_stats.qualified_name == "user_stats_v2"
    assert user_stats.source.subject == "ad-events-value"


def test_registry_finds_views_by_their_own_name():
    assert "user_stats" in load_views()
    assert get_view("user_stats") is user_stats


def test_unknown_view_lists_known_ones():
    with pytest.raises(DefinitionError, match=r"unknown feature view 'nope'.*user_stats"):
        get_view("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"windows": (timedelta(minutes=90),)}, "not a positive multiple of the tile"),
        ({"tile": timedelta(seconds=30)}, "whole number of minutes"),
        ({"tile": timedelta(hours=5)}, "divide a day"),
        ({"version": 0}, "version must be >= 1"),
        ({"owner": ""}, "owner is empty"),
        ({"defaults": {"clicks_1d": 0}}, "no default for"),
        ({"max_staleness": timedelta(0)}, "max_staleness must be positive"),
        ({"name": "User Stats"}, "not a valid name"),
        ({"aggregations": ()}, "at least one aggregation"),
        (
            {"derived": (Ratio("ctr", numerator="clicks_30d", denominator="impressions_7d", on_zero=0.0),)},
            "'clicks_30d', which is not a window feature",
        ),
    ],
)
def test_invalid_views_say_what_to_change(change, message):
    with pytest.raises(DefinitionError, match=message):
        replace(user_stats, **change)


def test_extra_default_is_refused():
    defaults = dict(user_stats.defaults) | {"clicks_30d": 0}
    with pytest.raises(DefinitionError, match="unknown features"):
        replace(user_stats, defaults=defaults)


def test_aggregation_rules():
    with pytest.raises(DefinitionError, match="COUNT takes no column"):
        Aggregation("n", AggKind.COUNT, column="cost")
    with pytest.raises(DefinitionError, match="SUM needs column"):
        Aggregation("total", AggKind.SUM)
    with pytest.raises(DefinitionError, match=r"'; DROP TABLE x'.*not part of the filter grammar"):
        Aggregation("n", AggKind.COUNT, where="1=1; DROP TABLE x")


def test_source_rules():
    with pytest.raises(DefinitionError, match="topic is empty"):
        Source(topic="", schema="ad_event", event_time_field="event_time", max_out_of_orderness=timedelta(0))
    with pytest.raises(DefinitionError, match="whole seconds"):
        Source(
            topic="t",
            schema="ad_event",
            event_time_field="event_time",
            max_out_of_orderness=timedelta(milliseconds=1500),
        )


def test_defaults_are_read_only():
    view: FeatureView = user_stats
    with pytest.raises(TypeError):
        view.defaults["clicks_1d"] = 5  # type: ignore[index]
