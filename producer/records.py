"""Checking records against an Avro schema, and reading and writing them as JSON lines.

In a JSON-lines file each line is one JSON object with one key per schema
field. Values are the JSON form of the Avro type, except timestamps
(``timestamp-millis``), which may be either an ISO-8601 string *with* a
timezone (``2026-01-01T00:00:00.250Z``, ``2026-01-01T01:00:00+01:00``) or an
integer of epoch milliseconds. In memory, and in files this module writes,
timestamps are timezone-aware UTC ``datetime`` values (written as ISO-8601).

A whole file is checked before any of it is returned, so a bad line near the
end never leaves half a file sent. Checking includes encoding every record
once, as the producer will, because some values pass a type check and still
cannot be written (a string holding a lone UTF-16 surrogate, which JSON's
``\ud800`` escape allows and UTF-8 does not).
"""

from __future__ import annotations

import functools
import io
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
# Avro int and long ranges; fastavro writes a larger int anyway, which Java readers do not read back.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# Largest finite 32-bit float; fastavro writes a larger value as infinity without complaint.
_FLOAT_MAX = 3.4028234663852886e38
# Enough failed lines to fix a file in one pass without flooding the terminal.
_MAX_REPORTED = 5
# What fastavro raises for a value it cannot write; UnicodeEncodeError is a ValueError.
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError)


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
        # Its message is a pretty-printed JSON list; errors here are one line.
        reason = " ".join(str(exc).split())
        raise InputError(f"not valid for {schema.name} v{schema.version}: {reason}") from None
    # Encoding into a throwaway buffer is what proves the producer can write it.
    try:
        fastavro.schemaless_writer(io.BytesIO(), _parsed(schema.text), out)
    except _ENCODE_ERRORS as exc:
        where = _unencodable_field(out, schema)
        raise InputError(
            f"{f'field {where!r}: ' if where else ''}cannot be encoded with "
            f"{schema.name} v{schema.version}: {exc}"
        ) from None
    return out


def _unencodable_field(record: dict[str, Any], schema: SchemaVersion) -> str | None:
    """The first field whose value cannot be written on its own; None when each one can.

    fastavro's errors rarely name the field, so each is written alone in a
    one-field record that knows the schema's named types. Only runs on failure.
    """
    raw = schema.parsed
    named: dict[str, Any] = {}
    fastavro.parse_schema(raw, named_schemas=named)
    for field in raw["fields"]:
        probe = {
            "type": "record",
            "name": "_FieldProbe",
            "namespace": raw.get("namespace", ""),
            "fields": [field],
        }
        try:
            fastavro.schemaless_writer(
                io.BytesIO(),
                fastavro.parse_schema(probe, named_schemas=dict(named)),
                {field["name"]: record[field["name"]]},
            )
        except _ENCODE_ERRORS:
            return str(field["name"])
    return None


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
    if avro_type == "string":
        if not isinstance(value, str):
            raise InputError(f"{value!r} is {_json_kind(value)}, expected a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{value!r} cannot be encoded as UTF-8: a lone surrogate at position {exc.start}"
            ) from None
    if avro_type in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{value!r} is {_json_kind(value)}, expected an integer")
        low, high = (_INT_MIN, _INT_MAX) if avro_type == "int" else (_LONG_MIN, _LONG_MAX)
        if not low <= value <= high:
            raise InputError(f"{value} is out of range for an Avro {avro_type} ({low} .. {high})")
    if avro_type in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{value!r} is {_json_kind(value)}, expected a number")
        if not math.isfinite(value):
            raise InputError(f"{value!r} is not a finite number")
        if avro_type == "float" and abs(value) > _FLOAT_MAX:
            raise InputError(f"{value!r} is out of range for a 32-bit float")
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
    """Every line of a JSON-lines file, checked and encoded with ``schema`` before any is returned.

    Blank lines are skipped. Every line is checked, so one error names the
    first few bad lines rather than only the first.

    Args:
        path: The file.
        schema: The schema the events will be written with.

    Returns:
        Avro-ready dicts in file order.

    Raises:
        InputError: the file is unreadable, or a line is not JSON, not valid for the
            schema or cannot be encoded with it; the message names the file, then
            the line number, field and reason of the first few bad lines.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    events: list[dict[str, Any]] = []
    failures: list[str] = []
    bad = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(_check_line(line, schema))
        except InputError as exc:
            bad += 1
            if len(failures) < _MAX_REPORTED:
                failures.append(f"line {number}: {exc}")
    if failures:
        more = f"; and {bad - len(failures)} more bad lines" if bad > len(failures) else ""
        raise InputError(f"{path.name} {'; '.join(failures)}{more}")
    return events


def _check_line(line: str, schema: SchemaVersion) -> dict[str, Any]:
    try:
        decoded = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    return check_record(decoded, schema)


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
