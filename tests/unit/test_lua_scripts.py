"""The Redis Lua scripts, without a Redis: loaded, held to their headers, and run under Lua 5.1.

``LuaRedis`` runs the scripts in the Lua Redis embeds (5.1, through lupa)
against an in-memory store with only the commands the scripts call, and
converts values the way Redis does where the scripts depend on it: a missing
value is ``false``, replies are tables, numbers go back as integers, and a
script may neither create nor read an undefined global. The sink and the
online store run on it unchanged, so each test drives a script through its
real Python caller. The same scripts run against a real Redis in
tests/integration.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
import redis
from lupa.lua51 import LuaError, LuaRuntime, lua_type
from prometheus_client import CollectorRegistry

import serving.online
import sinks.lua_scripts
import sinks.redis
from parity.config import RedisConfig
from serving.assembly import add_head, assemble, finish, from_ms, head_slots, to_ms, window_values
from serving.metrics import ServingMetrics
from serving.online import OnlineStore
from sinks.base import TileRow
from sinks.lua_scripts import INCLUDE, load_script
from sinks.redis import RedisTileSink
from sinks.redis_layout import (
    EPOCH_LOST,
    PRUNED_FIELD,
    completeness_key,
    due_key,
    entity_key,
    epoch_key,
    late_counted_key,
    late_events_key,
    window_key,
)
from sinks.redis_windows import layout_args
from tests.unit.views import spend, user_stats

SCRIPTS = (
    "merge_windows",
    "set_tiles",
    "refresh_windows",
    "count_late",
    "advance_completeness",
    "mark_pruned",
)
INCLUDED = ("windows_lib",)
WINDOW_SCRIPTS = ("merge_windows", "set_tiles", "refresh_windows")

HOUR = 3_600_000
T0 = to_ms(datetime(2026, 3, 1, tzinfo=UTC))
NOW = T0 + 7 * 24 * HOUR + 20 * 60_000  # 20 minutes into the hour after seven days of tiles
PREFIX = "t"
FEATURES = [f"spend:{f}" for f in spend.feature_names]

# Set up once per Lua state: Redis's global protection, then a compile and a run.
_RUNNER = """
local loadstring, rawset, error, tostring = loadstring, rawset, error, tostring
setmetatable(_G, {
  __newindex = function() error('Attempt to modify a readonly table', 2) end,
  __index = function(_, name)
    error('Script attempted to access nonexistent global variable ' .. tostring(name), 2)
  end,
})
local function compile(src)
  local chunk, err = loadstring(src, '=script')
  if chunk == nil then error(err, 0) end
  return chunk
end
local function run(chunk, keys, argv)
  rawset(_G, 'KEYS', keys)
  rawset(_G, 'ARGV', argv)
  return chunk()
end
return compile, run
"""


class Hash(dict[str, str]):
    pass


class ZSet(dict[str, float]):
    pass


def _text(value: Any) -> str:
    """An argument from the client, as redis-py encodes it."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _lua_text(value: Any) -> str:
    """An argument of redis.call, as Redis takes it: a number printed with 17 digits."""
    if isinstance(value, bool):
        raise redis.ResponseError("Lua redis lib command arguments must be strings or integers")
    return f"{value:.17g}" if isinstance(value, int | float) else str(value)


