"""The online store's Redis Lua scripts: one ``.lua`` file each in ``sinks/lua/``, and their loader.

Each file starts with its call contract (KEYS and ARGV) and why it must run
atomically. Scripts share helper code by one rule, small enough for any client
(a JVM one too) to load the same files: a line that is exactly
``-- parity:include <file>`` is replaced by the text of that file, from the
same directory. Included files include nothing, so one pass expands a script.

The files spell out values that Python names too (``EPOCH_LOST``,
``PRUNED_FIELD`` in ``sinks.redis_layout``); tests/unit/test_lua_scripts.py
holds them equal.
"""

from __future__ import annotations

import functools
from importlib.resources import files

INCLUDE = "-- parity:include "


@functools.cache
def load_script(name: str) -> str:
    """The text of script ``name`` (the file ``sinks/lua/<name>.lua``), includes expanded."""
    parts = []
    for line in _read(f"{name}.lua").splitlines(keepends=True):
        if line.startswith(INCLUDE):
            included = line[len(INCLUDE) :].strip()
            text = _read(included)
            if any(inner.startswith(INCLUDE) for inner in text.splitlines()):
                raise ValueError(f"{included}, included by {name}.lua, includes another file")
            parts.append(text)
        else:
            parts.append(line)
    return "".join(parts)


def _read(file: str) -> str:
    return (files("sinks") / "lua" / file).read_text(encoding="utf-8")
