"""Online reads: window aggregates merged inside Redis → ``finish`` → values with status.

Read path, per request:
1. Parse ``<view>:<feature>`` names and the entity rows; anything unknown or
   mistyped is a ``ReadError`` before Redis is touched.
2. Ask the circuit breaker. While it is open the request is answered with
   defaults (status ``error``) at once.
3. One pipelined round trip: per view, one ``EVALSHA`` of a Lua script that
   reads the completeness watermark and, for each entity, merges the tiles of
   every window (the same tile selection as ``assembly.window_values``, in
   tile-start order) and returns only the merged aggregates. Large entity
   lists are cut into chunks, one script call each, in the same pipeline, so
   no single call holds Redis for long.
4. ``assembly.finish`` applies defaults, staleness and derived features: the
   same function offline reads and ``assemble`` use.

Redis slow or down: every socket operation is bounded by
``PARITY_SERVING_TIMEOUT_S`` and redis-py's own retries are off, so a read
returns defaults with status ``error`` within that bound, and never hangs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from opentelemetry import trace
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.definition import AggKind, FeatureView, OnStale, duration_label
from features.registry import load_views
from parity.config import RedisConfig
from parity.errors import ReadError
from serving.assembly import FeatureValue, Status, Tile, finish, from_ms, to_ms, window_end_ms
from serving.breaker import BreakerState, CircuitBreaker
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from sinks.base import Value
from sinks.redis_layout import completeness_key, decode_tiles, entity_key

log = logging.getLogger(__name__)

SOURCE = "redis"
# Entities per script call: bounds how long one call keeps Redis busy.
CHUNK = 64

# KEYS[1]: completeness key; KEYS[2..]: entity hashes.
# ARGV: window end (s), tile (s), #windows, window sizes (s)..., #aggregations,
#       kinds ('c' count, 's' sum, 'n' min, 'x' max)..., ordered ('1': merge in start order).
# Returns {completeness or '', {merged value or '' per window and aggregation} per entity}.
# The tile selection is assembly.window_values': start >= end - W and start + tile <= end.
MERGE_SCRIPT = """
local find, sub, tonum, call = string.find, string.sub, tonumber, redis.call
local end_s = tonum(ARGV[1])
local tile = tonum(ARGV[2])
local nw = tonum(ARGV[3])
local lows = {}
local lo = end_s
for w = 1, nw do
  lows[w] = end_s - tonum(ARGV[3 + w])
  if lows[w] < lo then lo = lows[w] end
end
local na = tonum(ARGV[4 + nw])
local kinds = {}
for j = 1, na do kinds[j] = ARGV[4 + nw + j] end
local ordered = ARGV[5 + nw + na] == '1'
local hi = end_s - tile
local slots = nw * na
local out = {call('GET', KEYS[1]) or ''}
local vals = {}
for k = 2, #KEYS do
  local flat = call('HGETALL', KEYS[k])
  local starts, rows, n = {}, {}, 0
  for i = 1, #flat, 2 do
    local s = tonum(flat[i])
    if s ~= nil and s >= lo and s <= hi then
      n = n + 1
      starts[n] = s
      rows[n] = flat[i + 1]
    end
  end
  local order = nil
  if ordered and n > 1 then
    order = {}
    for i = 1, n do order[i] = i end
    table.sort(order, function(a, b) return starts[a] < starts[b] end)
  end
  local acc = {}
  for oi = 1, n do
    local i = oi
    if order then i = order[oi] end
    local s, row = starts[i], rows[i]
    local pos = find(row, '|', 1, true)
    for j = 1, na do
      local nxt = find(row, '|', pos + 1, true)
      vals[j] = tonum(sub(row, pos + 1, (nxt or 0) - 1))
      pos = nxt
    end
    for w = 1, nw do
      if s >= lows[w] then
        local base = (w - 1) * na
        for a = 1, na do
          local v = vals[a]
          if v ~= nil then
            local slot = base + a
            local cur = acc[slot]
            if cur == nil then
              acc[slot] = v
            else
              local kind = kinds[a]
              if kind == 'n' then
                if v < cur then acc[slot] = v end
              elseif kind == 'x' then
                if v > cur then acc[slot] = v end
              else
                acc[slot] = cur + v
              end
            end
          end
        end
      end
    end
  end
  local res = {}
  for slot = 1, slots do
    local v = acc[slot]
    if v == nil then
      res[slot] = ''
    elseif kinds[(slot - 1) % na + 1] == 'c' then
      res[slot] = string.format('%d', v)
    else
      res[slot] = string.format('%.17g', v)
    end
  end
  out[k] = res
