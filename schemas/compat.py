"""BACKWARD compatibility of schema versions, checked with Apache Avro's own checker.

Confluent's BACKWARD means a consumer using the new schema can read data written
with the old one: the new version is the *reader*, the old one the *writer*.
Here every version is checked against **every** earlier version (Confluent's
BACKWARD_TRANSITIVE), because the job reads any registered writer version
through the newest reader schema, not only the one just before it.

The check is ``avro.compatibility.ReaderWriterCompatibilityChecker`` from the
Apache ``avro`` package, the Python port of Avro's Java ``SchemaCompatibility``
that Confluent's registry uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from parity.errors import SchemaError
from schemas.avro import SchemaVersion

LEVEL = "BACKWARD_TRANSITIVE"


@dataclass(frozen=True)
class Violation:
    """One way a version breaks BACKWARD compatibility with an earlier one.

    Attributes:
        schema: the folder under schemas/.
        version: the new (reader) version.
        against: the earlier (writer) version it cannot read.
        field: the offending field, dotted for nested records ("" for the record itself).
        rule: Avro's incompatibility type, e.g. ``reader_field_missing_default_value``.
        message: Avro's detail (a field name, the two types, the missing symbols).
        location: where in the reader schema, as a JSON pointer.
        source: ``local`` (the Avro checker) or ``registry`` (the registry's answer).
        subject: the registry subject, when the registry reported it.
    """

    schema: str
    version: int
    against: int | None
    field: str
    rule: str
    message: str
    location: str
    source: str = "local"
    subject: str = ""

    def line(self) -> str:
        where = f"field {self.field!r}" if self.field else "the record"
        against = f" cannot read v{self.against}:" if self.against is not None else ":"
        subject = f" [{self.subject}]" if self.subject else ""
        return (
            f"schemas/{self.schema}/v{self.version}.avsc{subject}{against} {where} breaks {self.rule}"
            f" ({self.message}) at {self.location} [{self.source}]"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse(version: SchemaVersion) -> avro.schema.Schema:
    """The version as an ``avro.schema.Schema``.

    Raises:
        SchemaError: the file is not valid Avro for the Apache parser.
    """
    try:
        return avro.schema.parse(version.text)
    except (avro.errors.AvroException, json.JSONDecodeError) as exc:
        raise SchemaError(f"{version.path}: not a valid Avro schema: {exc}") from exc


def check_pair(reader: SchemaVersion, writer: SchemaVersion) -> list[Violation]:
    """Why ``reader`` cannot read data written with ``writer`` (empty when it can)."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse(reader), parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    rules = sorted(i.value for i in result.incompatibilities) or ["incompatible"]
    message = "; ".join(sorted(str(m) for m in result.messages))
    # The checker reports locations as a set; the deepest one names the field best.
    locations = sorted((loc for loc in result.locations if loc != "/"), key=len, reverse=True) or ["/"]
    violations = []
    for location in locations[:1]:
        violations.append(
            Violation(
                schema=reader.name,
                version=reader.version,
                against=writer.version,
                field=field_at(reader.parsed, location, result.messages),
                rule=", ".join(rules),
                message=message,
                location=location,
            )
        )
    return violations


def check_versions(versions: list[SchemaVersion]) -> list[Violation]:
    """Every version against every earlier one (BACKWARD_TRANSITIVE), oldest first."""
    violations: list[Violation] = []
    for index, reader in enumerate(versions):
        for writer in versions[:index]:
            violations.extend(check_pair(reader, writer))
    return violations


def field_at(schema: dict[str, Any], pointer: str, messages: Any = ()) -> str:
    """The dotted field name a checker location points into, e.g. ``/fields/7/type`` → ``cost``.

    A location that stops at a record (a writer field the reader lacks and needs)
    carries the field's name in the checker's message instead.
    """
    names: list[str] = []
    node: Any = schema
    parts = [p for p in pointer.split("/") if p]
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, dict) and part == "fields" and i + 1 < len(parts):
            fields = node.get("fields", [])
            index = int(parts[i + 1]) if parts[i + 1].isdigit() else -1
            if not 0 <= index < len(fields):
                break
            node = fields[index]
            names.append(str(node["name"]))
            i += 2
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            break
        i += 1
    if not names and messages:
        # e.g. reader_field_missing_default_value reports the field name as its message.
        first = sorted(str(m) for m in messages)[0]
        field_names = {str(f.get("name")) for f in schema.get("fields", [])}
        if first in field_names:
            names.append(first)
    return ".".join(names)
