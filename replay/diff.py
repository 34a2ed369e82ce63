"""What a replay changes: the offline tiles of a range before it against the staged ones, column-wise.

One full outer join on (entity, tile_start) instead of a Python loop over
rows. Doubles compare within rounding (relative and absolute 1e-9), since a
sum's last bits depend on the order it was added in; every other column, and
NULL against a value, compares exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

_TOLERANCE = 1e-9
_BEFORE = "__before"
_AFTER = "__after"


@dataclass(frozen=True)
class TileDiff:
    added: int  # staged tiles the table lacks
    removed: int  # table tiles the staging lacks
    changed: int  # tiles in both whose values differ


def diff_tiles(before: pa.Table, after: pa.Table, keys: tuple[str, str]) -> TileDiff:
    """Compare two tile tables with the same columns, keyed by ``keys`` (join key, tile_start)."""
    values = [name for name in after.column_names if name not in keys]
    left = after.select([*keys, *values]).append_column(_AFTER, pa.repeat(True, after.num_rows))
    right = before.select([*keys, *values]).cast(left.select([*keys, *values]).schema)
    right = right.rename_columns([*keys, *(f"{v}{_BEFORE}" for v in values)])
    right = right.append_column(_BEFORE, pa.repeat(True, before.num_rows))
    joined = left.join(right, keys=list(keys), join_type="full outer")
    in_after = pc.is_valid(joined[_AFTER])
    in_before = pc.is_valid(joined[_BEFORE])
    both = pc.and_(in_after, in_before)
    differs = pa.repeat(False, joined.num_rows)
    for name in values:
        differs = pc.or_(differs, _differs(joined[name], joined[f"{name}{_BEFORE}"]))
    return TileDiff(
        added=_count(pc.invert(in_before)),
        removed=_count(pc.invert(in_after)),
        changed=_count(pc.and_(both, differs)),
    )


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    one_null = pc.xor(pc.is_null(a), pc.is_null(b))
    if pa.types.is_floating(a.type):
        scale = pc.max_element_wise(pc.abs(a), pc.abs(b))
        allowed = pc.max_element_wise(pc.multiply(scale, _TOLERANCE), _TOLERANCE)
        unequal = pc.greater(pc.abs(pc.subtract(a, b)), allowed)
    else:
        unequal = pc.not_equal(a, b)
    return pc.or_(one_null, pc.fill_null(unequal, False))


def _count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