class LuaRedis:
    """Strings, hashes and sorted sets; the commands the scripts call; EVALSHA under Lua 5.1."""

    def __init__(self) -> None:
        self.data: dict[str, str | Hash | ZSet] = {}
        self.evals: list[tuple[str, list[str], list[str]]] = []
        self._lua = LuaRuntime(register_eval=False, register_builtins=False)
        self._lua.globals().redis = self._lua.table_from({"call": self._call})
        self._compile, self._run = self._lua.execute(_RUNNER)
        self._scripts: dict[str, Any] = {}

    # Scripting, as the sink and the online store use it.
    def register_script(self, text: str) -> FakeScript:
        return FakeScript(self, text)

    def script_load(self, text: str) -> str:
        sha = hashlib.sha1(text.encode()).hexdigest()
        self._scripts[sha] = self._compile(text)
        return sha

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if sha not in self._scripts:
            raise redis.exceptions.NoScriptError("No matching script. Please use EVAL.")
        keys = [_text(k) for k in keys_and_args[:numkeys]]
        args = [_text(a) for a in keys_and_args[numkeys:]]
        self.evals.append((sha, keys, args))
        try:
            reply = self._run(self._scripts[sha], self._lua.table_from(keys), self._lua.table_from(args))
        except LuaError as exc:
            raise redis.ResponseError(str(exc)) from exc
        return self._reply(reply)

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    # The plain commands the Python side calls.
    def get(self, key: str) -> bytes | None:
        value = self._typed(key, str)
        return None if value is None else value.encode()

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.get(k) if isinstance(self.data.get(k), str) else None for k in keys]

    def set(self, key: str, value: Any, nx: bool = False) -> bool | None:
        if nx and key in self.data:
            return None
        self.data[key] = _text(value)
        return True

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {f.encode(): v.encode() for f, v in (self._typed(key, Hash) or {}).items()}

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass

    # redis.call: only what the scripts use.
    def _call(self, name: str, *args: Any) -> Any:
        handler = getattr(self, f"_{name.lower()}", None)
        if handler is None:
            raise redis.ResponseError(f"{name} is not faked")
        return self._to_lua(handler(*(_lua_text(a) for a in args)))

    def _get(self, key: str) -> str | None:
        return self._typed(key, str)

    def _set(self, key: str, value: str) -> dict[str, str]:
        self.data[key] = value
        return {"ok": "OK"}

    def _exists(self, *keys: str) -> int:
        return sum(k in self.data for k in keys)

    def _incrby(self, key: str, by: str) -> int:
        total = int(self._typed(key, str) or "0") + int(by)
        self.data[key] = str(total)
        return total

    def _hget(self, key: str, field: str) -> str | None:
        return (self._typed(key, Hash) or {}).get(field)

    def _hset(self, key: str, *pairs: str) -> int:
        return self._add(key, Hash, pairs[::2], pairs[1::2])

    def _hdel(self, key: str, *fields: str) -> int:
        return self._remove(key, Hash, fields)

    def _hkeys(self, key: str) -> list[str]:
        return list(self._typed(key, Hash) or {})

    def _hgetall(self, key: str) -> list[str]:
        return [part for item in (self._typed(key, Hash) or {}).items() for part in item]

    def _zadd(self, key: str, *pairs: str) -> int:
        return self._add(key, ZSet, pairs[1::2], [float(score) for score in pairs[::2]])

    def _zrem(self, key: str, *members: str) -> int:
        return self._remove(key, ZSet, members)

    def _zrangebyscore(self, key: str, low: str, high: str, *limit: str) -> list[str]:
        if limit[:1] != ("LIMIT",) or len(limit) != 3 or "(" in low + high:
            raise redis.ResponseError("only ZRANGEBYSCORE key min max LIMIT offset count is faked")
        lo, hi, offset, count = float(low), float(high), int(limit[1]), int(limit[2])
        ordered = sorted((s, m) for m, s in (self._typed(key, ZSet) or {}).items() if lo <= s <= hi)
        taken = ordered[offset:] if count < 0 else ordered[offset : offset + count]
        return [m for _, m in taken]

    def _typed(self, key: str, kind: type) -> Any:
        value = self.data.get(key)
        if value is not None and type(value) is not kind:
            raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return value

    def _add(self, key: str, kind: type[Hash | ZSet], names: Sequence[str], values: Sequence[Any]) -> int:
        if not names or len(names) != len(values):
            raise redis.ResponseError("wrong number of arguments")
        into = self._typed(key, kind)
        if into is None:
            into = self.data[key] = kind()
        added = len(set(names) - into.keys())
        into.update(zip(names, values, strict=True))
        return added

    def _remove(self, key: str, kind: type[Hash | ZSet], names: Sequence[str]) -> int:
        held = self._typed(key, kind) or {}
        gone = sum(held.pop(n, None) is not None for n in names)
        if key in self.data and not held:
            del self.data[key]  # Redis deletes an emptied hash or sorted set
        return gone

    def _to_lua(self, value: Any) -> Any:
        """A reply as a script sees it: nil is false, an array or a status is a table."""
        if value is None:
            return False
        if isinstance(value, list | dict):
            return self._lua.table_from(value)
        return value

    def _reply(self, value: Any) -> Any:
        """A script's result as the client gets it: a table is an array up to its first nil."""
        if value is None or value is False:
            return None
        if value is True:
            return 1
        if isinstance(value, int | float):
            return int(value)
        if isinstance(value, str):
            return value.encode()
        assert lua_type(value) == "table"
        if value["err"] is not None:
            raise redis.ResponseError(value["err"])
        out = []
        while value[len(out) + 1] is not None:
            out.append(self._reply(value[len(out) + 1]))
        return out


