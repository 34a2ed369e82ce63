"""What changed between two versions of a schema, field by field."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from schemas.avro import SchemaVersion

_MISSING = object()


@dataclass(frozen=True)
class Change:
    """One field-level change.

    Attributes:
        kind: ``added``, ``removed``, ``type_changed`` or ``default_changed``.
        field: the top-level field name.
        before: the old type or default (JSON text; "" when not applicable).
        after: the new type or default (JSON text; "" when not applicable).
    """

    kind: str
    field: str
    before: str = ""
    after: str = ""

    def line(self) -> str:
        if self.kind == "added":
            return f"+ {self.field}: {self.after}"
        if self.kind == "removed":
            return f"- {self.field}: {self.before}"
        what = "type" if self.kind == "type_changed" else "default"
        return f"~ {self.field}: {what} {self.before} -> {self.after}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _text(value: Any) -> str:
    return "(none)" if value is _MISSING else json.dumps(value, sort_keys=True)


def _describe(field: dict[str, Any]) -> str:
    text = json.dumps(field["type"], sort_keys=True)
    return f"{text} default {_text(field['default'])}" if "default" in field else text


def diff(old: SchemaVersion, new: SchemaVersion) -> list[Change]:
    """Field changes from ``old`` to ``new``: removed and changed in old order, then added in new order."""
    before = {f["name"]: f for f in old.parsed["fields"]}
    after = {f["name"]: f for f in new.parsed["fields"]}
    changes: list[Change] = []
    for name, field in before.items():
        if name not in after:
            changes.append(Change("removed", name, before=_describe(field)))
            continue
        other = after[name]
        if json.dumps(field["type"], sort_keys=True) != json.dumps(other["type"], sort_keys=True):
            changes.append(Change("type_changed", name, json.dumps(field["type"]), json.dumps(other["type"])))
        old_default, new_default = field.get("default", _MISSING), other.get("default", _MISSING)
        if old_default != new_default:
            changes.append(Change("default_changed", name, _text(old_default), _text(new_default)))
    changes.extend(
        Change("added", name, after=_describe(f)) for name, f in after.items() if name not in before
    )
    return changes
