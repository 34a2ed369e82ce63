"""Reads artifacts.toml, the one file that pins the stack's versions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.errors import StackError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

ARTIFACTS_FILE = Path(__file__).with_name("artifacts.toml")


@dataclass(frozen=True)
class Coordinate:
    """A Maven coordinate, G:A:V[:type[:classifier]]."""

    group: str
    artifact: str
    version: str
    type: str = "jar"
    classifier: str = ""

    @classmethod
    def parse(cls, text: str) -> Coordinate:
        parts = text.strip().split(":")
        if len(parts) not in (3, 4, 5) or not all(parts):
            raise StackError(
                f"bad Maven coordinate {text!r} in {ARTIFACTS_FILE.name}: expected G:A:V[:type[:classifier]]"
            )
        return cls(*parts)

    @property
    def file_name(self) -> str:
        """The name Maven's dependency:copy gives the downloaded file."""
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{suffix}.{self.type}"

    def __str__(self) -> str:
        tail = (
            [self.type, self.classifier] if self.classifier else ([self.type] if self.type != "jar" else [])
        )
        return ":".join([self.group, self.artifact, self.version, *tail])


@dataclass(frozen=True)
class Artifacts:
    flink_jars: tuple[Coordinate, ...]
    kafka: tuple[Coordinate, ...]
    registry: Coordinate
    registry_java: int  # the oldest Java the registry runs on
    debian: dict[str, str]  # binary -> package
    # Optional services: absent sections leave them empty.
    s3: Coordinate | None = None
    iceberg_rest: tuple[Coordinate, ...] = ()

    @property
    def kafka_version(self) -> str:
        return self.kafka[0].version

    @property
    def packages(self) -> list[str]:
        return sorted(set(self.debian.values()))


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise StackError(f"{path}: missing table [{name}]")
    return value


def _strings(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise StackError(f"{where}: {key} must be a non-empty list of strings")
    return value


def parse(text: str, path: Path = ARTIFACTS_FILE) -> Artifacts:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{path} is not valid TOML: {exc}") from exc
    flink = _section(data, "flink", path)
    kafka = _section(data, "kafka", path)
    registry = _section(data, "registry", path)
    debian = _section(data, "debian", path)
    binaries = debian.get("binaries")
    if not isinstance(binaries, dict) or not all(isinstance(v, str) for v in binaries.values()):
        raise StackError(f"{path} [debian]: binaries must map a binary name to a package name")
    registry_java = registry.get("java", 17)
    if not isinstance(registry_java, int) or isinstance(registry_java, bool):
        raise StackError(f"{path} [registry]: java must be a major version number such as 21")
    artifact = registry.get("artifact")
    if not isinstance(artifact, str):
        raise StackError(f"{path} [registry]: artifact must be a Maven coordinate string")
    s3 = data.get("s3", {}).get("artifact")
    if s3 is not None and not isinstance(s3, str):
        raise StackError(f"{path} [s3]: artifact must be a Maven coordinate string")
    rest = data.get("iceberg-rest")
    return Artifacts(
        s3=Coordinate.parse(s3) if s3 else None,
        iceberg_rest=tuple(Coordinate.parse(c) for c in _strings(rest, "artifacts", f"{path} [iceberg-rest]"))
        if rest is not None
        else (),
        flink_jars=tuple(Coordinate.parse(c) for c in _strings(flink, "jars", f"{path} [flink]")),
        kafka=tuple(Coordinate.parse(c) for c in _strings(kafka, "artifacts", f"{path} [kafka]")),
        registry=Coordinate.parse(artifact),
        registry_java=registry_java,
        debian=dict(binaries),
    )


def load(path: Path = ARTIFACTS_FILE) -> Artifacts:
    return parse(path.read_text(encoding="utf-8"), path)