class FakeScript:
    """What register_script returns: runs by EVALSHA, loading the script first as redis-py would."""

    def __init__(self, server: LuaRedis, text: str) -> None:
        self.server = server
        self.script = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __call__(self, keys: Any = (), args: Any = (), client: Any = None) -> Any:
        client = client or self.server
        client.script_load(self.script)
        return client.evalsha(self.sha, len(keys), *keys, *args)


class FakePipeline:
    """Queues EVALSHA calls; runs them all on execute, then raises the first error, as redis-py does."""

    def __init__(self, server: LuaRedis) -> None:
        self.server = server
        self.queued: list[tuple[Any, ...]] = []

    def script_load(self, text: str) -> str:
        return self.server.script_load(text)

    def evalsha(self, *call: Any) -> FakePipeline:
        self.queued.append(call)
        return self

    def execute(self) -> list[Any]:
        replies: list[Any] = []
        for call in self.queued:
            try:
                replies.append(self.server.evalsha(*call))
            except redis.ResponseError as exc:
                replies.append(exc)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def server(monkeypatch):
    fake = LuaRedis()
    monkeypatch.setattr(sinks.redis, "connect", lambda cfg: fake)
    monkeypatch.setattr(serving.online, "connect", lambda cfg, timeout_s: fake)
    return fake


def open_sink(view, clock=None) -> RedisTileSink:
    sink = RedisTileSink(view, RedisConfig(key_prefix=PREFIX), clock=clock or Clock(NOW))
    sink.open()
    return sink


def open_store() -> tuple[OnlineStore, ServingMetrics]:
    metrics = ServingMetrics(CollectorRegistry())
    return OnlineStore(RedisConfig(key_prefix=PREFIX), {"spend": spend}, metrics=metrics), metrics


def merged(metrics: ServingMetrics) -> float:
    return metrics.registry.get_sample_value("feature_entities_merged_total", {"view": "spend"}) or 0.0


def spend_rows(rng: random.Random, users: int, hours: int) -> list[TileRow]:
    """Random tiles of every aggregation kind, float sums and NULL min/max included."""
    rows = []
    for u in range(users):
        for hour in sorted(rng.sample(range(hours), rng.randint(0, 30))):
            amounts = [rng.uniform(-50, 100) for _ in range(rng.randint(0, 3))]
            values = (len(amounts), sum(amounts, 0.0), min(amounts, default=None), max(amounts, default=None))
            start = T0 + hour * HOUR
            rows.append(TileRow(f"u{u}", start, start + HOUR, len(amounts) + 1, values))
    return rows


def check_against_assemble(store: OnlineStore, users: list[str], as_of_ms: int) -> None:
    as_of = from_ms(as_of_ms)
    got = store.get_online_features(FEATURES, [{"user_id": u} for u in users], as_of=as_of)
    for user, values in zip(users, got, strict=True):
        expected = assemble(spend, store.tiles(spend, user), as_of, store.completeness(spend))
        assert values == {f"spend:{name}": value for name, value in expected.items()}, (user, as_of_ms)