end
return out
"""

_KIND_CODES = {AggKind.COUNT: "c", AggKind.SUM: "s", AggKind.MIN: "n", AggKind.MAX: "x"}


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


def entity_of(view: FeatureView, row: Mapping[str, Any]) -> str:
    """The view's join key value in one entity row.

    Raises:
        ReadError: the key is absent, not a string, or empty.
    """
    key = view.entity.join_key
    if not isinstance(row, Mapping):
        raise ReadError(f"entity row {row!r} must be a mapping of join key to value, e.g. {{{key!r}: 'u1'}}")
    if key not in row:
        raise ReadError(f"entity row {dict(row)!r} lacks the join key {key!r} of view {view.name}")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise ReadError(f"join key {key!r} must be a non-empty string, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True)
class _ViewPlan:
    """What the merge script needs to know about a view, computed once."""

    view: FeatureView
    static_args: tuple[str | int, ...]
    slot_names: tuple[str, ...]  # window-major, aggregation-minor, as the script returns them
    integer: tuple[bool, ...]

    @classmethod
    def of(cls, view: FeatureView) -> _ViewPlan:
        tile_s = view.tile_ms // 1000
        windows = [int(w.total_seconds()) for w in view.windows]
        kinds = [_KIND_CODES[a.kind] for a in view.aggregations]
        # Float sums depend on the order of addition; assemble adds in start order.
        ordered = any(a.kind is AggKind.SUM for a in view.aggregations)
        args: tuple[str | int, ...] = (
            tile_s,
            len(windows),
            *windows,
            len(kinds),
            *kinds,
            "1" if ordered else "0",
        )
        names = tuple(f"{a.name}_{duration_label(w)}" for w in view.windows for a in view.aggregations)
        integer = tuple(a.is_integer for _ in view.windows for a in view.aggregations)
        return cls(view, args, names, integer)

    def raw(self, reply: Sequence[bytes]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, is_int, item in zip(self.slot_names, self.integer, reply, strict=True):
            if not item:
                out[name] = None
            else:
                out[name] = int(item) if is_int else float(item)
        return out


def connect(cfg: RedisConfig, timeout_s: float) -> redis.Redis:
    """A client whose every call is bounded by ``timeout_s``, with redis-py's retries off.

    redis-py retries timeouts with backoff by default, which turns a dead
    Redis into a read that takes seconds; a read must fail fast instead.
    """
    return redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        password=cfg.password.get_secret_value() if cfg.password else None,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class OnlineStore:
    """Reads features from Redis. Open once per process; safe to share across threads.

    Args:
        cfg: where Redis is; ``RedisConfig()`` from the environment by default.
        views: the views that may be read; every view in ``features/`` by default.
        serving: timeouts and circuit-breaker settings; ``ServingConfig()`` by default.
        metrics: where to count; the process-wide registry by default.
    """

    def __init__(
        self,
        cfg: RedisConfig | None = None,
        views: Mapping[str, FeatureView] | None = None,
        *,
        serving: ServingConfig | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._cfg = cfg or RedisConfig()
        self._serving = serving or ServingConfig()
        self._views = dict(views) if views is not None else load_views()
        self._plans = {name: _ViewPlan.of(view) for name, view in self._views.items()}
        self._metrics = metrics or ServingMetrics.default()
        self._breaker = CircuitBreaker(self._serving.breaker_failures, self._serving.breaker_cooldown_s)
        self._client: redis.Redis = connect(self._cfg, self._serving.timeout_s)
        self._script = self._client.register_script(MERGE_SCRIPT)
        self._tracer = trace.get_tracer(__name__)

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
        refs = parse_refs(features, self._views)
        plans = {ref.view.name: self._plans[ref.view.name] for ref in refs}
        entities = {name: [entity_of(plan.view, row) for row in entity_rows] for name, plan in plans.items()}
        when_ms = to_ms(as_of) if as_of is not None else int(time.time() * 1000)
        with self._tracer.start_as_current_span("get_online_features") as span:
            span.set_attribute("parity.entities", len(entity_rows))
            span.set_attribute("parity.features", len(refs))
            span.set_attribute("parity.views", ",".join(plans))
            stored = self._fetch_guarded(plans, entities, when_ms)
            if stored is None:
                span.set_attribute("parity.status", Status.ERROR.value)
                out = self._defaults(refs, len(entity_rows), when_ms)
            else:
                out = self._finish(refs, plans, stored, len(entity_rows), when_ms)
        self._metrics.latency.labels(SOURCE).observe(time.perf_counter() - started)
        return out

    def completeness(self, view: FeatureView) -> int | None:
        """The view's completeness watermark in Redis (epoch ms), or None before the first tile.

        Raises:
            ReadError: Redis did not answer.
        """
        try:
            raw = self._client.get(completeness_key(self._cfg.key_prefix, view))
        except redis.RedisError as exc:
            raise ReadError(f"Redis at {self._cfg.host}:{self._cfg.port} did not answer: {exc}") from exc
        return int(raw) if raw is not None else None

    def tiles(self, view: FeatureView, entity: str) -> list[Tile]:
        """The entity's stored tiles, sorted by start (for inspection and tests).

        Raises:
            ReadError: Redis did not answer.
        """
        try:
            stored = self._client.hgetall(entity_key(self._cfg.key_prefix, view, entity))
        except redis.RedisError as exc:
            raise ReadError(f"Redis at {self._cfg.host}:{self._cfg.port} did not answer: {exc}") from exc
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
            raise ReadError(f"Redis at {self._cfg.host}:{self._cfg.port} did not answer: {exc}") from exc
        return found

    def _fetch_guarded(
        self, plans: Mapping[str, _ViewPlan], entities: Mapping[str, list[str]], when_ms: int
    ) -> dict[str, tuple[int | None, list[Sequence[bytes]]]] | None:
        """The merged aggregates, or None when Redis failed or the breaker is open."""
        if not self._breaker.allow():
            self._metrics.errors.labels(SOURCE, "circuit_open").inc()
            return None
        try:
            with self._tracer.start_as_current_span("redis.merge_windows") as span:
                span.set_attribute("db.system", "redis")
                span.set_attribute("db.operation", "EVALSHA")
                stored = self._fetch(plans, entities, when_ms)
        except redis.RedisError as exc:
            self._breaker.failure()
            reason = "timeout" if isinstance(exc, redis.TimeoutError) else "unavailable"
            self._metrics.errors.labels(SOURCE, reason).inc()
            self._metrics.breaker_open.labels(SOURCE).set(self._breaker.state is not BreakerState.CLOSED)
            log.warning("online read failed (%s), serving defaults: %s", reason, exc)
            return None
        except BaseException:
            self._breaker.failure()
            raise
        self._breaker.success()
        self._metrics.breaker_open.labels(SOURCE).set(0)
        return stored

    def _fetch(
        self, plans: Mapping[str, _ViewPlan], entities: Mapping[str, list[str]], when_ms: int
    ) -> dict[str, tuple[int | None, list[Sequence[bytes]]]]:
        calls: list[tuple[str, int]] = []  # (view, entities in the call)
        args_of: list[tuple[list[str], list[str | int]]] = []
        prefix = self._cfg.key_prefix
        for name, plan in plans.items():
            view = plan.view
            end_s = window_end_ms(view, when_ms) // 1000
            names = entities[name]
            done = 0
            while True:
                chunk = names[done : done + CHUNK]
                keys = [completeness_key(prefix, view)] + [entity_key(prefix, view, e) for e in chunk]
                args_of.append((keys, [end_s, *plan.static_args]))
                calls.append((name, len(chunk)))
                done += len(chunk)
                if done >= len(names):
                    break
        replies = self._run(args_of)
        result: dict[str, tuple[int | None, list[Sequence[bytes]]]] = {}
        for (name, _), reply in zip(calls, replies, strict=True):
            completeness = int(reply[0]) if reply[0] else None
            if name in result:
                result[name][1].extend(reply[1:])
            else:
                result[name] = (completeness, list(reply[1:]))
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
                self._client.script_load(MERGE_SCRIPT)
        raise AssertionError("unreachable")

    def _finish(
        self,
        refs: Sequence[FeatureRef],
        plans: Mapping[str, _ViewPlan],
        stored: Mapping[str, tuple[int | None, list[Sequence[bytes]]]],
        rows: int,
        when_ms: int,
    ) -> list[dict[str, FeatureValue]]:
        wanted = {name: [r for r in refs if r.view.name == name] for name in plans}
        out: list[dict[str, FeatureValue]] = [{} for _ in range(rows)]
        defaults = self._metrics.defaults
        for name, plan in plans.items():
            completeness, replies = stored[name]
            view = plan.view
            missing = stale = 0
            serves_default_when_stale = view.on_stale is OnStale.DEFAULT
            for index, reply in enumerate(replies):
                values = finish(view, plan.raw(reply), when_ms, completeness)
                row = out[index]
                for ref in wanted[name]:
                    value = values[ref.feature]
                    row[ref.qualified] = value
                    if value.status is Status.MISSING:
                        missing += 1
                    elif value.status is Status.STALE and serves_default_when_stale:
                        stale += 1
            if missing:
                defaults.labels(name, Status.MISSING.value).inc(missing)
            if stale:
                defaults.labels(name, Status.STALE.value).inc(stale)
        return out

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


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
