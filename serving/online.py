"""Online reads: window aggregates merged inside Redis → ``finish`` → values with status.

Read path, per request:
1. Parse ``<view>:<feature>`` names and the entity rows; anything unknown,
   mistyped or unfit for a key (``id_problem``) is a ``ReadError`` before
   Redis is touched.
2. Ask the circuit breaker. While it is open the request is answered with
   defaults (status ``error``) at once.
3. One round trip, one MGET: per view, the completeness watermark, the epoch
   key and each entity's window values as the job precomputed them
   (``sinks.redis_windows``). A view whose Redis was lost (the epoch contract
   in ``sinks.redis_layout``) is answered with defaults, status ``error``.
   Values stored for a range of window ends that holds the read's end are used
   as they are. A read at now also takes the entity's head from the same
   value: the open tile starting at the read's end (``sinks.redis_windows``),
   merged after the closed tiles by ``assembly.add_head``; its values' window
   end is then the read time. A past ``as_of`` is read tile-aligned.
4. Only entities whose stored values do not cover the read's end (a past
   ``as_of``, or values that decayed and await the job's refresh) take a
   second round trip: a Lua script merges their tiles inside Redis with the
   same function the job used to precompute, in chunks of ``CHUNK`` entities
   so no call holds Redis for long. It also returns the entity's pruned mark
   and its head.
5. ``assembly.finish`` applies defaults, staleness and derived features: the
   same function offline reads and ``assemble`` use.
6. An entity whose read window reaches back to its pruned mark (Redis deleted
   tiles that window needs; Iceberg keeps them) gets defaults with status
   ``beyond_horizon`` for the view, never an undercount. Only merged reads can
   reach it: stored values never cover such an end (``sinks.redis_windows``).
   The rule looks at the view's longest window, so a shorter window that lost
   nothing is flagged too: conservative, never wrong.

Redis slow or down: every socket operation is bounded by
``PARITY_SERVING_TIMEOUT_S`` and redis-py's own retries are off, so a read
returns defaults with status ``error`` within that bound, and never hangs.
Only the store's failures count toward the breaker (``store_failed``): a
request the caller got wrong must not open it for everyone else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
from opentelemetry import trace
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from features.definition import FeatureView, OnStale
from features.registry import load_views
from parity.config import RedisConfig
from parity.errors import ReadError
from serving.assembly import (
    FeatureValue,
    HeadSlots,
    Status,
    Tile,
    add_head,
    finish_many,
    from_ms,
    head_slots,
    to_ms,
    window_end_ms,
)
from serving.breaker import BreakerState, CircuitBreaker
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.progress import OfflineProgress
from sinks.base import Value
from sinks.lua_scripts import load_script
from sinks.redis import Client, build_client, client_kwargs, explain, mget
from sinks.redis_layout import (
    EPOCH_LOST,
    completeness_key,
    decode_tile,
    decode_tiles,
    entity_key,
    epoch_key,
    head_key,
    window_key,
)
from sinks.redis_windows import layout_args, slot_names

if TYPE_CHECKING:  # only a served-feature logging process imports Kafka's client
    from serving.feature_log import FeatureLogger

log = logging.getLogger(__name__)

SOURCE = "redis"
# Distinct feature lists whose parsing is remembered; beyond it lists are parsed per call.
_REMEMBERED_FEATURE_LISTS = 1024
# Entities per script call: bounds how long one call keeps Redis busy.
CHUNK = 64
# Longest entity id, in UTF-8 bytes. Ids are parts of Redis keys; no id system needs more.
MAX_ID_BYTES = 256
_LOST = EPOCH_LOST.encode()


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
        if not isinstance(text, str):
            raise ReadError(f"feature {text!r} must be a string <view>:<feature>")
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


def id_problem(text: str) -> str | None:
    """Why ``text`` cannot be an entity id (or a join key name), or None when it can.

    Ids become Redis keys: text that UTF-8 cannot encode (a lone surrogate
    such as ``\\ud800``, which JSON can carry) would fail inside the Redis
    client, after the request was let through. NUL is refused too: no id
    system issues it, and C-string tools and logs cut ids at it.
    """
    if not text:
        return "is empty"
    if "\x00" in text:
        return "contains NUL (\\u0000)"
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            return f"is not valid Unicode: a lone surrogate ({ascii(exc.object[exc.start])[1:-1]})"
    if size > MAX_ID_BYTES:
        return f"is {size} bytes long; the limit is {MAX_ID_BYTES}"
    return None


def entity_of(view: FeatureView, row: Mapping[str, Any]) -> str:
    """The view's join key value in one entity row.

    Raises:
        ReadError: the key is absent, not a string, or not an id (see ``id_problem``).
    """
    key = view.entity.join_key
    if not isinstance(row, Mapping):
        raise ReadError(f"entity row {row!r} must be a mapping of join key to value, e.g. {{{key!r}: 'u1'}}")
    if key not in row:
        raise ReadError(f"entity row {dict(row)!r} lacks the join key {key!r} of view {view.name}")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise ReadError(f"join key {key!r} must be a non-empty string, got {type(value).__name__} {value!r}")
    problem = id_problem(value)
    if problem is not None:
        raise ReadError(f"join key {key!r}: the value {problem}")
    return value


@dataclass(frozen=True)
class _ViewPlan:
    """What a read of one view sends and expects, computed once."""

    view: FeatureView
    layout: tuple[str | int, ...]
    slot_names: tuple[str, ...]  # window-major, aggregation-minor, as the merge returns them
    integer: tuple[bool, ...]
    longest_s: int  # the view's longest window, seconds: the pruned-mark comparison
    key_head: str  # the tile hash key without the entity
    window_head: str  # the window key without the entity
    completeness_key: str
    epoch_key: str
    head_key: str
    head_slots: HeadSlots

    @classmethod
    def of(cls, view: FeatureView, prefix: str) -> _ViewPlan:
        integer = tuple(a.is_integer for _ in view.windows for a in view.aggregations)
        return cls(
            view,
            layout_args(view),
            slot_names(view),
            integer,
            int(view.longest_window.total_seconds()),
            entity_key(prefix, view, ""),
            window_key(prefix, view, ""),
            completeness_key(prefix, view),
            epoch_key(prefix, view),
            head_key(prefix, view),
            head_slots(view),
        )

    def raw(self, slots: Sequence[bytes | None]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, is_int, item in zip(self.slot_names, self.integer, slots, strict=True):
            if not item:
                out[name] = None
            else:
                out[name] = int(item) if is_int else float(item)
        return out


class _ViewReply(NamedTuple):
    """What one read found of one view."""

    completeness: int | None
    slots: list[Sequence[bytes | None]]  # per entity
    merged: list[int]  # indexes of the entities merged at read time
    lost: str | None  # why the view's values cannot be trusted (an error reason), or None
    beyond: list[int]  # indexes of the entities whose window reaches before their pruned tiles
    heads: list[bytes | None]  # per entity, its head tile (the open tile at the read's end), if read


def connect(cfg: RedisConfig, timeout_s: float) -> Client:
    """A client whose every call is bounded by ``timeout_s``, with redis-py's retries off.

    redis-py retries timeouts with backoff by default, which turns a dead
    Redis into a read that takes seconds; a read must fail fast instead.
    Login and TLS come from ``sinks.redis.client_kwargs``, as for every client.
    """
    kwargs = client_kwargs(cfg)
    kwargs.update(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return build_client(cfg, kwargs)


class OnlineStore:
    """Reads features from Redis. Open once per process; safe to share across threads.

    Args:
        cfg: where Redis is; ``RedisConfig()`` from the environment by default.
        views: the views that may be read; every view in ``features/`` by default.
        serving: timeouts and circuit-breaker settings; ``ServingConfig()`` by default.
        metrics: where to count; the process-wide registry by default.
        feature_log: logs a sample of reads (``serving.feature_log``); the caller closes it.
    """

    def __init__(
        self,
        cfg: RedisConfig | None = None,
        views: Mapping[str, FeatureView] | None = None,
        *,
        serving: ServingConfig | None = None,
        metrics: ServingMetrics | None = None,
        offline: OfflineProgress | None = None,
        feature_log: FeatureLogger | None = None,
    ) -> None:
        """``offline`` tells a view whose epoch key this process never saw lost from new
        (``serving.progress``); without it, a Redis lost before this process started reads
        ``missing`` until the job's next write marks the loss."""
        self._cfg = cfg or RedisConfig()
        self._serving = serving or ServingConfig()
        self._views = dict(views) if views is not None else load_views()
        self._plans = {name: _ViewPlan.of(view, self._cfg.key_prefix) for name, view in self._views.items()}
        self._refs: dict[tuple[str, ...], list[FeatureRef]] = {}
        self._metrics = metrics or ServingMetrics.default()
        # Metric children bound once: looking a label set up costs a lock on every read.
        self._latency = self._metrics.latency.labels(SOURCE)
        self._breaker_open = self._metrics.breaker_open.labels(SOURCE)
        self._read = {name: self._metrics.entities.labels(name) for name in self._views}
        self._merged = {name: self._metrics.merged.labels(name) for name in self._views}
        self._breaker = CircuitBreaker(self._serving.breaker_failures, self._serving.breaker_cooldown_s)
        self._client: Client = connect(self._cfg, self._serving.timeout_s)
        self._script = self._client.register_script(load_script("merge_windows"))
        self._tracer = trace.get_tracer(__name__)
        # Views whose epoch key this process has read: from then on its absence means a lost Redis.
        self._seen_epoch: set[str] = set()
        self._offline = offline
        self._feature_log = feature_log

    @property
    def views(self) -> Mapping[str, FeatureView]:
        return self._views

    @property
    def metrics(self) -> ServingMetrics:
        return self._metrics

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        """Does Redis answer within the timeout? Never raises."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

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
        started = time.perf_counter()
        refs = self._parse(features)
        plans = {ref.view.name: self._plans[ref.view.name] for ref in refs}
        entities = {name: [entity_of(plan.view, row) for row in entity_rows] for name, plan in plans.items()}
        # At now the read merges the head: the open tile up to now. A past as_of is read
        # tile-aligned: the open tile of that time has moved on. window_end says which.
        with_head = as_of is None
        when_ms = to_ms(as_of) if as_of is not None else int(time.time() * 1000)
        with self._tracer.start_as_current_span("get_online_features") as span:
            if span.is_recording():
                span.set_attribute("parity.entities", len(entity_rows))
                span.set_attribute("parity.features", len(refs))
                span.set_attribute("parity.views", ",".join(plans))
            stored = self._fetch_guarded(plans, entities, when_ms, with_head)
            if stored is None:
                span.set_attribute("parity.status", Status.ERROR.value)
                out = self._defaults(refs, len(entity_rows), when_ms)
            else:
                out = self._finish(refs, plans, stored, len(entity_rows), when_ms, with_head)
            # Sampled first: a read that is not logged builds nothing for the log.
            if self._feature_log is not None and self._feature_log.sampled():
                self._feature_log.log(refs, entities, out, span.get_span_context())
        self._latency.observe(time.perf_counter() - started)
        return out

    def lost_views(self) -> list[str] | None:
        """The views whose Redis was lost (the epoch contract), in one MGET; None if Redis
        does not answer. Never raises."""
        plans = list(self._plans.items())
        try:
            epochs: list[bytes | None] = mget(self._client, [plan.epoch_key for _, plan in plans])
        except redis.RedisError:
            return None
        return [
            name
            for (name, plan), epoch in zip(plans, epochs, strict=True)
            if self._lost(name, plan.view, epoch)
        ]

    def head_watermarks(self) -> dict[str, int | None] | None:
        """Per view, its head watermark (epoch ms): the newest event time in a live tile the job
        has written, None before any; None if Redis does not answer. Never raises.

        Reads at now reflect events up to about it: its lag behind the clock is the
        view's freshness (``freshness_lag_ms`` is the job's own figure of it).
        """
        plans = list(self._plans.items())
        try:
            raw: list[bytes | None] = mget(self._client, [plan.head_key for _, plan in plans])
        except redis.RedisError:
            return None
        return {name: None if v is None else int(v) for (name, _), v in zip(plans, raw, strict=True)}

    def _lost(self, name: str, view: FeatureView, epoch: bytes | None) -> bool:
        """Whether a view's epoch value says its Redis was lost; remembers epochs it has seen."""
        if epoch is not None and epoch != _LOST:
            self._seen_epoch.add(name)
            return False
        return epoch == _LOST or name in self._seen_epoch or self._written_offline(view)

    def _written_offline(self, view: FeatureView) -> bool:
        """An absent epoch on a view with offline progress: a Redis lost before this process saw it."""
        return self._offline is not None and self._offline.has_progress(view) is True

    def _parse(self, features: Sequence[str]) -> list[FeatureRef]:
        """``parse_refs``, remembered per feature list: a model server asks for the same lists."""
        key = tuple(features)
        refs = self._refs.get(key)
        if refs is None:
            refs = parse_refs(features, self._views)
            if len(self._refs) < _REMEMBERED_FEATURE_LISTS:
                self._refs[key] = refs
        return refs

    def completeness(self, view: FeatureView) -> int | None:
        """The view's completeness watermark in Redis (epoch ms), or None before the first tile.

        Raises:
            ReadError: Redis did not answer.
        """
        try:
            raw = self._client.get(completeness_key(self._cfg.key_prefix, view))
        except redis.RedisError as exc:
            raise ReadError(
                f"Redis at {self._cfg.address} did not answer: {explain(self._cfg, exc)}"
            ) from exc
        return int(raw) if raw is not None else None

    def tiles(self, view: FeatureView, entity: str) -> list[Tile]:
        """The entity's stored tiles, sorted by start (for inspection and tests).

        Raises:
            ReadError: Redis did not answer.
        """
        try:
            stored = self._client.hgetall(entity_key(self._cfg.key_prefix, view, entity))
        except redis.RedisError as exc:
            raise ReadError(
                f"Redis at {self._cfg.address} did not answer: {explain(self._cfg, exc)}"
            ) from exc
        return [Tile(s, e, v) for s, e, v in decode_tiles(view, stored)]

    def sample_entities(self, view: FeatureView, limit: int) -> list[str]:
        """Up to ``limit`` entities that have tiles in Redis (a SCAN, for the skew check).

        Raises:
            ReadError: Redis did not answer.
        """
        head = entity_key(self._cfg.key_prefix, view, "")
        found: list[str] = []
        try:
            for key in self._client.scan_iter(match=f"{_glob_escape(head)}*", count=1000):
                found.append(key.decode()[len(head) :])
                if len(found) >= limit:
                    break
        except redis.RedisError as exc:
            raise ReadError(
                f"Redis at {self._cfg.address} did not answer: {explain(self._cfg, exc)}"
            ) from exc
        return found

    def _fetch_guarded(
        self, plans: Mapping[str, _ViewPlan], entities: Mapping[str, list[str]], when_ms: int, with_head: bool
    ) -> dict[str, _ViewReply] | None:
        """The window aggregates per view, or None when Redis failed or the breaker is open.

        Only the store's own failures count toward the breaker; see ``store_failed``.
        """
        if not self._breaker.allow():
            self._metrics.errors.labels(SOURCE, "circuit_open").inc()
            return None
        # Let through while half-open, this call is the breaker's one probe and must end it.
        probing = self._breaker.state is BreakerState.HALF_OPEN
        try:
            with self._tracer.start_as_current_span("redis.read_windows") as span:
                stored = self._fetch(plans, entities, when_ms, with_head)
                if span.is_recording():
                    span.set_attribute("db.system", "redis")
                    span.set_attribute("db.operation", "MGET")
                    span.set_attribute("parity.merged_entities", sum(len(r.merged) for r in stored.values()))
        except BaseException as exc:
            if not store_failed(exc):
                # Not the store's failure: if it counted, one shape of request could open the
                # breaker for every caller. A probe still has to end, or the breaker waits forever.
                if probing:
                    self._breaker.failure()
                raise
            self._breaker.failure()
            reason = failure_reason(exc)
            self._metrics.errors.labels(SOURCE, reason).inc()
            self._breaker_open.set(self._breaker.state is not BreakerState.CLOSED)
            log.warning("online read failed (%s), serving defaults: %s", reason, explain(self._cfg, exc))
            return None
        self._breaker.success()
        self._breaker_open.set(0)
        return stored

    def _fetch(
        self, plans: Mapping[str, _ViewPlan], entities: Mapping[str, list[str]], when_ms: int, with_head: bool
    ) -> dict[str, _ViewReply]:
        """Per view: completeness, the slots of each entity, the entities merged at read time, loss,
        and with ``with_head`` each entity's head tile."""
        keys: list[str] = []
        for name, plan in plans.items():
            head = plan.window_head
            keys.append(plan.completeness_key)
            keys.append(plan.epoch_key)
            keys.extend([head + entity for entity in entities[name]])
        replies: list[bytes | None] = mget(self._client, keys)
        result: dict[str, _ViewReply] = {}
        merges: list[tuple[str, int, list[str], list[int]]] = []  # (view, end, keys, entity indexes)
        at = 0
        for name, plan in plans.items():
            raw_completeness, epoch = replies[at], replies[at + 1]
            at += 2
            names = entities[name]
            stored_values = replies[at : at + len(names)]
            at += len(names)
            if self._lost(name, plan.view, epoch):
                result[name] = _ViewReply(None, [], [], "store_lost", [], [])
                continue
            end_s = window_end_ms(plan.view, when_ms) // 1000
            width = len(plan.slot_names)
            absent = (None,) * width
            slots: list[Sequence[bytes | None]] = []
            heads: list[bytes | None] = []
            to_merge: list[int] = []
            head_field = b"#%d=" % end_s
            for index, stored in enumerate(stored_values):
                heads.append(None)
                if stored is None:  # no tiles at all
                    slots.append(absent)
                    continue
                # <from>|<until>|<slots>[|<until 2>|<slots>][#<start>=<tile>...]: sinks.redis_windows.
                stored, hash_mark, open_tiles = stored.partition(b"#")
                if with_head and hash_mark:
                    heads[index] = _open_tile(b"#" + open_tiles, head_field)
                parts = stored.split(b"|")
                until = int(parts[1])
                if int(parts[0]) <= end_s < until:
                    slots.append(parts[2 : 2 + width])
                elif len(parts) > 2 + width and until <= end_s < int(parts[2 + width]):
                    slots.append(parts[3 + width :])
                else:
                    to_merge.append(index)
                    slots.append(absent)
            for begin in range(0, len(to_merge), CHUNK):
                chunk = to_merge[begin : begin + CHUNK]
                merges.append(
                    (name, end_s, [plan.completeness_key] + [plan.key_head + names[i] for i in chunk], chunk)
                )
            completeness = int(raw_completeness) if raw_completeness is not None else None
            result[name] = _ViewReply(completeness, slots, to_merge, None, [], heads)
        if merges:
            calls = [(script_keys, [end, *plans[view].layout]) for view, end, script_keys, _ in merges]
            merged = self._run(calls)
            for (name, end_s, _, chunk), reply in zip(merges, merged, strict=True):
                view_slots, beyond, view_heads = result[name].slots, result[name].beyond, result[name].heads
                # Windows starting at or before the newest pruned tile may lack pruned tiles.
                reach = end_s - plans[name].longest_s
                for index, entity_reply in zip(chunk, reply[1:], strict=True):
                    view_slots[index] = entity_reply[:-2]
                    pruned, head = entity_reply[-2], entity_reply[-1]
                    if pruned and reach <= int(pruned):
                        beyond.append(index)
                    view_heads[index] = head if with_head and head else None
        return result

    def _run(self, calls: Sequence[tuple[list[str], list[str | int]]]) -> list[Any]:
        """EVALSHA every call in one pipeline; load the script once if Redis lacks it."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            try:
                replies: list[Any] = pipe.execute()
                return replies
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._client.script_load(load_script("merge_windows"))
        raise AssertionError("unreachable")

    def _finish(
        self,
        refs: Sequence[FeatureRef],
        plans: Mapping[str, _ViewPlan],
        stored: Mapping[str, _ViewReply],
        rows: int,
        when_ms: int,
        with_head: bool,
    ) -> list[dict[str, FeatureValue]]:
        out: list[dict[str, FeatureValue]] = [{} for _ in range(rows)]
        defaults = self._metrics.defaults
        for name, plan in plans.items():
            completeness, replies, merged, lost, beyond, heads = stored[name]
            view = plan.view
            if lost is not None:
                self._lost_view(refs, name, lost, out, when_ms)
                continue
            self._read[name].inc(len(replies))
            if merged:
                self._merged[name].inc(len(merged))
            wanted = [(ref.feature, ref.qualified) for ref in refs if ref.view.name == name]
            raws = [plan.raw(reply) for reply in replies]
            # A view without live tiles has no head: its reads stay tile-aligned.
            live = with_head and view.freshness is not None
            if live:
                for index, tile in enumerate(heads):
                    if tile:  # <events>|<agg>...: the tile codec of sinks.redis_layout
                        add_head(raws[index], decode_tile(view, b"0", tile)[2], plan.head_slots)
            finished = finish_many(view, raws, when_ms, completeness, with_head=live)
            for index in beyond:
                finished[index] = _beyond_horizon(view, finished[index])
            serves_default_when_stale = view.on_stale is OnStale.DEFAULT
            missing = stale = pruned = 0
            for row, values in zip(out, finished, strict=True):
                for feature, qualified in wanted:
                    value = row[qualified] = values[feature]
                    if value.status is Status.MISSING:
                        missing += 1
                    elif value.status is Status.STALE and serves_default_when_stale:
                        stale += 1
                    elif value.status is Status.BEYOND_HORIZON:
                        pruned += 1
            if missing:
                defaults.labels(name, Status.MISSING.value).inc(missing)
            if stale:
                defaults.labels(name, Status.STALE.value).inc(stale)
            if pruned:
                defaults.labels(name, Status.BEYOND_HORIZON.value).inc(pruned)
        return out

    def _lost_view(
        self,
        refs: Sequence[FeatureRef],
        name: str,
        reason: str,
        out: list[dict[str, FeatureValue]],
        when_ms: int,
    ) -> None:
        """Defaults with status ``error`` for every value of a view whose Redis was lost."""
        mine = [ref for ref in refs if ref.view.name == name]
        row = self._defaults(mine, len(out), when_ms)[0] if out else {}
        for values in out:
            values.update(row)
        # Counted, not logged: a log line per read would flood the log until the repair.
        self._metrics.errors.labels(SOURCE, reason).inc()

    def _defaults(self, refs: Sequence[FeatureRef], rows: int, when_ms: int) -> list[dict[str, FeatureValue]]:
        row = {
            ref.qualified: FeatureValue(
                ref.view.defaults[ref.feature], Status.ERROR, from_ms(window_end_ms(ref.view, when_ms))
            )
            for ref in refs
        }
        for ref in refs:
            self._metrics.defaults.labels(ref.view.name, Status.ERROR.value).inc(rows)
        return [dict(row) for _ in range(rows)]


def _open_tile(open_tiles: bytes, field: bytes) -> bytes | None:
    """The tile stored after ``field`` (``#<start>=``) among a window key's open tiles, if any."""
    at = open_tiles.find(field)
    if at < 0:
        return None
    begin = at + len(field)
    end = open_tiles.find(b"#", begin)
    return open_tiles[begin:] if end < 0 else open_tiles[begin:end]


def _beyond_horizon(view: FeatureView, values: Mapping[str, FeatureValue]) -> dict[str, FeatureValue]:
    """Every value of one entity as the default with status ``beyond_horizon``."""
    return {
        name: FeatureValue(view.defaults[name], Status.BEYOND_HORIZON, value.window_end)
        for name, value in values.items()
    }


def store_failed(exc: BaseException) -> bool:
    """Did Redis fail (unreachable, slow, an error reply), rather than the request or this code?

    ``DataError`` is redis-py refusing an argument before sending anything,
    and an encoding error never reaches Redis either: neither is the store's.
    """
    return isinstance(exc, redis.RedisError) and not isinstance(exc, redis.DataError)


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a store failure: a refused login is a setting to fix, not an outage."""
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if isinstance(exc, (redis.AuthenticationError, NoPermissionError)):
        return "auth"
    return "unavailable"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
