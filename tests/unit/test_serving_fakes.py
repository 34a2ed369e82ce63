"""An in-memory stand-in for the Redis calls the online store makes.

The merge script's contract is played by ``assembly.window_values``; the real
Lua scripts are held to the same contract against a real Redis in the
integration tests. Like the real sink, ``put`` marks an entity's precomputed
window values out of date; ``precompute`` stores them for one window end;
``prune`` deletes old tiles and keeps the pruned mark. Both keep the open
tiles (a read's head) as the scripts do.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from features.definition import FeatureView
from serving.assembly import Tile, window_values
from sinks.base import TileRow
from sinks.redis_layout import (
    PRUNED_FIELD,
    completeness_key,
    decode_tiles,
    encode_tile,
    entity_key,
    window_key,
)
from sinks.redis_windows import slot_names


class FakePipeline:
    def __init__(self, owner: FakeRedis) -> None:
        self.owner = owner
        self.calls: list[tuple[str, ...]] = []

    def evalsha(self, sha, numkeys, *keys_and_args):
        self.calls.append(("evalsha", (numkeys, *keys_and_args)))
        return self

    def execute(self):
        for _, args in self.calls:
            encoded(args)
        self.owner.round_trips += 1
        if self.owner.fail is not None:
            raise self.owner.fail
        out = []
        for command, args in self.calls:
            assert command == "evalsha", command
            out.append(self.owner.merge(args))
        return out


class FakeRedis:
    def __init__(self, views: Mapping[str, FeatureView], prefix: str) -> None:
        self.views = views
        self.prefix = prefix
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.strings: dict[str, bytes] = {}
        self.round_trips = 0
        self.fail: Exception | None = None

    # What the tests set up.
    def put(self, view: FeatureView, row: TileRow) -> None:
        field, value = encode_tile(row)
        key = entity_key(self.prefix, view, row.entity)
        self.hashes.setdefault(key, {})[field.encode()] = value.encode()
        self.strings[window_key(self.prefix, view, row.entity)] = b"0|0"

    def precompute(self, view: FeatureView, entity: str, at_ms: int) -> int:
        """Store the entity's window values for end ``at_ms`` and the next range, as the sink's script does.

        Each range's end is found by brute force: the first later tile end at
        which any value differs. Returns the end of the second range (epoch ms).
        """
        key = entity_key(self.prefix, view, entity)
        first = self._slots(view, key, at_ms)
        until = self._next_change(view, key, at_ms)
        second = self._slots(view, key, until)
        later = self._next_change(view, key, until)
        parts = [str(at_ms // 1000).encode(), str(until // 1000).encode(), *first]
        parts += [str(later // 1000).encode(), *second]
        opened = [
            b"#%s=%s" % (f, v)
            for f, v in self.hashes.get(key, {}).items()
            if f.isdigit() and int(f) * 1000 >= at_ms
        ]
        self.strings[window_key(self.prefix, view, entity)] = b"|".join(parts) + b"".join(opened)
        return later

    def prune(self, view: FeatureView, entity: str, before_ms: int) -> None:
        """Delete the entity's tiles starting before ``before_ms``; raise the pruned mark like the sink."""
        tiles = self.hashes[entity_key(self.prefix, view, entity)]
        mark = PRUNED_FIELD.encode()
        gone = [int(f) for f in tiles if f != mark and int(f) * 1000 < before_ms]
        for start in gone:
            del tiles[str(start).encode()]
        if gone:
            tiles[mark] = str(max([*gone, int(tiles.get(mark, b"0"))])).encode()

    def set_completeness(self, view: FeatureView, ms: int) -> None:
        self.strings[completeness_key(self.prefix, view)] = str(ms).encode()

    def _next_change(self, view: FeatureView, key: str, end_ms: int) -> int:
        slots = self._slots(view, key, end_ms)
        later = end_ms + view.tile_ms
        horizon = end_ms + int(view.longest_window.total_seconds() * 1000) + 2 * view.tile_ms
        while later < horizon and self._slots(view, key, later) == slots:
            later += view.tile_ms
        return later

    # What the store calls.
    def register_script(self, script):
        class Script:
            sha = "fake-sha"

        return Script()

    def pipeline(self, transaction=False):
        return FakePipeline(self)

    def ping(self):
        if self.fail is not None:
            raise self.fail
        return True

    def get(self, key):
        if self.fail is not None:
            raise self.fail
        return self.strings.get(key)

    def mget(self, keys):
        encoded(keys)
        self.round_trips += 1
        if self.fail is not None:
            raise self.fail
        return [self.strings.get(key) for key in keys]

    def hgetall(self, key):
        return dict(self.hashes.get(key, {}))

    def close(self):
        pass

    def merge(self, call):
        numkeys, *rest = call
        keys, args = rest[:numkeys], rest[numkeys:]
        view = next(v for v in self.views.values() if keys[0] == completeness_key(self.prefix, v))
        end_ms = int(args[0]) * 1000
        out: list = [self.strings.get(keys[0], b"")]
        for key in keys[1:]:
            tiles = self.hashes.get(key, {})
            pruned, head = tiles.get(PRUNED_FIELD.encode(), b""), tiles.get(str(args[0]).encode(), b"")
            out.append([*self._slots(view, key, end_ms), pruned, head])
        return out

    def _slots(self, view: FeatureView, key: str, end_ms: int) -> list[bytes]:
        tiles = [Tile(s, e, v) for s, e, v in decode_tiles(view, self.hashes.get(key, {}))]
        raw = window_values(view, tiles, end_ms)
        return [b"" if raw[name] is None else repr(raw[name]).encode() for name in slot_names(view)]


def encoded(args) -> list[bytes]:
    """Arguments as redis-py sends them: text as strict UTF-8, so what it cannot encode fails here too."""
    return [a if isinstance(a, bytes) else str(a).encode("utf-8") for a in args]


def down() -> Exception:
    return redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