# Loading.


def test_every_file_is_a_script_or_an_included_file():
    names = {p.name for p in (files("sinks") / "lua").iterdir() if p.name.endswith(".lua")}
    assert names == {f"{n}.lua" for n in SCRIPTS + INCLUDED}


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_loads_with_its_includes_expanded_and_compiles_under_lua_5_1(name):
    text = load_script(name)
    assert load_script(name) is text  # read once
    assert not [line for line in text.splitlines() if line.startswith(INCLUDE)]
    assert text.count("local function merge(") == (name in WINDOW_SCRIPTS)
    assert LuaRuntime().eval("function(src) return loadstring(src) ~= nil end")(text)


def test_an_included_file_includes_nothing(monkeypatch):
    texts = {"a.lua": f"{INCLUDE}b.lua\nreturn 1\n", "b.lua": f"{INCLUDE}c.lua\n", "c.lua": ""}
    monkeypatch.setattr(sinks.lua_scripts, "_read", texts.__getitem__)
    try:
        with pytest.raises(ValueError, match=r"b\.lua, included by a\.lua"):
            load_script("a")
    finally:
        load_script.cache_clear()


# The call contract in each header, against the script's body and its callers.

_DECLARED = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.)?\]\s+(optional)?", re.MULTILINE)


def header(name: str) -> str:
    """The comment lines a script file starts with, up to an include."""
    lines = []
    for line in load_script(name).splitlines():
        if not line.startswith("--") or line.startswith(INCLUDE):
            break
        lines.append(line)
    return "\n".join(lines)


def contract(name: str) -> dict[str, tuple[int, int, int | None]]:
    """Per KEYS and ARGV, from the header: (fixed count, how many of them optional, tail start)."""
    out = {}
    for kind in ("KEYS", "ARGV"):
        entries = [
            (int(n), bool(tail), bool(opt))
            for k, n, tail, opt in _DECLARED.findall(header(name))
            if k == kind
        ]
        fixed = [n for n, tail, _ in entries if not tail]
        tails = [n for n, tail, _ in entries if tail]
        optional = [n for n, tail, opt in entries if opt]
        assert fixed == list(range(1, len(fixed) + 1)), (name, kind)
        assert optional == fixed[len(fixed) - len(optional) :], (name, kind)  # only the last ones
        assert tails in ([], [len(fixed) + 1]), (name, kind)
        out[kind] = (len(fixed), len(optional), tails[0] if tails else None)
    return out


def code(name: str) -> str:
    return "\n".join(re.sub(r"--.*", "", line) for line in load_script(name).splitlines())


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_header_states_the_contract_the_body_uses_and_why_it_is_atomic(name):
    text = header(name)
    assert text.startswith(f"-- {name}.lua: ")
    assert "\n-- Returns " in text
    assert "\n-- Atomic " in text
    body = code(name)
    layouts = [int(p) for p in re.findall(r"\blayout\((\d+)\)", body)]
    for kind, (fixed, _, tail) in contract(name).items():
        used = {int(n) for n in re.findall(rf"\b{kind}\[(\d+)\]", body)}
        assert used == set(range(1, fixed + 1)), (name, kind)
        # A tail is read by a loop to #KEYS / #ARGV, or by layout(p) from ARGV[p..].
        reads_tail = f"#{kind}" in body or (kind == "ARGV" and bool(layouts))
        assert reads_tail == (tail is not None), (name, kind)
        if kind == "ARGV" and layouts:
            assert layouts == [tail], name


