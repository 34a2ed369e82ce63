"""Loading versioned .avsc files and mapping them to Flink SQL columns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from parity.errors import SchemaError

SCHEMA_ROOT = Path(__file__).resolve().parent
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a subject's schema, as committed under schemas/<name>/v<N>.avsc."""

    name: str
    version: int
    path: Path
    text: str

    @property
    def parsed(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.text)
        return result


def versions(name: str, root: Path = SCHEMA_ROOT) -> list[SchemaVersion]:
    """Every version of a schema, oldest first.

    Raises:
        SchemaError: the folder is missing, empty, or a file is not valid Avro.
    """
    folder = root / name
    if not folder.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise SchemaError(f"no schema folder schemas/{name}/; known schemas: {known}.")
    found: list[SchemaVersion] = []
    for path in folder.iterdir():
        match = _VERSION_FILE.match(path.name)
        if not match:
            continue
        text = path.read_text()
        try:
            fastavro.parse_schema(json.loads(text))
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
        found.append(SchemaVersion(name, int(match.group(1)), path, text))
    if not found:
        raise SchemaError(f"schemas/{name}/ has no v<N>.avsc file.")
    return sorted(found, key=lambda v: v.version)


def latest(name: str, root: Path = SCHEMA_ROOT) -> SchemaVersion:
    """The newest version: the job's reader schema."""
    return versions(name, root)[-1]


_PRIMITIVES = {
    "string": "STRING",
    "boolean": "BOOLEAN",
    "int": "INT",
    "long": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "bytes": "BYTES",
}


def _flink_type(avro_type: Any, where: str) -> str:
    nullable = False
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if len(branches) != 1:
            raise SchemaError(f"{where}: only unions of null and one type map to SQL columns.")
        nullable = len(branches) != len(avro_type)
        avro_type = branches[0]
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        base = avro_type["type"]
        if logical == "timestamp-millis" and base == "long":
            # Flink's Avro format maps timestamp-millis to TIMESTAMP(3) (UTC wall time).
            sql = "TIMESTAMP(3)"
        elif base == "enum":
            sql = "STRING"
        elif base in _PRIMITIVES:
            sql = _PRIMITIVES[base]
        else:
            raise SchemaError(f"{where}: Avro type {base!r} is not supported in feature sources.")
    elif avro_type in _PRIMITIVES:
        sql = _PRIMITIVES[avro_type]
    else:
        raise SchemaError(f"{where}: Avro type {avro_type!r} is not supported in feature sources.")
    return sql if nullable else f"{sql} NOT NULL"


def flink_columns(schema: SchemaVersion) -> list[tuple[str, str]]:
    """(column, Flink SQL type) for every field, in schema order.

    Flink's avro-confluent format requires the table to match the reader
    schema field for field, so every field becomes a column.
    """
    return [
        (f["name"], _flink_type(f["type"], f"schemas/{schema.name}/v{schema.version} field {f['name']!r}"))
        for f in schema.parsed["fields"]
    ]


def field_names(schema: SchemaVersion) -> set[str]:
    return {f["name"] for f in schema.parsed["fields"]}
