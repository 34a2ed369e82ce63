"""An in-memory stand-in for the Redis calls the online store makes.

The merge script's contract is played by ``assembly.window_values``; the real
Lua script is held to the same contract against a real Redis in the
integration tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from features.definition import FeatureView, duration_label
from serving.assembly import Tile, window_values
from sinks.base import TileRow
from sinks.redis_layout import decode_tiles, encode_tile


class FakePipeline:
    def __init__(self, owner: FakeRedis) -> None:
        self.owner = owner
        self.calls: list[tuple[str, ...]] = []

    def evalsha(self, sha, numkeys, *keys_and_args):
        self.calls.append((sha, numkeys, *keys_and_args))
        return self

    def execute(self):
        self.owner.round_trips += 1
        if self.owner.fail is not None:
            raise self.owner.fail
        return [self.owner.merge(call) for call in self.calls]


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
        key = f"{self.prefix}:{view.name}:v{view.version}:e:{row.entity}"
        self.hashes.setdefault(key, {})[field.encode()] = value.encode()

    def set_completeness(self, view: FeatureView, ms: int) -> None:
        self.strings[f"{self.prefix}:{view.name}:v{view.version}:completeness"] = str(ms).encode()

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

    def hgetall(self, key):
        return dict(self.hashes.get(key, {}))

    def close(self):
        pass

    def merge(self, call):
        _, numkeys, *rest = call
        keys, args = rest[:numkeys], rest[numkeys:]
        view = next(v for v in self.views.values() if keys[0].startswith(f"{self.prefix}:{v.name}:v"))
        end_ms = int(args[0]) * 1000
        out: list = [self.strings.get(keys[0], b"")]
        for key in keys[1:]:
            tiles = [Tile(s, e, v) for s, e, v in decode_tiles(view, self.hashes.get(key, {}))]
            raw = window_values(view, tiles, end_ms)
            slots = []
            for window in view.windows:
                for agg in view.aggregations:
                    value = raw[f"{agg.name}_{duration_label(window)}"]
                    slots.append(b"" if value is None else repr(value).encode())
            out.append(slots)
        return out


def down() -> Exception:
    return redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