def test_every_caller_passes_what_the_header_asks_for(server):
    clock = Clock(NOW)
    sink = open_sink(spend, clock)
    sink.write(spend_rows(random.Random(1), users=3, hours=7 * 24))
    sink.advance_completeness(T0 + 7 * 24 * HOUR)  # unarmed: one key; refreshes too
    sink.set_epoch("fresh")
    sink.write([TileRow("u0", T0, T0 + HOUR, 9, (1, 1.0, 1.0, 1.0))])  # armed: the epoch key too
    sink.advance_completeness(T0 + 7 * 24 * HOUR)
    sink.mark_pruned({"u1": T0})
    sink.count_late([(0, 5), (1, 7)])
    store, _ = open_store()
    store.get_online_features(FEATURES, [{"user_id": "u0"}, {"user_id": "u1"}], as_of=from_ms(T0 + 5 * HOUR))

    names = {hashlib.sha1(load_script(n).encode()).hexdigest(): n for n in SCRIPTS}
    seen = set()
    layout = [str(v) for v in layout_args(spend)]
    for sha, keys, args in server.evals:
        name = names[sha]
        seen.add(name)
        terms = contract(name)
        for kind, passed in (("KEYS", keys), ("ARGV", args)):
            fixed, optional, tail = terms[kind]
            assert len(passed) >= fixed - optional, (name, kind, passed)
            if tail is None:
                assert len(passed) <= fixed, (name, kind, passed)
        start = terms["ARGV"][2]
        if name in WINDOW_SCRIPTS:
            assert start is not None
            assert args[start - 1 : start - 1 + len(layout)] == layout, name
    assert seen == set(SCRIPTS)
    key_counts = {len(keys) for sha, keys, _ in server.evals if names[sha] == "set_tiles"}
    assert key_counts == {3, 4}  # unarmed, then armed


# Behaviour under Lua, through the real callers.


