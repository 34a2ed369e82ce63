"""What `status` reports about one service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Info:
    name: str
    address: str  # host:port or URL clients use
    pid: int | None
    log: Path
    up: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.address,
            "pid": self.pid,
            "log": str(self.log),
            "up": self.up,
        }
