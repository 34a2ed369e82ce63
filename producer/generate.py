"""Deterministic synthetic ad events, in the order a real ad server would emit them.

The same ``GeneratorConfig`` (seed included) always yields the same list. Events
are returned as Avro-ready dicts for ``schemas/ad_event``: ``event_time`` is a
timezone-aware UTC ``datetime`` (millisecond precision), which fastavro writes
as ``timestamp-millis``. Every other value is the plain Python type of its
Avro field (the enum as its symbol string).

Ordering protocol:

1. Every event gets a uniformly random time in ``[start, start + span)``.
2. A share of events (``out_of_order_share``) is *late*: it is delivered as if
   its time were ``time + d`` with ``0 < d <= max_disorder``.
3. Events are sorted by that delivery time. A late event therefore arrives
   after events up to ``d`` newer than itself, and never more than
   ``max_disorder`` behind the newest event sent before it; that bound stays
   below the view's ``max_out_of_orderness`` so the pipeline drops nothing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from features.user_stats import ad_events
from parity.errors import InputError

# Late events must fit within the watermark delay of the view they feed.
VIEW_MAX_OUT_OF_ORDERNESS: timedelta = ad_events.max_out_of_orderness

# Device classes of schemas/ad_event v2 and their shares of traffic.
_DEVICES = ("mobile", "desktop", "tablet")
_DEVICE_WEIGHTS = (0.55, 0.35, 0.10)
_DEFAULT_COUNTRIES = ("US", "DE", "FR", "GB", "BR", "IN", "JP", "ES")
# Zipf exponent of user activity: the busiest user has ~150x the events of the quietest of 200.
_ZIPF_EXPONENT = 0.95
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate.

    Attributes:
        users: Distinct users; each gets at least one event when ``events >= users``.
        events: Events in total.
        start: First possible event time, timezone-aware UTC.
        span: Events fall in ``[start, start + span)``.
        seed: Makes the output reproducible.
        out_of_order_share: Share of events delivered late, in ``[0, 1]``.
        max_disorder: How far behind the newest earlier event a late event may arrive;
            must be below the view's ``max_out_of_orderness``.
        click_share: Share of events that are clicks, in ``[0, 1]``.
        ads: Size of the ad pool; ad ``i`` belongs to campaign ``i % campaigns``.
        campaigns: Size of the campaign pool.
        countries: Country pool; each user has one home country.
    """

    users: int = 200
    events: int = 20_000
    start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    span: timedelta = timedelta(days=10)
    seed: int = 0
    out_of_order_share: float = 0.05
    max_disorder: timedelta = timedelta(minutes=4)
    click_share: float = 0.1
    ads: int = 40
    campaigns: int = 6
    countries: tuple[str, ...] = _DEFAULT_COUNTRIES

    def __post_init__(self) -> None:
        for name in ("users", "ads", "campaigns"):
            if getattr(self, name) < 1:
                raise InputError(f"generator {name} must be at least 1, got {getattr(self, name)}.")
        if self.events < 0:
            raise InputError(f"generator events must be 0 or more, got {self.events}.")
        offset = self.start.utcoffset()
        if offset is None or offset != timedelta(0):
            raise InputError(
                f"generator start {self.start.isoformat()} must be timezone-aware UTC, "
                "e.g. 2026-01-01T00:00:00+00:00."
            )
        if self.span < _MS:
            raise InputError(f"generator span must be at least 1 ms, got {self.span}.")
        for name in ("out_of_order_share", "click_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise InputError(f"generator {name} must be between 0 and 1, got {share}.")
        if not _MS <= self.max_disorder < VIEW_MAX_OUT_OF_ORDERNESS:
            raise InputError(
                f"generator max_disorder {self.max_disorder} must be at least 1 ms and below the view's "
                f"max_out_of_orderness {VIEW_MAX_OUT_OF_ORDERNESS}, or the pipeline would drop late events."
            )
        if not self.countries:
            raise InputError("generator countries must not be empty.")


def generate(cfg: GeneratorConfig) -> list[dict[str, Any]]:
    """Synthetic ad events in delivery order (see the module docstring).

    Args:
        cfg: What to generate.

    Returns:
        Avro-ready dicts for ``schemas/ad_event``, ``event_time`` a UTC ``datetime``.
    """
    rng = random.Random(cfg.seed)
    # A separate stream: adding the device did not change any other generated value.
    device_rng = random.Random(f"device-{cfg.seed}")
    width = len(str(cfg.users - 1))
    user_ids = [f"user-{i:0{width}d}" for i in range(cfg.users)]
    home = {u: rng.choice(cfg.countries) for u in user_ids}
    ad_ids = [f"ad-{i:03d}" for i in range(cfg.ads)]
    campaign_of = {ad: f"campaign-{i % cfg.campaigns:02d}" for i, ad in enumerate(ad_ids)}

    # Which user is busy is itself random, so user-0000 is not always the heaviest.
    ranked = user_ids[:]
    rng.shuffle(ranked)
    weights = [1.0 / (rank + 1) ** _ZIPF_EXPONENT for rank in range(cfg.users)]
    # Everyone appears at least once when there are enough events; the rest follow the weights.
    owners = ranked[: min(cfg.users, cfg.events)]
    owners += rng.choices(ranked, weights=weights, k=cfg.events - len(owners))

    span_ms = cfg.span // _MS
    disorder_ms = cfg.max_disorder // _MS
    rows: list[tuple[int, int, dict[str, Any]]] = []
    for user in owners:
        offset_ms = rng.randrange(span_ms)
        delivery_ms = offset_ms
        if rng.random() < cfg.out_of_order_share:
            delivery_ms += rng.randint(1, disorder_ms)
        ad = rng.choice(ad_ids)
        is_click = rng.random() < cfg.click_share
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": user,
            "ad_id": ad,
            "event_type": "click" if is_click else "impression",
            "event_time": cfg.start + offset_ms * _MS,
            "campaign_id": campaign_of[ad],
            "country": home[user],
            # Clicks are billed per click, impressions per mille: two orders of magnitude apart.
            "cost": round(rng.uniform(0.2, 2.0) if is_click else rng.uniform(0.0005, 0.005), 6),
            "device": device_rng.choices(_DEVICES, weights=_DEVICE_WEIGHTS)[0],
        }
        rows.append((delivery_ms, offset_ms, event))
    # Ties on delivery time keep event-time order, so only late events are ever out of order.
    rows.sort(key=lambda row: (row[0], row[1]))
    return [event for _, _, event in rows]