def test_set_tiles_refuses_a_tile_with_fewer_events_than_stored(server):
    sink = open_sink(user_stats)
    t = NOW - 2 * HOUR
    assert sink.write([TileRow("u1", t, t + HOUR, events=5, values=(4, 1))]).applied == 1
    result = sink.write([TileRow("u1", t, t + HOUR, events=3, values=(3, 0))])
    assert (result.applied, result.refused_stale) == (0, 1)
    assert server.hgetall(entity_key(PREFIX, user_stats, "u1")) == {str(t // 1000).encode(): b"5|4|1"}
    # The same version again is harmless, a newer one replaces it.
    assert sink.write([TileRow("u1", t, t + HOUR, events=5, values=(4, 1))]).applied == 1
    assert sink.write([TileRow("u1", t, t + HOUR, events=6, values=(4, 2))]).applied == 1
    assert server.hgetall(entity_key(PREFIX, user_stats, "u1")) == {str(t // 1000).encode(): b"6|4|2"}


def test_set_tiles_prunes_past_the_horizon_and_mark_pruned_only_raises_the_mark(server):
    sink = open_sink(user_stats)
    old, older = T0 + 24 * HOUR, T0
    sink.write([TileRow("u3", older, older + HOUR, 1, (1, 0)), TileRow("u3", old, old + HOUR, 1, (1, 0))])
    recent = old + 8 * 24 * HOUR  # past the longest window (7 days) plus the margin
    sink.write([TileRow("u3", recent, recent + HOUR, 1, (0, 1))])
    key = entity_key(PREFIX, user_stats, "u3")
    assert server.hgetall(key) == {
        str(recent // 1000).encode(): b"1|0|1",
        b"pruned": str(old // 1000).encode(),
    }
    sink.mark_pruned({"u3": older})  # lower: kept
    assert server.hgetall(key)[PRUNED_FIELD.encode()] == str(old // 1000).encode()
    sink.mark_pruned({"u3": recent - HOUR, "u4": old})  # higher: raised; a new entity gets one
    assert server.hgetall(key)[PRUNED_FIELD.encode()] == str((recent - HOUR) // 1000).encode()
    assert server.hgetall(entity_key(PREFIX, user_stats, "u4")) == {b"pruned": str(old // 1000).encode()}


def test_completeness_only_moves_forward(server):
    sink = open_sink(user_stats)
    sink.advance_completeness(T0 + 2 * HOUR)
    sink.advance_completeness(T0 + HOUR)
    assert sink.completeness_ms() == T0 + 2 * HOUR
    sink.advance_completeness(T0 + 3 * HOUR)
    assert sink.completeness_ms() == T0 + 3 * HOUR


def test_an_armed_sink_marks_a_vanished_epoch_lost_and_an_unarmed_one_marks_nothing(server):
    epoch = epoch_key(PREFIX, user_stats)
    row = TileRow("u1", NOW - 2 * HOUR, NOW - HOUR, 1, (1, 0))
    unarmed = open_sink(user_stats)
    unarmed.write([row])
    unarmed.advance_completeness(NOW - HOUR)
    assert epoch not in server.data

    server.set(epoch, "1 fresh")
    armed = open_sink(user_stats)
    del server.data[epoch]  # a flushed Redis
    armed.write([row])
    assert server.data[epoch] == EPOCH_LOST
    del server.data[epoch]
    armed.advance_completeness(NOW)
    assert server.data[epoch] == EPOCH_LOST
    server.set(epoch, "2 repair")
    armed.write([row])
    assert server.data[epoch] == "2 repair"


def test_count_late_counts_each_row_once_and_keeps_large_offsets_exact(server):
    sink = open_sink(user_stats)
    batch = [(0, 10), (0, 11), (1, 4)]
    assert sink.count_late(batch) == 3
    assert sink.count_late(batch) == 3  # a retry after Redis had applied the first call
    assert sink.count_late([(0, 10), (0, 11), (0, 12), (1, 5)]) == 5  # read again after a restore
    # Lua 5.1 numbers are doubles: past 2**53 offsets compare rounded, the mark keeps their text.
    big = 2**53 + 1
    assert sink.count_late([(2, big), (2, big)]) == 6
    assert server.hgetall(late_counted_key(PREFIX, user_stats))[b"2"] == str(big).encode()
    assert sink.count_late([(2, big + 1)]) == 7
    marks = server.hgetall(late_counted_key(PREFIX, user_stats))
    assert marks == {b"0": b"12", b"1": b"5", b"2": str(big + 1).encode()}
    assert server.get(late_events_key(PREFIX, user_stats)) == b"7"


def test_reads_stored_and_merged_equal_assemble(server):
    sink = open_sink(spend)
    rng = random.Random(7)
    rows = spend_rows(rng, users=12, hours=7 * 24)
    rng.shuffle(rows)  # a hash's fields out of start order: float sums must still add in start order
    sink.write(rows)
    sink.advance_completeness(T0 + 7 * 24 * HOUR)
    store, metrics = open_store()
    users = [f"u{u}" for u in range(13)]  # u12 has no tiles
    check_against_assemble(store, users, NOW)  # the end the sink precomputed: served as stored
    assert merged(metrics) == 0
    with_tiles = len({r.entity for r in rows})
    for as_of in (T0 + 30 * 60_000, T0 + 26 * HOUR, NOW - 5 * HOUR, NOW - 3 * 24 * HOUR):
        before = merged(metrics)
        check_against_assemble(store, users, as_of)  # past ends: merged by merge_windows
        assert merged(metrics) - before == with_tiles


def test_refresh_recomputes_due_entities_so_reads_stay_stored_and_exact(server):
    clock = Clock(NOW)
    sink = open_sink(spend, clock)
    rows = spend_rows(random.Random(11), users=8, hours=7 * 24)
    sink.write(rows)
    users = sorted({r.entity for r in rows})
    store, metrics = open_store()
    refreshed = 0
    for hour in range(0, 9 * 24, 7):  # no new tiles: tiles only leave windows
        clock.ms = NOW + hour * HOUR
        refreshed += sink.advance_completeness(clock.ms - clock.ms % HOUR)
        before = merged(metrics)
        check_against_assemble(store, users, clock.ms)
        assert merged(metrics) == before, hour
    assert refreshed > len(users)
    assert due_key(PREFIX, spend) not in server.data  # every tile has left every window


def test_refresh_drops_a_due_entity_whose_tiles_are_gone(server):
    sink = open_sink(user_stats)
    sink.write([TileRow(u, NOW - 2 * HOUR, NOW - HOUR, 1, (1, 0)) for u in ("kept", "gone")])
    del server.data[entity_key(PREFIX, user_stats, "gone")]
    server.data[due_key(PREFIX, user_stats)] = ZSet({"kept": 0.0, "gone": 0.0})
    assert sink.refresh() == 2
    assert set(server.data[due_key(PREFIX, user_stats)]) == {"kept"}


def test_the_fake_keeps_redis_rules_the_scripts_rely_on(server):
    run = server.register_script
    assert run("return redis.call('GET', KEYS[1])")(keys=["absent"]) is None
    assert run("return redis.call('GET', KEYS[1]) == false")(keys=["absent"]) == 1
    assert run("return {1.9, 'a', nil, 'b'}")() == [1, b"a"]
    with pytest.raises(redis.ResponseError, match="readonly table"):
        run("x = 1")()
    with pytest.raises(redis.ResponseError, match="nonexistent global variable"):
        run("return y")()
    server.set(completeness_key(PREFIX, spend), "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        run("return redis.call('HGET', KEYS[1], 'f')")(keys=[completeness_key(PREFIX, spend)])


# Reads at now: the head.


def test_reads_at_now_add_the_open_tile_stored_or_merged_and_past_reads_stay_tile_aligned(server):
    import time

    now = int(time.time() * 1000)
    hour = now - now % HOUR
    sink = open_sink(spend, Clock(now))
    rng = random.Random(3)
    old = spend_rows(rng, users=6, hours=3 * 24 - 1)
    shift = hour - T0 - 3 * 24 * HOUR  # the random tiles, moved to end an hour before now
    rows = [
        TileRow(r.entity, r.tile_start_ms + shift, r.tile_end_ms + shift, r.events, r.values) for r in old
    ]
    live = [TileRow(f"u{u}", hour, hour + HOUR, 4, (3, 1.25 * u, -2.0, 7.5 + u)) for u in range(4)]
    sink.write(rows + live)
    users = [f"u{u}" for u in range(7)]
    window = server.get(window_key(PREFIX, spend, "u1"))
    assert window is not None and window.endswith(b"#%d=4|3|1.25|-2.0|8.5" % (hour // 1000))

    store, metrics = open_store()

    def expected(user: str, at_ms: int) -> dict:
        tiles = store.tiles(spend, user)
        closed = assemble(spend, tiles, from_ms(at_ms), store.completeness(spend))
        head = next((t for t in tiles if t.start_ms == hour), None)
        if head is None:
            return {name: v.value for name, v in closed.items()}
        raw = window_values(spend, tiles, hour)
        merged_head = add_head(raw, head.values, head_slots(spend))
        withhead = finish(spend, merged_head, at_ms, store.completeness(spend))
        return {name: v.value for name, v in withhead.items()}

    for stored in (True, False):
        if not stored:  # values out of date: merged at read time, head included
            for user in users:
                server.data[window_key(PREFIX, spend, user)] = "0|0"
        before = merged(metrics)
        began = int(time.time() * 1000)
        got = store.get_online_features(FEATURES, [{"user_id": u} for u in users])
        for user, values in zip(users, got, strict=True):
            assert {ref.split(":", 1)[1]: v.value for ref, v in values.items()} == expected(user, began), user
            assert all(began <= to_ms(v.window_end) <= int(time.time() * 1000) for v in values.values())
        # Stored: the entities with a live tile were written just now, so served as stored.
        assert merged(metrics) - before == (
            len({r.entity for r in old} - {r.entity for r in live}) if stored else len(users)
        )
    # A past as_of cannot know its head: tile-aligned, and window_end says so.
    check_against_assemble(store, users, now - 2 * HOUR)
