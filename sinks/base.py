"""What every tile store holds, and the contract of a tile sink."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Value = int | float | None


@dataclass(frozen=True)
class TileRow:
    """The partial aggregates of one entity's events in one tile.

    ``events`` counts every event folded into the tile. Tiles only ever grow as
    late events are folded in (a replay), so ``events`` doubles as the tile's
    version: a row with fewer events is older and never replaces one with more.
    ``values`` follow the view's aggregations, in declaration order.
    """

    entity: str
    tile_start_ms: int
    tile_end_ms: int
    events: int
    values: tuple[Value, ...]


@dataclass(frozen=True)
class WriteResult:
    applied: int
    refused_stale: int


class TileSink(Protocol):
    """open → write(batch)* → flush → close.

    A sink states its delivery guarantee in its docstring and why repeated
    writes of the same tile are harmless.
    """

    def open(self) -> None: ...

    def write(self, rows: Sequence[TileRow]) -> WriteResult: ...

    def advance_completeness(self, tile_end_ms: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
