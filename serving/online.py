"""Online reads: Redis tiles → ``assemble`` → feature values with status.

One pipelined round trip reads every requested entity of every requested
view. When Redis cannot answer within the client timeout, every value comes
back as its default with status ``error``: a read never hangs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from features.definition import FeatureView
from features.registry import load_views
from parity.config import RedisConfig
from parity.errors import ReadError
from serving.assembly import FeatureValue, Status, Tile, assemble, from_ms, window_end_ms
from sinks.redis import connect
from sinks.redis_layout import completeness_key, decode_tiles, entity_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRef:
    view: FeatureView
    feature: str

    @property
    def qualified(self) -> str:
        return f"{self.view.name}:{self.feature}"


def parse_refs(features: Sequence[str], views: Mapping[str, FeatureView]) -> list[FeatureRef]:
    """``["user_stats:click_rate_7d", ...]`` → references, or a ReadError naming the bad one."""
    refs = []
    for text in features:
        view_name, sep, feature = text.partition(":")
        if not sep:
            raise ReadError(f"feature {text!r} must be written <view>:<feature>, e.g. user_stats:clicks_7d")
        if view_name not in views:
            raise ReadError(f"feature {text!r}: unknown view {view_name!r}; views: {sorted(views)}")
        view = views[view_name]
        if feature not in view.feature_names:
            raise ReadError(
                f"feature {text!r}: {view_name} has no {feature!r}; it has {list(view.feature_names)}"
            )
        refs.append(FeatureRef(view, feature))
    return refs


def entity_of(view: FeatureView, row: Mapping[str, Any]) -> str:
    key = view.entity.join_key
    if key not in row:
        raise ReadError(f"entity row {dict(row)!r} lacks the join key {key!r} of view {view.name}")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise ReadError(f"join key {key!r} must be a non-empty string, got {value!r}")
    return value


class OnlineStore:
    """Reads features from Redis. Open once per process; safe to reuse across requests."""

    def __init__(
        self, cfg: RedisConfig | None = None, views: Mapping[str, FeatureView] | None = None
    ) -> None:
        self._cfg = cfg or RedisConfig()
        self._views = dict(views) if views is not None else load_views()
        self._client: redis.Redis = connect(self._cfg)

    def close(self) -> None:
        self._client.close()

    def get_online_features(
        self,
        features: Sequence[str],
        entity_rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None = None,
    ) -> list[dict[str, FeatureValue]]:
        """Values for each entity row, keyed ``<view>:<feature>``, in row order.

        Args:
            features: ``<view>:<feature>`` names.
            entity_rows: one mapping per entity with the views' join keys.
            as_of: the time the values describe; now by default.

        Raises:
            ReadError: an unknown view or feature, or a missing or mistyped join key.
        """
        refs = parse_refs(features, self._views)
        views = {ref.view.name: ref.view for ref in refs}
        when = as_of or datetime.now(UTC)
        entities = {name: [entity_of(view, row) for row in entity_rows] for name, view in views.items()}
        try:
            stored = self._fetch(views, entities)
        except redis.RedisError as exc:
            log.warning("online read failed, serving defaults: %s", exc)
            return [self._errors(refs, when) for _ in entity_rows]
        out: list[dict[str, FeatureValue]] = []
        for index in range(len(entity_rows)):
            row: dict[str, FeatureValue] = {}
            for name, view in views.items():
                completeness, per_entity = stored[name]
                values = assemble(view, per_entity[index], when, completeness)
                for ref in refs:
                    if ref.view.name == name:
                        row[ref.qualified] = values[ref.feature]
            out.append(row)
        return out

    def completeness(self, view: FeatureView) -> int | None:
        raw = self._client.get(completeness_key(self._cfg.key_prefix, view))
        return int(raw) if raw is not None else None

    def tiles(self, view: FeatureView, entity: str) -> list[Tile]:
        stored = self._client.hgetall(entity_key(self._cfg.key_prefix, view, entity))
        return [Tile(s, e, v) for s, e, v in decode_tiles(view, stored)]

    def _fetch(
        self, views: Mapping[str, FeatureView], entities: Mapping[str, list[str]]
    ) -> dict[str, tuple[int | None, list[list[Tile]]]]:
        pipe = self._client.pipeline(transaction=False)
        for name, view in views.items():
            pipe.get(completeness_key(self._cfg.key_prefix, view))
            for entity in entities[name]:
                pipe.hgetall(entity_key(self._cfg.key_prefix, view, entity))
        replies = iter(pipe.execute())
        result: dict[str, tuple[int | None, list[list[Tile]]]] = {}
        for name, view in views.items():
            raw = next(replies)
            completeness = int(raw) if raw is not None else None
            per_entity = [
                [Tile(s, e, v) for s, e, v in decode_tiles(view, next(replies))] for _ in entities[name]
            ]
            result[name] = (completeness, per_entity)
        return result

    def _errors(self, refs: Sequence[FeatureRef], when: datetime) -> dict[str, FeatureValue]:
        return {
            ref.qualified: FeatureValue(
                ref.view.defaults[ref.feature],
                Status.ERROR,
                from_ms(window_end_ms(ref.view, int(when.timestamp() * 1000))),
            )
            for ref in refs
        }
