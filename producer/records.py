"""Checking records against an Avro schema, and reading and writing them as JSON lines.

In a JSON-lines file each line is one JSON object with one key per schema
field. Values are the JSON form of the Avro type, except timestamps
(``timestamp-millis``), which may be either an ISO-8601 string *with* a
timezone (``2026-01-01T00:00:00.250Z``, ``2026-01-01T01:00:00+01:00``) or an
integer of epoch milliseconds. In memory, and in files this module writes,
timestamps are timezone-aware UTC ``datetime`` values (written as ISO-8601).

A whole file is checked before any of it is returned, so a bad line near the
end never leaves half a file sent.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import fastavro.validation

from parity.errors import InputError
from schemas.avro import SchemaVersion

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
# Avro long range; a timestamp outside it cannot be written.
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def check_record(record: object, schema: SchemaVersion) -> dict[str, Any]:
    """One record as Avro-ready values, or the first problem with it.

    Unknown keys are refused (they are usually typos of a field name); missing
    fields take their schema default when there is one.

    Args:
        record: A decoded JSON value.
        schema: The schema the record will be written with.

    Returns:
        A new dict with exactly the schema's fields, timestamps as UTC ``datetime``.

    Raises:
        InputError: what is wrong, as ``field 'x': reason`` (no file or line).
    """
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {_json_kind(record)}")
    fields = schema.parsed["fields"]
    known = {f["name"] for f in fields}
    unknown = sorted(set(record) - known)
    if unknown:
        raise InputError(
            f"unknown field {unknown[0]!r}; the schema's fields are {[f['name'] for f in fields]}"
        )
    out: dict[str, Any] = {}
    for field in fields:
        name = field["name"]
        if name not in record:
            if "default" in field:
                out[name] = field["default"]
                continue
            raise InputError(f"field {name!r}: missing (it is required and has no default)")
        try:
            out[name] = _check_value(record[name], field["type"])
        except InputError as exc:
            raise InputError(f"field {name!r}: {exc}") from None
    # The hand-written checks cover the types feature sources use; fastavro covers the rest.
    try:
        fastavro.validation.validate(out, _parsed(schema.text), raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        raise InputError(f"not valid for {schema.name} v{schema.version}: {exc}") from None
    return out


@functools.lru_cache(maxsize=8)
def _parsed(schema_text: str) -> Any:
    # Parsing costs far more than validating one record, and a file has one schema.
    return fastavro.parse_schema(json.loads(schema_text))


def _check_value(value: Any, avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        if value is None and "null" in avro_type:
            return None
        branches = [b for b in avro_type if b != "null"]
        if len(branches) == 1:
            return _check_value(value, branches[0])
        return value  # a wider union: left to fastavro
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis" and avro_type.get("type") == "long":
            return parse_timestamp(value)
        if avro_type.get("type") == "enum":
            symbols = avro_type["symbols"]
            if value not in symbols:
                raise InputError(f"{value!r} is not one of {symbols}")
            return value
        return _check_value(value, avro_type["type"]) if isinstance(avro_type["type"], str) else value
    if avro_type == "string" and not isinstance(value, str):
        raise InputError(f"{value!r} is {_json_kind(value)}, expected a string")
    if avro_type in ("int", "long") and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{value!r} is {_json_kind(value)}, expected an integer")
    if avro_type in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{value!r} is {_json_kind(value)}, expected a number")
        if not math.isfinite(value):
            raise InputError(f"{value!r} is not a finite number")
        return float(value)
    if avro_type == "boolean" and not isinstance(value, bool):
        raise InputError(f"{value!r} is {_json_kind(value)}, expected true or false")
    return value


def parse_timestamp(value: Any) -> datetime:
    """A timestamp (ISO-8601 with timezone, epoch millis, or aware ``datetime``) as a UTC ``datetime``.

    Raises:
        InputError: not one of those, no timezone, or out of range.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InputError(f"{value.isoformat()} has no timezone")
        return value.astimezone(timezone.utc)
    if isinstance(value, int) and not isinstance(value, bool):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise InputError(f"{value} is outside the range of epoch milliseconds")
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise InputError(f"{value} epoch milliseconds is outside the supported dates") from None
    if not isinstance(value, str):
        raise InputError(f"{value!r} is {_json_kind(value)}, expected an ISO-8601 string or epoch millis")
    # Python 3.10's fromisoformat does not accept the 'Z' suffix.
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InputError(f"{value!r} has no timezone; add 'Z' or an offset such as '+00:00'")
    return parsed.astimezone(timezone.utc)


def _json_kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return kinds.get(type(value), type(value).__name__)


def read_jsonl(path: Path, schema: SchemaVersion) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, checked against ``schema`` before any is returned.

    Blank lines are skipped.

    Args:
        path: The file.
        schema: The schema the events will be written with.

    Returns:
        Avro-ready dicts in file order.

    Raises:
        InputError: the file is unreadable, or a line is not JSON or not valid for the
            schema; the message names the file, the line number and the field.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            decoded = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path.name} line {number}: not valid JSON: {exc.msg} at column {exc.colno}"
            ) from None
        try:
            events.append(check_record(decoded, schema))
        except InputError as exc:
            raise InputError(f"{path.name} line {number}: {exc}") from None
    return events


def write_jsonl(events: Iterable[dict[str, Any]], path: Path) -> int:
    """Write events as JSON lines (timestamps as ISO-8601 UTC strings), readable by ``read_jsonl``.

    Returns:
        The number of lines written.

    Raises:
        InputError: the file cannot be written.
    """
    count = 0
    try:
        with path.open("w", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps(event, default=_json_default, separators=(",", ":")) + "\n")
                count += 1
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from exc
    return count


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
