"""The feature definition API: one frozen, declarative value per feature view.

A view declares everything that must never drift between training and
serving: entity, source, tile size, aggregations, windows, derived features,
defaults, staleness policy, version and owner. Validation happens at
construction and names the field to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from features import predicate
from parity.errors import DefinitionError

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _check_ident(value: str, what: str) -> None:
    if not _IDENT.match(value):
        raise DefinitionError(
            f"{what} {value!r} is not a valid name: use lower-case letters, digits and '_', "
            "starting with a letter (it becomes a SQL column and a Redis field)."
        )


def duration_label(size: timedelta) -> str:
    """Short label for a duration: 1d, 7d, 1h, 15m."""
    seconds = int(size.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


class AggKind(Enum):
    """Aggregations a tile can hold. Every one merges across tiles without the raw events."""

    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"


# How an entity id is written to the served-feature log (serving/feature_log.py).
LOG_KEY_MODES = ("hash", "redact", "plain")


@dataclass(frozen=True)
class Entity:
    """What features describe (a user, an ad) and the key that names one.

    Args:
        log_key: how the served-feature log writes an entity id. ``hash`` (the
            default): a keyed HMAC-SHA256, so records of one entity still join
            up without the log holding the id; ``redact``: a fixed marker;
            ``plain``: the id itself, only for ids that are not personal data.
    """

    name: str
    join_key: str
    log_key: Literal["hash", "redact", "plain"] = "hash"

    def __post_init__(self) -> None:
        _check_ident(self.name, "entity name")
        _check_ident(self.join_key, "entity join_key")
        if self.log_key not in LOG_KEY_MODES:
            raise DefinitionError(
                f"entity {self.name!r}: log_key {self.log_key!r} is not one of {list(LOG_KEY_MODES)}; "
                "ids are personal data unless declared otherwise, so the default is 'hash'."
            )


@dataclass(frozen=True)
class Source:
    """A Kafka topic of Avro events and how event time is read from it.

    Args:
        topic: the Kafka topic.
        schema: the subject folder under schemas/ holding the .avsc versions.
        event_time_field: a timestamp-millis field of the schema.
        max_out_of_orderness: how far behind the newest event an event may
            arrive and still be counted in its tile (the watermark delay).
        subject: registry subject; Confluent's TopicNameStrategy by default.
    """

    topic: str
    schema: str
    event_time_field: str
    max_out_of_orderness: timedelta
    subject: str = ""

    def __post_init__(self) -> None:
        if not self.topic:
            raise DefinitionError("source.topic is empty: name the Kafka topic the events are in.")
        _check_ident(self.event_time_field, "source.event_time_field")
        if self.max_out_of_orderness < timedelta(0):
            raise DefinitionError("source.max_out_of_orderness is negative: use timedelta(0) or more.")
        if self.max_out_of_orderness.microseconds:
            raise DefinitionError("source.max_out_of_orderness must be whole seconds.")
        if not self.subject:
            object.__setattr__(self, "subject", f"{self.topic}-value")


@dataclass(frozen=True)
class Aggregation:
    """One partial aggregate kept per tile.

    Args:
        name: the tile column and the stem of its window features
            (``clicks`` gives ``clicks_1d``, ``clicks_7d``).
        kind: how values combine, within a tile and across tiles.
        column: the event field aggregated; not used by COUNT.
        where: optional SQL boolean expression over event fields that
            selects the events counted, e.g. ``event_type = 'click'``. Flink
            runs it in the job and Arrow over the raw archive, so it is held
            to the grammar both evaluate alike (``features.predicate``).
    """

    name: str
    kind: AggKind
    column: str | None = None
    where: str | None = None

    def __post_init__(self) -> None:
        _check_ident(self.name, "aggregation name")
        if self.kind is AggKind.COUNT and self.column is not None:
            raise DefinitionError(
                f"aggregation {self.name!r}: COUNT takes no column; use where= to count a subset."
            )
        if self.kind is not AggKind.COUNT and not self.column:
            raise DefinitionError(
                f"aggregation {self.name!r}: {self.kind.name} needs column= naming a numeric event field."
            )
        if self.where is not None:
            try:
                predicate.parse(self.where)
            except DefinitionError as exc:
                raise DefinitionError(f"aggregation {self.name!r}: {exc}") from None

    @property
    def filter(self) -> predicate.Expr | None:
        """``where=`` parsed: what the offline head evaluates (the job hands Flink the text)."""
        return None if self.where is None else predicate.parse(self.where)

    @property
    def is_integer(self) -> bool:
        return self.kind is AggKind.COUNT


@dataclass(frozen=True)
class Ratio:
    """A derived feature: numerator / denominator, both window features of the view.

    Args:
        name: the feature name, e.g. ``click_rate_7d``.
        numerator: a window feature, e.g. ``clicks_7d``.
        denominator: a window feature, e.g. ``impressions_7d``.
        on_zero: the value when the denominator is zero (no impressions
            means no evidence of a rate, so the default rate is usual).
    """

    name: str
    numerator: str
    denominator: str
    on_zero: float


class OnStale(Enum):
    """What a read serves when the view's completeness watermark is too old."""

    SERVE = "serve"  # the last known value, marked stale
    DEFAULT = "default"  # the default, marked stale


@dataclass(frozen=True)
class FeatureView:
    """A feature view: one entity, one source, tiles, windows and policies.

    The value of a window feature of size W at time t merges the entity's tiles
    with ``tile_start >= end - W`` and ``tile_start + tile <= end``, where
    ``end`` is t rounded down to a tile boundary.
    """

    name: str
    version: int
    owner: str
    entity: Entity
    source: Source
    tile: timedelta
    aggregations: tuple[Aggregation, ...]
    windows: tuple[timedelta, ...]
    defaults: Mapping[str, float]
    max_staleness: timedelta
    derived: tuple[Ratio, ...] = ()
    on_stale: OnStale = OnStale.SERVE
    description: str = ""
    # Tiles older than the longest window plus this margin are pruned online.
    prune_margin: timedelta = field(default=timedelta(days=1))
    # How often the job writes each entity's open tile to Redis, at most (its live
    # tile: online reads at now see events this recent); None writes closed tiles only.
    freshness: timedelta | None = timedelta(seconds=1)

    def __post_init__(self) -> None:
        _check_ident(self.name, "view name")
        if self.version < 1:
            raise DefinitionError(f"view {self.name!r}: version must be >= 1, got {self.version}.")
        if not self.owner:
            raise DefinitionError(f"view {self.name!r}: owner is empty; name the team that answers for it.")
        self._check_tile()
        self._check_aggregations()
        self._check_windows()
        self._check_derived()
        self._check_defaults()
        if self.max_staleness <= timedelta(0):
            raise DefinitionError(f"view {self.name!r}: max_staleness must be positive.")
        if self.freshness is not None and not timedelta(milliseconds=10) <= self.freshness < self.tile:
            raise DefinitionError(
                f"view {self.name!r}: freshness must be at least 10 ms and shorter than the tile "
                f"({self.tile}), got {self.freshness}; None writes closed tiles only."
            )
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def _check_tile(self) -> None:
        seconds = self.tile.total_seconds()
        if seconds < 60 or seconds % 60:
            raise DefinitionError(
                f"view {self.name!r}: tile {self.tile} must be a whole number of minutes, at least 1 minute."
            )
        if 86400 % seconds and seconds % 86400:
            raise DefinitionError(
                f"view {self.name!r}: tile {self.tile} must divide a day or be whole days, "
                "so tiles line up with day partitions."
            )

    def _check_aggregations(self) -> None:
        if not self.aggregations:
            raise DefinitionError(f"view {self.name!r}: declare at least one aggregation.")
        names = [a.name for a in self.aggregations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DefinitionError(f"view {self.name!r}: aggregation names repeat: {dupes}.")
        reserved = {"events", self.entity.join_key, "tile_start", "tile_end"}
        clash = sorted(reserved & set(names))
        if clash:
            raise DefinitionError(f"view {self.name!r}: aggregation names {clash} are reserved; rename them.")

    def _check_windows(self) -> None:
        if not self.windows:
            raise DefinitionError(f"view {self.name!r}: declare at least one window.")
        for window in self.windows:
            if window <= timedelta(0) or window % self.tile:
                raise DefinitionError(
                    f"view {self.name!r}: window {window} is not a positive multiple of the tile "
                    f"({self.tile}); windows are assembled from whole tiles."
                )
        labels = [duration_label(w) for w in self.windows]
        if len(set(labels)) != len(labels):
            raise DefinitionError(f"view {self.name!r}: windows repeat: {labels}.")

    def _check_derived(self) -> None:
        known = set(self.window_features)
        for ratio in self.derived:
            _check_ident(ratio.name, "derived feature name")
            for part in (ratio.numerator, ratio.denominator):
                if part not in known:
                    raise DefinitionError(
                        f"view {self.name!r}: derived {ratio.name!r} uses {part!r}, which is not a window "
                        f"feature of this view; choose one of {sorted(known)}."
                    )
            if ratio.name in known:
                raise DefinitionError(f"view {self.name!r}: derived {ratio.name!r} shadows a window feature.")

    def _check_defaults(self) -> None:
        features = set(self.feature_names)
        missing = sorted(features - set(self.defaults))
        if missing:
            raise DefinitionError(
                f"view {self.name!r}: no default for {missing}; every feature needs a cold-start default."
            )
        unknown = sorted(set(self.defaults) - features)
        if unknown:
            raise DefinitionError(f"view {self.name!r}: defaults name unknown features {unknown}.")

    @cached_property  # read on every online read; computed once per view
    def window_features(self) -> tuple[str, ...]:
        """``<aggregation>_<window>`` for every aggregation and window, in declaration order."""
        return tuple(f"{a.name}_{duration_label(w)}" for a in self.aggregations for w in self.windows)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return self.window_features + tuple(r.name for r in self.derived)

    @property
    def longest_window(self) -> timedelta:
        return max(self.windows)

    @property
    def tile_ms(self) -> int:
        return int(self.tile.total_seconds() * 1000)

    @property
    def qualified_name(self) -> str:
        """Name and version, as used in table and key names: ``user_stats_v1``."""
        return f"{self.name}_v{self.version}"
